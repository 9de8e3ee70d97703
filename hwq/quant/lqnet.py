# SPDX-License-Identifier: BSD-3-Clause
"""LQ-Nets (Zhang et al., "LQ-Nets: Learned Quantization for Highly Accurate and Compact Deep Neural Networks",
ECCV 2018) as the ``lqnet`` family (``--method lqnet``).

A K-bit LQ quantizer has a basis ``v`` (K numbers) and the ``2^K`` levels ``v^T e`` over all codes ``e``: ``{-1, 1}^K``
for weights, ``{0, 1}^K`` for activations. A value is quantized to its nearest level. The basis is no parameter: after
every training step the quantization error minimization (QEM) updates it from the current weights (or the last
batch of activations): codes by nearest level, then the least-squares basis for those codes, kept as a moving
average (``v <- 0.9 v + 0.1 v_ls``). Gradients pass straight through (weights: identity; activations: inside
``[0, max level]``, the paper's ``min(relu(x), max)``).

The one thing hwq adds, so that a trained network deploys exactly on integer hardware: the forward pass uses the
learned basis rounded to integer multiples ``m_k`` of one step ``s`` (:func:`grid_basis`), with ``sum m`` at most
``2^(K + lqnet_extra_bits) - 1``. The levels are then ``s`` times integers: weights export as an ordinary QONNX
``Quant`` node (per-channel scale ``s``), activations as a ``MultiThreshold`` whose thresholds repeat where a level
is more than one step above the previous one (``hwq.export.multithreshold``). QEM itself runs on the float basis.

>>> basis = torch.tensor([[0.5, 1.0]])
>>> levels(basis, code_matrix(2, signed=True)).tolist()
[[-1.5, -0.5, 0.5, 1.5]]
>>> quantize(torch.tensor([[0.9, -2.0, 0.1]]), basis, code_matrix(2, signed=True)).tolist()
[[0.5, -1.5, 0.5]]
"""

from __future__ import annotations

import contextlib
import math
from typing import Iterator

import torch
from brevitas.inject import ExtendedInjector
from brevitas.nn import QuantConv2d, QuantLinear
from brevitas.proxy import WeightQuantProxyFromInjector
from torch import nn

from hwq.options import LQNET_OPTIONS
from hwq.quant.family import UniformFamily, register_family

BITS = (1, 2, 3, 4)
#: The reference code's moving-average factor of the basis and ridge of the least-squares solve.
DEFAULT_DECAY = 0.9
RIDGE = 1e-4
#: The paper's basis init is ``NORM_PPF_0_75 * sigma * 2^j`` (scaled by ``1 / 2^(K-1)`` for weights, by
#: ``2 / (2^K - 1)`` for activations): Phi^-1(0.75), the median of |N(0, sigma^2)| / sigma.
NORM_PPF_0_75 = 0.6745


# --- the quantizer, on (P, N) tensors: P bases (output channels, or 1) of N values each -------------------------
def code_matrix(bits: int, signed: bool) -> torch.Tensor:
    """All ``2^K`` codes ``(2^K, K)``, row ``i`` the bits of ``i`` (least significant first); ``{-1, 1}`` if signed."""
    index = torch.arange(2**bits).unsqueeze(1)
    binary = ((index >> torch.arange(bits)) & 1).float()
    return 2 * binary - 1 if signed else binary


