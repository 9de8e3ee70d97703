# SPDX-License-Identifier: BSD-3-Clause
"""N2UQ (Liu et al., "Nonuniform-to-Uniform Quantization", CVPR 2022): learned input thresholds, uniform outputs.

An N2UQ activation with ``b`` bits has ``n = 2^b - 1`` segments with positive learned widths (gaps) ``a_1..a_n``
starting at a learned ``start``. Their edges are ``e_0 = start`` and ``e_k = start + a_1 + ... + a_k``.

* Forward (the paper's code): the thresholds are the segment midpoints ``t_k = e_{k-1} + a_k / 2`` and the output
  is ``step * #{k : x >= t_k}`` with ``step = out_range / n``: uniformly spaced levels ``0, step, ..., n * step``.
* Backward (generalized straight-through estimator): the derivative of the piecewise-linear surrogate ``s(x)``
  through the points ``(e_k, k * step)``, flat outside ``[e_0, e_n]``. Its slope on segment ``k`` is
  ``step / a_k``. Since ``s(t_k) = (k - 1/2) * step``, the forward output is exactly ``step * round(s(x) / step)``.
  The input and the threshold parameters (``start`` and the gaps) all receive gradients through ``s``.

A FINN/QONNX ``MultiThreshold`` node computes the forward exactly (``hwq.export.multithreshold``).

>>> act = N2UQAct(bits=2)
>>> [round(t, 4) for t in act.thresholds()[0].tolist()]
[0.3333, 1.0, 1.6667]
>>> [round(v, 4) for v in act(torch.tensor([[-1.0, 0.5, 1.2, 5.0]]))[0].tolist()]
[0.0, 0.6667, 1.3333, 2.0]
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from brevitas.inject.enum import ScalingPerOutputType
from brevitas.nn import QuantLinear
from torch import nn

from hwq.errors import ConfigError
from hwq.options import N2UQ_DEFAULT_RANGE, N2UQ_OPTIONS
from hwq.quant.brevitas_map import L1ClipRange, L1ScaleWeight  # noqa: F401  (shared; named here too)
from hwq.quant.family import UniformFamily, register_family

ACT_BITS = (1, 2, 3, 4)
#: Smallest gap: ``softplus`` could underflow to 0 in float32; 1e-3 keeps thresholds strictly increasing
#: (float32 rounding of a threshold near 10 is about 1e-6).
MIN_GAP = 1e-3
#: The paper's output range: levels ``k * 2 / (2^b - 1)`` (the default of ``n2uq_range``).
DEFAULT_RANGE = N2UQ_DEFAULT_RANGE


def _channel_view(t: torch.Tensor, ndim: int) -> torch.Tensor:
    """``(P,)`` -> ``(1, P, 1, ...)`` so that it broadcasts over ``(N, C, ...)`` inputs (P is 1 or C)."""
    return t.reshape(1, -1, *([1] * (ndim - 2)))


def edges_from(start: torch.Tensor, gaps: torch.Tensor) -> torch.Tensor:
    """Segment edges ``(P, n + 1)``: ``start`` then ``start + cumsum(gaps)``."""
    return torch.cat([start.unsqueeze(1), start.unsqueeze(1) + torch.cumsum(gaps, dim=1)], dim=1)


def thresholds_from(start: torch.Tensor, gaps: torch.Tensor) -> torch.Tensor:
    """Forward thresholds ``(P, n)``: the segment midpoints. The export uses these very values."""
    return start.unsqueeze(1) + torch.cumsum(gaps, dim=1) - gaps / 2


def multithreshold(x: torch.Tensor, thresholds: torch.Tensor) -> torch.Tensor:
    """``#{k : x >= t_k}`` per element, thresholds ``(P, n)`` per channel (dim 1), as QONNX MultiThreshold."""
    count = torch.zeros_like(x)
    for k in range(thresholds.shape[1]):
        count += (x >= _channel_view(thresholds[:, k], x.dim())).to(x.dtype)
    return count


def surrogate(x: torch.Tensor, start: torch.Tensor, gaps: torch.Tensor, step: float) -> torch.Tensor:
    """The piecewise-linear surrogate ``s(x)`` through ``(e_k, k * step)``: a plain reference (sum of ramps).

    Used by the tests as the independent reference for the backward pass.
    """
    edges = edges_from(start, gaps)
    out = torch.zeros_like(x)
    for k in range(gaps.shape[1]):
        low, gap = _channel_view(edges[:, k], x.dim()), _channel_view(gaps[:, k], x.dim())
        out = out + torch.clamp((x - low) / gap, 0.0, 1.0)
    return step * out


