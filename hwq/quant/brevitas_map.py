# SPDX-License-Identifier: BSD-3-Clause
"""The one place where a :class:`QuantSpec` becomes a Brevitas quantizer.

The bundles follow FINN's bnn_pynq examples (zero zero-point, round-to-nearest, per-tensor scale), which is
what FINN's streamlining turns into thresholds and XNOR-popcounts.
"""

from __future__ import annotations

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
