# SPDX-License-Identifier: BSD-3-Clause
"""The one place where a :class:`QuantSpec` becomes a Brevitas quantizer.

The bundles follow FINN's bnn_pynq examples (zero zero-point, round-to-nearest, per-tensor scale), which is
what FINN's streamlining turns into thresholds and XNOR-popcounts.
"""

from __future__ import annotations

from typing import Optional

import brevitas
import torch
from brevitas.core.bit_width import BitWidthImplType
from brevitas.core.quant import QuantType
from brevitas.core.restrict_val import FloatToIntImplType, RestrictValueType
from brevitas.core.scaling import ScalingImplType
from brevitas.core.stats import StatsOp
from brevitas.core.zero_point import ZeroZeroPoint
from brevitas.inject import ExtendedInjector
from brevitas.inject.enum import ScalingPerOutputType
from brevitas.quant.solver import ActQuantSolver, WeightQuantSolver
from dependencies import value

from hwq.quant.spec import QuantSpec, Role, Scaling


class FinnCompatibleQuant(ExtendedInjector):
    """Shared parts: integer grid with zero at zero, rounding, one scale per tensor."""

    bit_width_impl_type = BitWidthImplType.CONST
    restrict_scaling_type = RestrictValueType.FP
    zero_point_impl = ZeroZeroPoint
    float_to_int_impl_type = FloatToIntImplType.ROUND
    scaling_per_output_channel = False
    scaling_per_output_type = ScalingPerOutputType.TENSOR

    @value
    def quant_type(bit_width):
        return QuantType.BINARY if bit_width == 1 else QuantType.INT


class ConstScaleWeight(FinnCompatibleQuant, WeightQuantSolver):
    """Weights on a fixed grid; at 1 bit, ``sign(w)``."""

    scaling_impl_type = ScalingImplType.CONST


class LearnedScaleWeight(FinnCompatibleQuant, WeightQuantSolver):
    """Weights with a trained scale, initialised from ``max |w|``."""

    scaling_impl_type = ScalingImplType.PARAMETER_FROM_STATS
    scaling_stats_op = StatsOp.MAX


class ConstScaleAct(FinnCompatibleQuant, ActQuantSolver):
    """Activations (or the input) on a fixed grid; at 1 bit, ``sign(x)``."""

    scaling_impl_type = ScalingImplType.CONST


class LearnedScaleAct(FinnCompatibleQuant, ActQuantSolver):
    """Activations with a trained scale (initialised from ``max_val``)."""

    scaling_impl_type = ScalingImplType.PARAMETER


class L1ClipRange(brevitas.jit.ScriptModule):
    """Brevitas scaling statistic: ``gain * mean(|w|)`` over each output channel, without gradient.

    Not entered in Brevitas' ``SIGNEDNESS_STATS`` (``@register_stats_implementation``, an import-time write to
    Brevitas' global table): Brevitas reads that table only for power-of-two scales, and these scales are floats.

    The paper detaches this scale (it is a statistic, not a parameter). Brevitas divides it by the largest
    integer of the grid, so the top level sits at ``gain * mean|w|`` (at 1 bit: ``sign(w) * mean|w|``).
    """

    __constants__ = ["stats_reduce_dim", "gain", "power_of_two"]

    def __init__(self, l1_gain: float, stats_reduce_dim: Optional[int] = None, l1_power_of_two: bool = False) -> None:
        super().__init__()
        self.stats_reduce_dim = stats_reduce_dim
        self.gain = l1_gain
        #: IR-Net/DIR-Net: the scale rounded to the nearest power of two (``2^round(log2(gain * mean|w|))``).
        self.power_of_two = l1_power_of_two

    @brevitas.jit.script_method
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stats_reduce_dim is None:
            ave = torch.mean(torch.abs(x))
        else:
            ave = torch.mean(torch.abs(x), dim=self.stats_reduce_dim)
        scale = self.gain * ave
        if self.power_of_two:
            scale = torch.pow(2.0, torch.round(torch.log2(scale)))
        return scale.detach()


class L1ScaleWeight(FinnCompatibleQuant, WeightQuantSolver):
    """Mean-|w|-scaled weights (N2UQ; XNOR-Net/ReActNet at 1 bit): the shared FINN-compatible integer grid, scale
    ``gamma * mean|w| / max_int`` per channel.

    >>> from brevitas.nn import QuantLinear
    >>> layer = QuantLinear(4, 3, bias=False, weight_quant=L1ScaleWeight.let(
    ...     bit_width=2, signed=True, narrow_range=True, l1_gain=1.5))
    >>> tuple(layer.quant_weight().scale.shape)
    (3, 1)
    """

    scaling_impl_type = ScalingImplType.STATS
    #: Tells Brevitas' solvers the statistic is a one-sided reduction (for the per-channel view and dims);
    #: the statistic itself is ours.
    scaling_stats_op = StatsOp.AVE
    scaling_stats_impl = L1ClipRange
    l1_power_of_two = False
    scaling_per_output_channel = True
    scaling_per_output_type = ScalingPerOutputType.CHANNEL


_BUNDLES = {
    (Role.WEIGHT, Scaling.CONST): ConstScaleWeight,
    (Role.WEIGHT, Scaling.LEARNED): LearnedScaleWeight,
    (Role.ACT, Scaling.CONST): ConstScaleAct,
    (Role.ACT, Scaling.LEARNED): LearnedScaleAct,
    (Role.INPUT, Scaling.CONST): ConstScaleAct,
    (Role.INPUT, Scaling.LEARNED): LearnedScaleAct,
}


def to_injector(spec: QuantSpec) -> type[ExtendedInjector]:
    """The Brevitas quantizer (an injector class) for ``spec``.

    >>> from brevitas.nn import QuantLinear
    >>> layer = QuantLinear(4, 2, bias=False, weight_quant=to_injector(QuantSpec(Role.WEIGHT, 1)))
    """
    bundle = _BUNDLES[(spec.role, spec.scaling)]
    settings = dict(bit_width=spec.bits, signed=spec.signed, narrow_range=spec.narrow_range)
    if spec.role is Role.WEIGHT:
        if spec.scaling is Scaling.CONST:
            settings["scaling_const"] = spec.max_val
    else:
        settings["max_val"] = spec.max_val
        settings["min_val"] = -spec.max_val if spec.signed else 0.0
    return bundle.let(**settings)
