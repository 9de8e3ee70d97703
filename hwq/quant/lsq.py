# SPDX-License-Identifier: BSD-3-Clause
"""LSQ (Esser et al., "Learned Step Size Quantization", ICLR 2020) as the ``lsq`` family (``--method lsq``).

What the paper states, for a tensor ``v`` on the grid ``[-Qn, Qp]`` with step ``s``:

* ``v_q = round(clip(v / s, -Qn, Qp)) * s`` with a straight-through round;
* ``s`` is learned; it starts at ``2 * mean(|v|) / sqrt(Qp)`` (weights: the layer's; activations: the first batch's);
* ``s``'s gradient is scaled by ``g = 1 / sqrt(N * Qp)``, ``N`` the number of weights of the layer, or the number
  of features of one sample for an activation, so that its updates are of the size of the weights' updates.

How hwq differs from ``uniform``: ``uniform`` starts its weight scales at ``max|w| / Qp`` (Brevitas
``PARAMETER_FROM_STATS`` with ``StatsOp.MAX``) and its activation scales at ``max_val / Qp`` (``PARAMETER``), and
scales no gradient. Everything else (the integer grid, zero point, per-tensor scale, round-to-nearest with a
straight-through gradient, binary at 1 bit) is the same Brevitas quantizer, so a trained step exports to QONNX as
the same constant ``Quant`` scale a ``uniform`` run exports.

One departure from the paper: Brevitas rounds before it clips (``clip(round(v / s))``), so for ``v / s`` in
``(Qp, Qp + 1/2)`` the step's gradient is ``round(v / s) - v / s`` where the paper's is ``Qp`` (and likewise below
``-Qn``); the forward values are the same.
"""

from __future__ import annotations

import math

import brevitas
import torch
from brevitas.inject.enum import ScalingImplType
from brevitas.nn import QuantIdentity
from brevitas.quant.solver import ActQuantSolver, WeightQuantSolver
from dependencies import value
from torch import nn

from hwq.quant.brevitas_map import FinnCompatibleQuant
from hwq.quant.family import UniformFamily, register_family
from hwq.options import UNIFORM_OPTIONS


#: The smallest step (of a float32 value in [-1, 1] or an activation): below it v / s would overflow in practice.
LSQ_MIN_STEP = 1e-8


def lsq_init(v: torch.Tensor, qp: int) -> torch.Tensor:
    """LSQ's initial step: ``2 * mean(|v|) / sqrt(Qp)``."""
    return 2.0 * v.detach().abs().mean() / math.sqrt(qp)


def lsq_grad_scale(features: int, qp: int) -> float:
    """LSQ's gradient scale ``g = 1 / sqrt(N * Qp)``."""
    return 1.0 / math.sqrt(features * qp)


def scale_grad(x: torch.Tensor, g: float) -> torch.Tensor:
    """``x`` forward, ``g`` times its gradient backward (the paper's ``gradscale``)."""
    scaled = x * g
    return (x - scaled).detach() + scaled


class LsqStepScaling(brevitas.jit.ScriptModule):
    """Brevitas scaling module: LSQ's learned step ``s``, set from the first tensor it sees.

    Brevitas calls ``scaling_impl(x, threshold)`` and uses what it returns as the scale (the step), so the step is
    returned as it is. The flag ``initialised`` is a buffer: a loaded or resumed model keeps its learned step.
    """

    def __init__(self, lsq_qp: int, lsq_per_sample: bool) -> None:
        super().__init__()
        self.qp = int(lsq_qp)
        #: Activations: N counts the features of one sample (the batch dimension is not a feature).
        self.per_sample = bool(lsq_per_sample)
        self.value = nn.Parameter(torch.tensor(1.0))
        self.register_buffer("initialised", torch.tensor(False))

    def forward(self, x: torch.Tensor, threshold: torch.Tensor | None = None) -> torch.Tensor:
        if not bool(self.initialised):
            with torch.no_grad():
                self.value.copy_(lsq_init(x, self.qp))
                self.initialised.fill_(True)
        features = x[0].numel() if self.per_sample and x.dim() > 1 else x.numel()
        # The step is |value|: Adam can push a raw step through zero (MNIST TFC W4A4 at lr 0.02, seed 2: the
        # classifier's step reached -0.36, its integer scores flipped sign and the class rule read 0 % accuracy).
        # A positive floor keeps v / s finite.
        step = self.value.abs().clamp_min(LSQ_MIN_STEP)
        return scale_grad(step, lsq_grad_scale(features, self.qp))


class _LsqQuant(FinnCompatibleQuant):
    """The shared FINN-compatible grid with LSQ's step as its scale."""

    #: For Brevitas' solvers (shapes, no statistics); the module itself is ``scaling_impl``.
    scaling_impl_type = ScalingImplType.PARAMETER
    scaling_impl = LsqStepScaling

    @value
    def lsq_qp(bit_width, signed, narrow_range):
        # The paper's Qp: the largest integer of the grid (2^(b-1) - 1 signed, 2^b - 1 unsigned).
        return 2 ** (bit_width - 1) - 1 if signed else 2 ** bit_width - 1


class LsqWeight(_LsqQuant, WeightQuantSolver):
    lsq_per_sample = False


class LsqAct(_LsqQuant, ActQuantSolver):
    lsq_per_sample = True


@register_family
class LsqFamily(UniformFamily):
    """``uniform``'s quantizers with LSQ's step size at 2..8 bits; binary (sign) at 1 bit as ``uniform``."""

    name = "lsq"
    #: Not ``act_signed``: LSQ's activation quantizer is kept as the paper's, on the signed grid.
    declared_options = UNIFORM_OPTIONS

    def weight_quant(self, bits: int, per_channel: bool = True):
        if bits == 1:
            return super().weight_quant(bits, per_channel)
        spec = self.weight_spec(bits)
        return LsqWeight.let(bit_width=bits, signed=spec.signed, narrow_range=spec.narrow_range)

    def act(self, bits: int, channels: int) -> nn.Module:
        if bits == 1:
            return super().act(bits, channels)
        spec = self.act_spec(bits)
        return QuantIdentity(act_quant=LsqAct.let(bit_width=bits, signed=spec.signed, narrow_range=spec.narrow_range,
                                                  max_val=spec.max_val,
                                                  min_val=-spec.max_val if spec.signed else 0.0))
