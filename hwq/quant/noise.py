# SPDX-License-Identifier: BSD-3-Clause
"""Noise tempering (Wang et al., "Error-aware Quantization through Noise Tempering", arXiv 2212.05603) as the
``noise`` family (``--method noise``).

What the paper's abstract states: instead of the straight-through estimator alone, training approximates the
quantizer by "exponentially decaying quantization-error-aware noise together with a learnable scale of task loss
gradient", per weight and activation quantizer. Its equations are not available to us, so hwq chooses (docs/methods.md):

* forward in training, on the integer grid (``y = x / scale``): ``round(y) + std(p) * xi * e``, with ``e = round(y) -
  y`` the quantization error, ``xi ~ N(0, 1)`` per element and ``std(p) = noise_std * exp(-noise_decay * p)`` at the
  training's progress ``p`` (``hwq_on_step``). So the noise is the quantization error itself, scaled by a random
  factor ``1 + std(p) xi``, and at ``std = 0`` it is the deployed quantizer;
* backward: a straight-through gradient times a learned scale ``g = exp(theta)`` per quantizer (``theta`` starts at
  0, the plain straight-through estimator): the output is ``sg(q - g y) + g y``, so ``g`` gets the task loss's
  gradient ``sum(dL/dq * y)`` while the forward value stays ``q``;
* eval: ``round(y)``, the ``uniform`` quantizer, so a trained run exports as ``--quant uniform`` does.
"""

from __future__ import annotations

import math

import brevitas
import torch
from brevitas.nn import QuantIdentity
from torch import nn

from hwq.options import NOISE_OPTIONS
from hwq.quant.brevitas_map import to_injector
from hwq.quant.family import UniformFamily, register_family


def noise_std_at(progress: float, noise_std: float, noise_decay: float) -> float:
    """The noise std relative to the quantization error at ``progress`` (0..1): ``std * exp(-decay * progress)``."""
    return noise_std * math.exp(-noise_decay * progress)


class NoisyRound(brevitas.jit.ScriptModule):
    """Brevitas ``float_to_int_impl``: round to the grid, plus decaying error-aware noise and a learned gradient scale
    in training; a plain round in eval."""

    def __init__(self, noise_std: float, noise_decay: float, noise_grad_scale: bool,
                 noise_grad_scale_lr_scale: float) -> None:
        super().__init__()
        self.initial_std = float(noise_std)
        self.decay = float(noise_decay)
        #: ``g = exp(log_grad_scale)``: positive, and 1 (plain straight-through) at the start.
        self.log_grad_scale = nn.Parameter(torch.zeros(()), requires_grad=bool(noise_grad_scale))
        self.log_grad_scale.hwq_lr_scale = float(noise_grad_scale_lr_scale)
        #: The training's progress at the current step; a buffer so that a resumed run continues the schedule.
        self.register_buffer("progress", torch.zeros(()))

    def hwq_on_step(self, progress: float) -> None:
        self.progress.fill_(float(progress))

    def noise_std(self) -> float:
        return noise_std_at(float(self.progress), self.initial_std, self.decay)

    def grad_scale(self) -> torch.Tensor:
        return self.log_grad_scale.exp()

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        rounded = torch.round(y)
        if not self.training:
            return y + (rounded - y).detach()
        error = (rounded - y).detach()
        std = self.noise_std()
        noisy = rounded + std * torch.randn_like(y) * error if std > 0 else rounded
        g = self.grad_scale()
        return (noisy - g * y).detach() + g * y


def _noise_settings(family: UniformFamily) -> dict:
    return {name: family._option(name) for name in
            ("noise_std", "noise_decay", "noise_grad_scale", "noise_grad_scale_lr_scale")}


@register_family
class NoiseFamily(UniformFamily):
    """``uniform``'s quantizers with noise tempering in every weight and activation quantizer at 2..8 bits; at 1 bit
    the binary (sign, straight-through) quantizer of ``uniform``: sign has no rounding error to temper."""

    name = "noise"
    declared_options = NOISE_OPTIONS

    def weight_quant(self, bits: int, per_channel: bool = True):
        if bits == 1:
            return super().weight_quant(bits, per_channel)
        return to_injector(self.weight_spec(bits)).let(float_to_int_impl=NoisyRound, **_noise_settings(self))

    def act(self, bits: int, channels: int) -> nn.Module:
        if bits == 1:
            return super().act(bits, channels)
        injector = to_injector(self.act_spec(bits)).let(float_to_int_impl=NoisyRound, **_noise_settings(self))
        return QuantIdentity(act_quant=injector)
