# SPDX-License-Identifier: BSD-3-Clause
"""Gradient estimators of the sign that replace Brevitas' straight-through one, and the weight transforms before it.

IR-Net's error decay estimator (EDE, Qin et al. CVPR 2020), which DIR-Net (IJCV 2022) keeps as its
distribution-sensitive two-stage estimator (DTE): the forward pass is ``sign(x)``; the backward pass is the gradient
of ``k * tanh(t * x)``, i.e. ``k * t * (1 - tanh(t * x)^2)``, with

* ``t = t_min * 10^(p * log10(t_max / t_min))``, ``p`` the training progress (0..1), and
* ``k = max(1 / t, 1)``.

Stage one (``t < 1``) keeps ``k * t = 1``: the gradient is close to the identity's, every weight can still move;
stage two (``t >= 1``, ``k = 1``) sharpens ``k * tanh(t x)`` towards the sign itself, so the gradient is accurate near
0 and vanishes away from it.

>>> ede_schedule(0.0, 0.1, 10.0), ede_schedule(1.0, 0.1, 10.0)
((0.1, 10.0), (10.0, 1.0))
"""

from __future__ import annotations

import math

import torch
from brevitas.core.quant import BinaryQuant
from brevitas.function.ops import binary_sign

#: IR-Net's paper: t from 10^-1 to 10^1 (its CIFAR ResNet-20 code starts at 10^-3).
EDE_T_MIN, EDE_T_MAX = 0.1, 10.0


def ede_schedule(progress: float, t_min: float = EDE_T_MIN, t_max: float = EDE_T_MAX) -> tuple[float, float]:
    """``(t, k)`` of the estimator at training ``progress`` (clamped to 0..1)."""
    p = min(max(float(progress), 0.0), 1.0)
    t = t_min * 10.0 ** (p * math.log10(t_max / t_min))
    return t, max(1.0 / t, 1.0)


class EdeSign(torch.autograd.Function):
    """``sign(x)`` forward (Brevitas' ``binary_sign``: 0 -> +1), ``k t (1 - tanh^2(t x))`` times the gradient back."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, t: float, k: float) -> torch.Tensor:
        ctx.save_for_backward(x)
        ctx.t, ctx.k = t, k
        return binary_sign(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (x,) = ctx.saved_tensors
        return grad * ctx.k * ctx.t * (1.0 - torch.tanh(ctx.t * x).square()), None, None


def ede_sign(x: torch.Tensor, t: float, k: float) -> torch.Tensor:
    """``sign(x)`` with the EDE gradient at ``(t, k)`` (:func:`ede_schedule`)."""
    return EdeSign.apply(x, t, k)


class EdeBinaryQuant(BinaryQuant):
    """Brevitas' binary quantizer (``sign(x) * scale``) with the EDE gradient instead of the straight-through one.

    A drop-in ``tensor_quant`` for weight and activation quantizers (``Injector.let(tensor_quant=EdeBinaryQuant,
    ede_t_min=..., ede_t_max=...)``): the forward values, and therefore the export, are those of ``BinaryQuant``.
    ``hwq_on_step(progress)`` (called by the train loop before every step) moves ``t`` and ``k`` along the schedule.
    """

    def __init__(self, scaling_impl, signed: bool = True, quant_delay_steps: int = 0,
                 ede_t_min: float = EDE_T_MIN, ede_t_max: float = EDE_T_MAX) -> None:
        super().__init__(scaling_impl, signed, quant_delay_steps)
        self.t_min, self.t_max = float(ede_t_min), float(ede_t_max)
        self.t, self.k = ede_schedule(0.0, self.t_min, self.t_max)

    def hwq_on_step(self, progress: float) -> None:
        self.t, self.k = ede_schedule(progress, self.t_min, self.t_max)

    def forward(self, x: torch.Tensor):
        scale = self.scaling_impl(x)
        y = ede_sign(x, self.t, self.k) * scale
        y = self.delay_wrapper(x, y)
        return y, scale, self.zero_point(), self.bit_width()


def balance_standardize(w: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """IR-Net/DIR-Net's balanced, standardized weights: per output channel (dim 0), ``(w - mean) / std``.

    The balance (mean 0) makes ``sign`` split each channel's weights half and half (most information in the binary
    weights); the standardization (unbiased std 1, as the reference code's ``Tensor.std``) fixes their spread, so the
    estimator's ``t`` means the same in every layer. Both are differentiable, so the gradient flows through them.

    >>> w = balance_standardize(torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 4.0]]))
    >>> w.mean(1).abs().max() < 1e-6, torch.allclose(w.std(1), torch.ones(2))
    (tensor(True), True)
    """
    flat = w.reshape(w.shape[0], -1)
    centred = flat - flat.mean(1, keepdim=True)
    std = centred.std(1, keepdim=True) if flat.shape[1] > 1 else torch.ones_like(centred[:, :1])
    # max, not clamp_min: ONNX's Clip with an empty bound is not folded into the weight constant at export.
    return (centred / torch.maximum(std, std.new_tensor(eps))).reshape(w.shape)