class N2UQFunction(torch.autograd.Function):
    """Forward: ``step * multithreshold(x, midpoints)``; backward: the surrogate's derivative.

    Written as a Function (instead of ``s + (q - s).detach()``) so that backward keeps only ``x`` and the
    parameters, not one tensor per segment, and so that edges get one-sided derivatives (segments are
    half-open ``[e_{k-1}, e_k)``).
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, start: torch.Tensor, gaps: torch.Tensor, step: float) -> torch.Tensor:
        ctx.save_for_backward(x, start, gaps)
        ctx.step = step
        return multithreshold(x, thresholds_from(start, gaps)) * step

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, start, gaps = ctx.saved_tensors
        step, n, per_channel = ctx.step, gaps.shape[1], start.shape[0] > 1
        edges = edges_from(start, gaps)
        dims = [d for d in range(x.dim()) if not (per_channel and d == 1)]
        grad_x = torch.zeros_like(x)
        seg_sum, seg_frac = [], []  # per segment k: sum of grad * slope, and of grad * slope * fraction
        for k in range(n):
            low = _channel_view(edges[:, k], x.dim())
            high = _channel_view(edges[:, k + 1], x.dim())
            slope = step / _channel_view(gaps[:, k], x.dim())
            inside = ((x >= low) & (x < high)).to(x.dtype)
            g_slope = grad * inside * slope
            grad_x += g_slope
            seg_sum.append(g_slope.sum(dim=dims).reshape(-1))
            seg_frac.append((g_slope * (x - low) / _channel_view(gaps[:, k], x.dim())).sum(dim=dims).reshape(-1))
        a = torch.stack(seg_sum, dim=1)   # (P, n)
        b = torch.stack(seg_frac, dim=1)  # (P, n)
        # On segment k, s = step * (k - 1 + (x - e_{k-1}) / a_k) with e_{k-1} = start + a_1 + ... + a_{k-1}:
        # ds/dstart = -slope_k, ds/da_j = -slope_k for j < k, ds/da_k = -slope_k * fraction.
        later = torch.flip(torch.cumsum(torch.flip(a, [1]), dim=1), [1]) - a  # sum over k > j
        grad_start = -a.sum(dim=1)
        grad_gaps = -later - b
        return grad_x, grad_start, grad_gaps, None


def _inverse_softplus(y: torch.Tensor) -> torch.Tensor:
    return y + torch.log(-torch.expm1(-y))


def start_gaps_from_thresholds(
    thresholds: Sequence[float], field: str = "thresholds", single_gap: float = 1.0,
) -> tuple[float, list[float]]:
    """Start and gaps whose segment midpoints are ``thresholds`` (strictly increasing).

    With ``e_k = 2 t_k - e_{k-1}`` every edge is fixed by ``start``; each gap is positive on an interval of
    ``start`` values, and the middle of their intersection is taken (one threshold: a gap of ``single_gap``).

    >>> start_gaps_from_thresholds([0.5, 1.5, 2.5])
    (0.0, [1.0, 1.0, 1.0])
    """
    t = [float(v) for v in thresholds]
    if any(b <= a for a, b in zip(t, t[1:])):
        raise ConfigError(f"{field}: thresholds must be strictly increasing, got {t}")
    # e_k = (-1)^k * start + c_k; gap_k = e_k - e_{k-1} = 2 (-1)^k start + (c_k - c_{k-1}).
    c, low, high = [0.0], -math.inf, math.inf
    for k, tk in enumerate(t, start=1):
        c.append(2 * tk - c[-1])
        d = c[k] - c[k - 1]
        if k % 2 == 0:
            low = max(low, -d / 2)
        else:
            high = min(high, d / 2)
    if not low < high:
        raise ConfigError(f"{field}: {t} cannot be the midpoints of segments with positive widths")
    start = high - single_gap / 2 if low == -math.inf else (low + high) / 2
    edges = [start]
    for tk in t:
        edges.append(2 * tk - edges[-1])
    return start, [b - a for a, b in zip(edges, edges[1:])]


class N2UQAct(nn.Module):
    """The N2UQ activation quantizer (see the module docstring).

    ``channels > 1`` learns one threshold set per channel (dim 1 of the input; free in FINN, whose
    thresholds are per channel anyway). ``gaps`` is one width for all segments or one per segment;
    ``thresholds`` (strictly increasing, ``2^bits - 1`` values) replaces ``start`` and ``gaps``.
    The default (``start`` 0, gaps ``out_range / n``) starts as round-to-nearest of ``clip(x, 0, out_range)``.

    >>> N2UQAct(bits=1, thresholds=[0.5]).thresholds().tolist()
    [[0.5]]
    """

    def __init__(
        self, bits: int, channels: int = 1, out_range: float = DEFAULT_RANGE, start: float = 0.0,
        gaps: float | Sequence[float] | None = None, thresholds: Sequence[float] | None = None,
        lr_scale: float = 0.1,
    ) -> None:
        super().__init__()
        if isinstance(bits, bool) or bits not in ACT_BITS:
            raise ConfigError(f"abits: N2UQ activations support {', '.join(map(str, ACT_BITS))} bits, got {bits!r}")
        if not out_range > 0:
            raise ConfigError(f"n2uq_range: expected > 0, got {out_range}")
        self.bits, self.levels = bits, 2**bits - 1
        self.step = float(out_range) / self.levels
        if thresholds is not None:
            if len(thresholds) != self.levels:
                raise ConfigError(f"n2uq_thresholds: {bits}-bit N2UQ needs {self.levels} thresholds, "
                                  f"got {len(thresholds)}")
            start, gaps = start_gaps_from_thresholds(thresholds, "n2uq_thresholds", self.step)
        if gaps is None:
            gaps = self.step
        gap_list = [float(gaps)] * self.levels if isinstance(gaps, (int, float)) else [float(g) for g in gaps]
        if len(gap_list) != self.levels:
            raise ConfigError(f"n2uq_gaps: {bits}-bit N2UQ needs {self.levels} gaps, got {len(gap_list)}")
        if min(gap_list) <= MIN_GAP:
            raise ConfigError(f"n2uq_gaps: every gap must be > {MIN_GAP} (thresholds strictly increasing), "
                              f"got {gap_list}")
        init_gaps = torch.tensor(gap_list).repeat(channels, 1)
        self.start = nn.Parameter(torch.full((channels,), float(start)))
        #: Unconstrained; the gaps are ``MIN_GAP + softplus(gap_param)``, so they stay positive.
        self.gap_param = nn.Parameter(_inverse_softplus(init_gaps - MIN_GAP))
        for param in (self.start, self.gap_param):
            param.hwq_lr_scale = lr_scale  # the paper trains thresholds at a tenth of the learning rate

    def gaps(self) -> torch.Tensor:
        """Segment widths ``(P, n)``, each > MIN_GAP."""
        return MIN_GAP + F.softplus(self.gap_param)

    def thresholds(self) -> torch.Tensor:
        """Forward thresholds ``(P, n)``, strictly increasing along dim 1."""
        return thresholds_from(self.start, self.gaps())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.start.shape[0] > 1 and x.shape[1] != self.start.shape[0]:
            raise ValueError(f"N2UQAct has {self.start.shape[0]} channels, input has {x.shape[1]} (dim 1)")
        return N2UQFunction.apply(x, self.start, self.gaps(), self.step)

    def extra_repr(self) -> str:
        return f"bits={self.bits}, channels={self.start.shape[0]}, step={self.step:.4g}"


# --- weights -------------------------------------------------------------------------------------------------
def l1_clip_gain(bits: int) -> float:
    """The paper's ``gamma = (2^b - 1) / 2^(b-1)``: the clipping range is ``gamma * mean|w|`` per channel.

    >>> l1_clip_gain(1), l1_clip_gain(2)
    (1.0, 1.5)
    """
    return (2**bits - 1) / 2 ** (bits - 1)


# --- the family ----------------------------------------------------------------------------------------------
@register_family
class N2UQFamily(UniformFamily):
    """``--quant n2uq``: N2UQ activations (1..4 bits) and L1-scaled per-channel weights (1..8 bits).

    The 8-bit input quantizer is the uniform family's. Options (``--option key=value``, declared in
    :data:`hwq.options.N2UQ_OPTIONS`; ``docs/n2uq.md`` has the table), all optional: the output range, per-channel
    thresholds, the initial start and gaps or thresholds, the thresholds' learning-rate factor, per-channel weight
    scales, and ``n2uq_classifier_per_channel`` (default false: the last layer keeps one scale, which FINN absorbs
    into its label selection; true scales it per class as the other layers, which trains as the paper but does not
    map to FINN).

    >>> from hwq.quant import get_family
    >>> get_family("n2uq").act(2, channels=64)
    N2UQAct(bits=2, channels=1, step=0.6667)
    """

    name = "n2uq"
    act_bits = ACT_BITS
    declared_options = N2UQ_OPTIONS

    def weight_quant(self, bits: int, per_channel: bool | None = None):
        if per_channel is None:
            per_channel = self._option("n2uq_weight_per_channel")
        quant = L1ScaleWeight.let(bit_width=bits, signed=True, narrow_range=True, l1_gain=l1_clip_gain(bits))
        if not per_channel:
            quant = quant.let(scaling_per_output_channel=False, scaling_per_output_type=ScalingPerOutputType.TENSOR)
        return quant

    def classifier(self, in_features: int, num_classes: int, bits: int) -> nn.Module:
        per_channel = self._option("n2uq_classifier_per_channel") and self._option("n2uq_weight_per_channel")
        layer = QuantLinear(in_features, num_classes, bias=False, weight_quant=self.weight_quant(bits, per_channel))
        return self._init_weights(layer, bits)

    def act(self, bits: int, channels: int) -> nn.Module:
        return N2UQAct(
            bits, channels=channels if self._option("n2uq_per_channel") else 1,
            out_range=self._option("n2uq_range"), start=self._option("n2uq_start"), gaps=self._option("n2uq_gaps"),
            thresholds=self._option("n2uq_thresholds"), lr_scale=self._option("n2uq_threshold_lr_scale"),
        )