def levels(basis: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
    """The sorted levels ``(P, 2^K)`` of each basis ``(P, K)``."""
    return torch.sort(basis @ codes.T, dim=1).values


def nearest_codes(x: torch.Tensor, basis: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
    """The code ``(P, N, K)`` of each value's nearest level (a value at a midpoint takes the upper level)."""
    values, order = torch.sort(basis @ codes.T, dim=1)
    midpoints = (values[:, 1:] + values[:, :-1]) / 2
    index = torch.searchsorted(midpoints.contiguous(), x.contiguous(), right=True)  # count of midpoints <= x
    level_codes = codes[order]  # (P, 2^K, K): the code of each sorted level
    return torch.gather(level_codes, 1, index.unsqueeze(-1).expand(-1, -1, codes.shape[1]))


def quantize(x: torch.Tensor, basis: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
    """Each value of ``x`` ``(P, N)`` replaced by its nearest level of its row's basis."""
    return (nearest_codes(x, basis, codes) * basis.unsqueeze(1)).sum(-1)


def quantization_error(x: torch.Tensor, basis: torch.Tensor, codes: torch.Tensor) -> float:
    """``||x - Q(x)||^2``, the quantity QEM minimizes."""
    return float((x - quantize(x, basis, codes)).square().sum())


def qem_step(x: torch.Tensor, basis: torch.Tensor, codes: torch.Tensor, decay: float = DEFAULT_DECAY,
             ridge: float = RIDGE) -> torch.Tensor:
    """One QEM iteration: codes by nearest level, then ``v = (B^T B + r I)^-1 (B^T x + r v)``, averaged in.

    The ridge ``r`` (the reference code's, for weights; here for activations too, whose ``B^T B`` is singular when
    some bit is never set) keeps the solve defined and pulls towards the current basis, so every iteration, moving
    average included (the error is convex in ``v`` for fixed codes), does not increase the error.
    """
    b = nearest_codes(x, basis, codes)                                    # (P, N, K)
    eye = torch.eye(basis.shape[1], dtype=x.dtype)
    gram = b.transpose(1, 2) @ b + ridge * eye                            # (P, K, K)
    rhs = (b * x.unsqueeze(-1)).sum(1) + ridge * basis                    # (P, K)
    solved = torch.linalg.solve(gram, rhs.unsqueeze(-1)).squeeze(-1)
    return decay * basis + (1 - decay) * solved


def grid_basis(basis: torch.Tensor, grid_max: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The deployed basis: a step ``s`` ``(P,)`` and integer multiples ``m >= 1`` ``(P, K)`` with ``sum m <= grid_max``.

    ``s = sum |v| / grid_max``, ``m = round(|v| / s)`` (at least 1), the largest ``m`` lowered until the sum fits, then
    ``m`` divided by its greatest common divisor (``s`` multiplied by it), so a basis ``s (1, 2, 4)`` stays exactly
    that and a 1-bit basis is ``m = 1``. The sign of a weight basis element does not change its levels (the codes
    are symmetric), so ``|v|`` is used; an activation basis is kept non-negative by the caller.

    >>> s, m = grid_basis(torch.tensor([[0.3, 0.6]]), 3)
    >>> [round(v, 4) for v in s.tolist()], m.tolist()
    ([0.3], [[1, 2]])
    """
    magnitude = basis.abs()
    step = (magnitude.sum(1) / grid_max).clamp_min(torch.finfo(basis.dtype).tiny)
    multiples = torch.round(magnitude / step.unsqueeze(1)).clamp_min(1).long()
    # Rounding and the floor of 1 overshoot the sum by at most K: lower the largest multiple of the rows still
    # over, all rows at once (a loop over rows cost a Python iteration per output channel per forward).
    rows = torch.arange(multiples.shape[0])
    while True:
        over = multiples.sum(1) > grid_max
        if not bool(over.any()):
            break
        multiples[rows[over], torch.argmax(multiples[over], dim=1)] -= 1
    divisor = multiples[:, 0].clone()
    for k in range(1, multiples.shape[1]):
        divisor = torch.gcd(divisor, multiples[:, k])
    return step * divisor.to(step.dtype), multiples // divisor.unsqueeze(1)


class _StraightThrough(torch.autograd.Function):
    """``quantized`` forward (exactly: no ``x + (q - x).detach()`` rounding), ``grad * mask`` backward."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, quantized: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        ctx.save_for_backward(mask)
        return quantized

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (mask,) = ctx.saved_tensors
        return (grad if mask is None else grad * mask), None, None


# --- weights: a Brevitas tensor quantizer, so the layer exports as an ordinary QONNX Quant node -------------------
class LQWeightTensorQuant(nn.Module):
    """The LQ weight quantizer of one layer (Brevitas' ``tensor_quant``): ``(w_q, s, 0, bit width)``.

    One basis per output channel (``lqnet_per_channel``, the paper's) or one for the layer. ``w_q = s m^T e``; the
    exported ``Quant`` node rounds ``w_q / s`` (an integer) back to ``w_q`` exactly. Its bit width is the smallest
    narrow signed grid holding ``sum m`` (``K + lqnet_extra_bits + 1``).
    """

    def __init__(self, lqnet_bits: int, lqnet_extra_bits: int, lqnet_per_channel: bool, lqnet_decay: float,
                 tracked_parameter_list) -> None:
        super().__init__()
        weight = tracked_parameter_list[0]
        self.bits, self.decay, self.per_channel = int(lqnet_bits), float(lqnet_decay), bool(lqnet_per_channel)
        self.grid_max = 2 ** (self.bits + int(lqnet_extra_bits)) - 1
        self.grid_bit_width = self.bits + int(lqnet_extra_bits) + 1
        #: The weight QEM reads (the layer's latent weight), found again after every step.
        self.tracked = [weight]
        rows = weight.shape[0] if self.per_channel else 1
        # The paper's init (sigma the init std of the weights): NORM_PPF_0_75 * sigma / 2^(K-1) * 2^j.
        base = NORM_PPF_0_75 * float(weight.detach().std()) / 2 ** (self.bits - 1)
        self.register_buffer("basis", (base * 2.0 ** torch.arange(self.bits)).repeat(rows, 1))
        self.register_buffer("codes", code_matrix(self.bits, signed=True), persistent=False)

    def _rows(self, w: torch.Tensor) -> torch.Tensor:
        return w.reshape(w.shape[0] if self.per_channel else 1, -1)

    def deployed(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(s, m)`` of :func:`grid_basis`."""
        return grid_basis(self.basis, self.grid_max)

    def forward(self, w: torch.Tensor):
        step, multiples = self.deployed()
        with torch.no_grad():
            used = step.to(w.dtype).unsqueeze(1) * multiples.to(w.dtype)  # the deployed basis s m
            integers = (nearest_codes(self._rows(w), used, self.codes.to(w.dtype))
                        * multiples.unsqueeze(1).to(w.dtype)).sum(-1)
            rows = step.shape[0]
            scale = step.to(w.dtype).reshape(rows, *([1] * (w.dim() - 1)))
            quantized = integers.reshape(w.shape) * scale
        out = _StraightThrough.apply(w, quantized, None)
        return out, scale, torch.zeros((), dtype=w.dtype), torch.tensor(float(self.grid_bit_width))

    @contextlib.contextmanager
    def hwq_export_context(self) -> Iterator[None]:
        """For the export: the latent weight holds ``w_q`` itself, which the ``Quant`` node Brevitas writes (it
        rounds its input with the scale ``s``) maps to ``w_q`` exactly; the latent weight is restored after."""
        weight = self.tracked[0]
        saved = weight.detach().clone()
        with torch.no_grad():
            weight.copy_(self.forward(weight)[0])
        try:
            yield
        finally:
            with torch.no_grad():
                weight.copy_(saved)

    @torch.no_grad()
    def hwq_after_step(self) -> None:
        w = self.tracked[0].detach()
        self.basis.copy_(qem_step(self._rows(w), self.basis, self.codes.to(w.dtype), self.decay))


class LQWeight(ExtendedInjector):
    """The injector of :class:`LQWeightTensorQuant` (the Brevitas weight proxy reads ``signed``, ``narrow_range``)."""

    proxy_class = WeightQuantProxyFromInjector
    tensor_quant = LQWeightTensorQuant
    signed = True
    narrow_range = True
    lqnet_bits = 2
    lqnet_extra_bits = 2
    lqnet_per_channel = True
    lqnet_decay = DEFAULT_DECAY


# --- activations: a multi-threshold function with learned levels --------------------------------------------------
class LQAct(nn.Module):
    """The LQ activation quantizer: ``{0, 1}`` codes, one basis per layer (the paper's), levels ``s m^T e``.

    Forward: ``s * #{j : x >= t_j}`` over the thresholds of :meth:`thresholds` (the nearest level of ``relu(x)``);
    backward: the gradient where ``0 <= x <= max level``. In training the input (``relu(x)``) is kept for QEM,
    which ``hwq_after_step`` runs once per step.

    >>> act = LQAct(bits=2, extra_bits=0)
    >>> [round(v, 4) for v in act.thresholds()[0].tolist()], act.count_bits()
    ([0.2248, 0.6745, 1.1242], 2)
    """

    def __init__(self, bits: int, extra_bits: int = 2, decay: float = DEFAULT_DECAY) -> None:
        super().__init__()
        self.bits, self.decay = int(bits), float(decay)
        self.grid_max = 2 ** (self.bits + int(extra_bits)) - 1
        init = NORM_PPF_0_75 * 2 / (2**self.bits - 1) * 2.0 ** torch.arange(self.bits)  # the paper's init
        self.register_buffer("basis", init.unsqueeze(0))
        self.register_buffer("codes", code_matrix(self.bits, signed=False), persistent=False)
        self._qem_input: torch.Tensor | None = None

    def deployed(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(s, m)`` of :func:`grid_basis` (one row)."""
        return grid_basis(self.basis, self.grid_max)

    def _form(self) -> tuple[float, list[int], torch.Tensor]:
        """The step, the distinct integer levels (ascending, 0 first) and the ``(1, n)`` thresholds, from one
        :meth:`deployed`."""
        step, multiples = self.deployed()
        integer = sorted({int(v) for v in (self.codes @ multiples[0].float()).round().long().tolist()})
        # A gap of d steps between two levels is d equal thresholds at their midpoint: the count jumps by d there.
        points = [(low + high) / 2 for low, high in zip(integer, integer[1:]) for _ in range(high - low)]
        return float(step[0]), integer, (torch.tensor(points, dtype=torch.float32) * step[0].float()).unsqueeze(0)

    @property
    def step(self) -> float:
        """The integer grid's step: the outputs are ``step`` times integers (what ``hwq.models.scores`` reads)."""
        return self._form()[0]

    def integer_levels(self) -> list[int]:
        """The distinct levels divided by the step, ascending (0 first)."""
        return self._form()[1]

    def count_bits(self) -> int:
        """Bits of the largest threshold count (the top level over the step), at least 2: FINN's MVAU generates no
        layer with a 0/1 input ("True binary (non-bipolar) inputs not yet supported"), so a 1-bit count is UINT2."""
        return max(2, math.ceil(math.log2(self.integer_levels()[-1] + 1)))

    def thresholds(self) -> torch.Tensor:
        """``(1, n)`` non-decreasing thresholds, ``n`` the top level over the step."""
        return self._form()[2]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        step, integer, thresholds = self._form()
        thresholds = thresholds.to(x.device, x.dtype)[0]
        # #{j : x >= t_j}, as QONNX's MultiThreshold counts (searchsorted: one pass instead of one per threshold)
        count = torch.searchsorted(thresholds, x.detach().reshape(-1).contiguous(), right=True).reshape(x.shape)
        quantized = count.to(x.dtype) * torch.tensor(step, dtype=x.dtype)
        if self.training:
            self._qem_input = torch.relu(x.detach()).reshape(1, -1)
        mask = ((x >= 0) & (x <= integer[-1] * step)).to(x.dtype) if x.requires_grad else None
        return _StraightThrough.apply(x, quantized, mask)

    def hwq_threshold_form(self) -> tuple[torch.Tensor, float, int]:
        """``(thresholds, step, count bits)``: what ``hwq.export.multithreshold`` writes as MultiThreshold + Mul."""
        return self.thresholds(), self.step, self.count_bits()

    @torch.no_grad()
    def hwq_after_step(self) -> None:
        if self._qem_input is None:
            return
        x, self._qem_input = self._qem_input, None
        self.basis.copy_(qem_step(x, self.basis, self.codes.to(x.dtype), self.decay).clamp_min(0))

    def extra_repr(self) -> str:
        return f"bits={self.bits}, basis={[round(v, 4) for v in self.basis[0].tolist()]}"


# --- the family ----------------------------------------------------------------------------------------------------
@register_family
class LQNetFamily(UniformFamily):
    """``--quant lqnet``: LQ weights (per output channel basis) and LQ activations (per layer basis), 1..4 bits.

    The classifier keeps one basis for the layer (``lqnet_classifier_per_channel`` false), so its scale is one
    number that FINN absorbs into its label selection.
    """

    name = "lqnet"
    weight_bits = BITS
    act_bits = BITS
    declared_options = LQNET_OPTIONS

    def weight_quant(self, bits: int, per_channel: bool | None = None):
        if per_channel is None:
            per_channel = self._option("lqnet_per_channel")
        return LQWeight.let(lqnet_bits=bits, lqnet_extra_bits=self._option("lqnet_extra_bits"),
                            lqnet_per_channel=per_channel, lqnet_decay=self._option("lqnet_decay"))

    def linear(self, in_features: int, out_features: int, bits: int) -> nn.Module:
        return QuantLinear(in_features, out_features, bias=False, weight_quant=self.weight_quant(bits))

    def classifier(self, in_features: int, num_classes: int, bits: int) -> nn.Module:
        per_channel = self._option("lqnet_classifier_per_channel") and self._option("lqnet_per_channel")
        return QuantLinear(in_features, num_classes, bias=False, weight_quant=self.weight_quant(bits, per_channel))

    def conv2d(self, in_channels: int, out_channels: int, kernel_size: int, bits: int,
               stride: int = 1, padding: int = 0, groups: int = 1) -> nn.Module:
        return QuantConv2d(in_channels, out_channels, kernel_size, stride=stride, padding=padding, groups=groups,
                           bias=False, weight_quant=self.weight_quant(bits))

    def act(self, bits: int, channels: int) -> nn.Module:
        return LQAct(bits, extra_bits=self._option("lqnet_extra_bits"), decay=self._option("lqnet_decay"))
