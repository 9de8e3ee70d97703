# SPDX-License-Identifier: BSD-3-Clause
"""The gate's reference decides ``ROUND`` ties as the hardware does: half to even, within the same tolerance.

finn-plus builds an activation ``Quant`` (``ROUND``) as thresholds at the half steps on the integer accumulator;
:class:`hwq.dataflow.passes_branches.RoundHalfEvenAtTies` makes every threshold within
:data:`~hwq.dataflow.passes_branches.TIE_TOLERANCE` (relative) of an integer ``n`` an exact tie decided half to even
(``n`` where it steps up to an even level, ``n + 1/2`` where it steps up from one). QONNX computes the same quantizer
on a float32 accumulator: with 8-bit weights on 8-bit pixels the accumulator reaches 10^4..10^5 and an
accumulator sitting exactly on such a threshold arrives as ``-6.5000005`` and rounds to -7, where the hardware
(and half-to-even at the tie) gives -6 (reactnet_tiny's stem; docs/reactnet.md). Which side of ``m + 1/2`` the
float value falls on is float32 noise, not the network.

:class:`TieAwareRound` (on the gate's reference copy only) therefore moves each input of an activation ``ROUND``
Quant whose ``v = x/s + z`` lies within ``TIE_TOLERANCE * max(1, |v|)`` of a half step by twice that towards the
even neighbour, so QONNX's ``round`` returns the even level: the hardware's rule, at the hardware's tolerance.
Everywhere else the reference is unchanged, so a threshold one level off anywhere but at a tie still fails the
gate. The pass keeps a 0/1 mask per quantizer (``masks``) so the gate reports how many values were at a tie
(``bit_exact.round_ties``).

The two tolerances are measured in different units (the hardware's relative to the accumulator, the reference's
relative to ``x/s``); they coincide when the batch norm's bias is small against the value, and differ at most by
that ratio otherwise. A value inside one window and outside the other is within about 1e-6 (relative) of a half
step, where QONNX's own float32 answer is as likely to go either way.

>>> reference, masks = round_tie_reference(qonnx_model)   # doctest: +SKIP   (a copy; the user's graph is kept)
"""

from __future__ import annotations

import numpy as np
from onnx import helper
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.transformation.base import Transformation

from hwq.dataflow.floor_rounding import rounding_mode
from hwq.dataflow.passes_branches import TIE_TOLERANCE


def round_activation_quants(model: ModelWrapper) -> list:
    """The activation ``Quant`` nodes of ``model`` that round half to even (ROUND): not on an initializer (a
    weight) nor on the graph input (pixels, integers in its steps: no ties; and the gate tells the input quantizer
    from the layers' by that input)."""
    graph_in = model.graph.input[0].name
    return [n for n in model.graph.node if n.op_type == "Quant" and model.get_initializer(n.input[0]) is None
            and n.input[0] != graph_in and rounding_mode(n) == "ROUND"]


class TieAwareRound(Transformation):
    """Before each activation ROUND Quant ``q(x; s, z)``: ``x + mask * dir * 2 W s`` with ``v = x/s + z``,
    ``W = TIE_TOLERANCE * max(1, |v|)``, ``mask = |v - floor(v) - 1/2| < W`` and ``dir`` +1 when ``floor(v)`` is
    odd (the tie goes up to the even level), -1 when it is even. ``masks`` names the mask tensors."""

    def __init__(self, tolerance: float = TIE_TOLERANCE) -> None:
        super().__init__()
        self.tolerance = tolerance
        self.masks: list[str] = []

    def _const(self, model: ModelWrapper, value) -> str:
        name = model.make_new_valueinfo_name()
        model.set_initializer(name, np.asarray(value, np.float32))
        return name

    def apply(self, model: ModelWrapper) -> tuple[ModelWrapper, bool]:
        for quant in round_activation_quants(model):
            if quant.input[0].startswith("tie_") or len(quant.input) < 3:
                continue
            x, s, z = quant.input[0], quant.input[1], quant.input[2]
            one, half, two = (self._const(model, c) for c in (1.0, 0.5, 2.0))
            tol, push = self._const(model, self.tolerance), self._const(model, 2.0 * self.tolerance)
            t = {k: model.make_new_valueinfo_name() for k in
                 ("vs", "v", "k", "frac", "dist", "abs_v", "big", "window", "near", "mask", "k2", "kh", "even2",
                  "parity", "par2", "dir", "step", "signed", "moved", "shift")}
            t["out"] = "tie_" + model.make_new_valueinfo_name()
            op = helper.make_node
            nodes = [
                op("Div", [x, s], [t["vs"]]), op("Add", [t["vs"], z], [t["v"]]),           # v = x/s + z
                op("Floor", [t["v"]], [t["k"]]), op("Sub", [t["v"], t["k"]], [t["frac"]]),
                op("Sub", [t["frac"], half], [t["dist"]]), op("Abs", [t["dist"]], [t["abs_v"]]),
                op("Abs", [t["v"]], [t["big"]]), op("Max", [t["big"], one], [t["window"]]),
                op("Mul", [t["window"], tol], [t["near"]]),                                  # W
                op("Less", [t["abs_v"], t["near"]], [t["mask"] + "_b"]),
                op("Cast", [t["mask"] + "_b"], [t["mask"]], to=1),                          # to float
                op("Mul", [t["k"], half], [t["k2"]]), op("Floor", [t["k2"]], [t["kh"]]),
                op("Mul", [t["kh"], two], [t["even2"]]), op("Sub", [t["k"], t["even2"]], [t["parity"]]),
                op("Mul", [t["parity"], two], [t["par2"]]), op("Sub", [t["par2"], one], [t["dir"]]),
                op("Mul", [t["window"], push], [t["step"]]), op("Mul", [t["step"], t["dir"]], [t["signed"]]),
                op("Mul", [t["signed"], t["mask"]], [t["moved"]]), op("Mul", [t["moved"], s], [t["shift"]]),
                op("Add", [x, t["shift"]], [t["out"]]),
            ]
            at = list(model.graph.node).index(quant)
            for offset, node in enumerate(nodes):
                node.name = f"{quant.name}_round_tie_{offset}"
                model.graph.node.insert(at + offset, node)
            quant.input[0] = t["out"]
            self.masks.append(t["mask"])
        return model, False


def round_tie_reference(model: ModelWrapper) -> tuple[ModelWrapper, list[str]]:
    """``model`` (unchanged when it has no activation ROUND Quant) or a copy with :class:`TieAwareRound` applied,
    and the names of its tie masks."""
    if not round_activation_quants(model):
        return model, []
    tie_aware = TieAwareRound()
    return model.transform(tie_aware, make_deepcopy=True, cleanup=False), tie_aware.masks
