# SPDX-License-Identifier: BSD-3-Clause
"""Activation quantizers that round down (``Quant`` with ``rounding_mode=FLOOR``), built exactly by FINN.

finn-plus converts every activation ``Quant`` into thresholds placed for round-to-nearest, so a FLOOR quantizer
would be built as ROUND without a word. Three small passes make it exact:

1. :class:`FloorAsShiftedRound` (on the QONNX graph, before ``qonnx_to_finn``): ``floor(x/s + z)`` is
   ``round(x/s + z - 1/2)`` except at the ties, so each FLOOR activation Quant gets an ``Add(-s/2)`` in front and
   becomes ROUND. Its thresholds then sit at ``(m + 1/2) + 1/2``: the integers ``m + 1`` of the floor.
2. :class:`SnapFloorThresholds` (after streamlining): those thresholds on the integer accumulator come out of
   float streamlining as ``59.999996`` or ``60.000004``; each within :data:`FLOOR_TIE_TOLERANCE` of an integer ``n``
   becomes ``n``, so ``acc >= n`` counts the tie as reaching ``n``: what floor does with an exact integer.
3. :class:`TieTolerantFloor` (on the gate's reference copy of the QONNX graph only): QONNX computes
   ``floor(x/s)`` on a float accumulator, in which an exact tie (an accumulator of 0) can arrive as ``-1e-8``
   and floor to -1 (1 of 1,600 values on a digits network); which way it falls depends on the float order, not
   on the network; and FINN drops scales within 1e-5 of 1 (see :data:`FLOOR_TIE_TOLERANCE`). The reference
   therefore floors ``x/s`` raised by ``FLOOR_TIE_TOLERANCE * max(1, |x/s|)``: a value that close below an
   integer is that integer, the same tolerance the thresholds are snapped with. The gate's report says so
   (``floor_ties``).

A value that is not a tie but lies within the tolerance of one is, by the same float argument, as likely to go
either way in QONNX itself. ``CEIL`` stays refused (:func:`hwq.dataflow.model_import.check_rounding`).

>>> model = model.transform(FloorAsShiftedRound())                   # doctest: +SKIP   (QONNX graph)
>>> model = model.transform(SnapFloorThresholds.for_user_graph(user))  # doctest: +SKIP   (streamlined graph)
>>> reference = tie_tolerant_reference(user)                         # doctest: +SKIP   (the gate's reference)
"""

from __future__ import annotations

import numpy as np
from onnx import helper
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.transformation.base import Transformation
from qonnx.util.basic import get_by_name

from hwq.dataflow.provenance import PREFIX, user_node

#: How close below an integer a floored value counts as that integer (relative, at least 1 in units of the
#: quantizer's step). FINN's streamlining drops a scale within 1e-5 of 1 (qonnx's ``RemoveIdentityOps``; an
#: untrained batch norm's ``1/sqrt(1 + eps)`` is 0.999995), so an accumulator of 1 that QONNX floors as 0.999995
#: reaches 1 in the hardware; twice that covers it and float32's rounding of the product.
FLOOR_TIE_TOLERANCE = 2e-5


def rounding_mode(node) -> str:
    """A Quant node's ``rounding_mode``, upper case (ROUND when the attribute is absent, as in QONNX)."""
    attr = get_by_name(node.attribute, "rounding_mode")
    return attr.s.decode().upper() if attr is not None else "ROUND"


def floor_activation_quants(model: ModelWrapper) -> list:
    """The activation ``Quant`` nodes (not on an initializer) of ``model`` that round with FLOOR."""
    return [n for n in model.graph.node if n.op_type == "Quant" and model.get_initializer(n.input[0]) is None
            and rounding_mode(n) == "FLOOR"]


def _insert_before(model: ModelWrapper, quant, op_type: str, operand: np.ndarray, suffix: str) -> None:
    """Put ``op_type(quant's input, operand)`` in front of ``quant``, tagged with ``quant``'s user node."""
    const = model.make_new_valueinfo_name()
    model.set_initializer(const, operand.astype(np.float32))
    out = model.make_new_valueinfo_name()
    node = helper.make_node(op_type, [quant.input[0], const], [out], name=f"{quant.name}_{suffix}")
    node.doc_string = quant.doc_string if quant.doc_string.startswith(PREFIX) else ""
    model.graph.node.insert(list(model.graph.node).index(quant), node)
    quant.input[0] = out


class FloorAsShiftedRound(Transformation):
    """Each FLOOR activation Quant becomes ``Quant_ROUND(x - s/2)`` (see the module text); ``rewritten`` lists the
    nodes' names."""

    def __init__(self) -> None:
        super().__init__()
        self.rewritten: list[str] = []

    def apply(self, model: ModelWrapper) -> tuple[ModelWrapper, bool]:
        for quant in floor_activation_quants(model):
            scale = model.get_initializer(quant.input[1])
            _insert_before(model, quant, "Add", -np.asarray(scale, np.float32) / 2, "floor_shift")
            get_by_name(quant.attribute, "rounding_mode").s = b"ROUND"
            self.rewritten.append(quant.name)
        return model, False


class SnapFloorThresholds(Transformation):
    """Thresholds of MultiThresholds made from the user's FLOOR Quants (on an integer input) that lie within
    :data:`FLOOR_TIE_TOLERANCE` of an integer become that integer; ``changed`` counts them."""

    def __init__(self, floor_quants: set[str]) -> None:
        super().__init__()
        self.floor_quants = set(floor_quants)
        self.changed = 0

    @classmethod
    def for_user_graph(cls, user_model: ModelWrapper) -> "SnapFloorThresholds":
        return cls({n.name for n in floor_activation_quants(user_model)})

    def apply(self, model: ModelWrapper) -> tuple[ModelWrapper, bool]:
        for node in model.graph.node:
            origin = user_node(node)
            if node.op_type != "MultiThreshold" or origin is None or origin[0] not in self.floor_quants:
                continue
            thresholds = model.get_initializer(node.input[1])
            if thresholds is None or not model.get_tensor_datatype(node.input[0]).is_integer():
                continue
            n = np.rint(thresholds.astype(np.float64))
            near = np.abs(thresholds - n) <= FLOOR_TIE_TOLERANCE * np.maximum(1.0, np.abs(n))
            new = np.where(near, n, thresholds).astype(np.float32)
            moved = new != thresholds
            if moved.any():
                self.changed += int(moved.sum())
                model.set_initializer(node.input[1], new)
        return model, False


class TieTolerantFloor(Transformation):
    """The gate's reference: before each FLOOR activation Quant, ``x + FLOOR_TIE_TOLERANCE * max(s, |x|)``
    (``s > 0``), so ``floor(x/s)`` takes a value within the tolerance below an integer as that integer."""

    def apply(self, model: ModelWrapper) -> tuple[ModelWrapper, bool]:
        for quant in floor_activation_quants(model):
            scale = np.abs(np.asarray(model.get_initializer(quant.input[1]), np.float32))
            raise_by = model.make_new_valueinfo_name()
            magnitude, bounded = model.make_new_valueinfo_name(), model.make_new_valueinfo_name()
            tol = model.make_new_valueinfo_name()
            model.set_initializer(tol, np.asarray(FLOOR_TIE_TOLERANCE, np.float32))
            scale_name = model.make_new_valueinfo_name()
            model.set_initializer(scale_name, scale)
            src, out = quant.input[0], model.make_new_valueinfo_name()
            nodes = [helper.make_node("Abs", [src], [magnitude], name=f"{quant.name}_tie_abs"),
                     helper.make_node("Max", [magnitude, scale_name], [bounded], name=f"{quant.name}_tie_max"),
                     helper.make_node("Mul", [bounded, tol], [raise_by], name=f"{quant.name}_tie_mul"),
                     helper.make_node("Add", [src, raise_by], [out], name=f"{quant.name}_tie_add")]
            at = list(model.graph.node).index(quant)
            for offset, node in enumerate(nodes):
                model.graph.node.insert(at + offset, node)
            quant.input[0] = out
        return model, False


def tie_tolerant_reference(model: ModelWrapper) -> tuple[ModelWrapper, int]:
    """``model`` (unchanged when it has no FLOOR activation Quant) or a copy with :class:`TieTolerantFloor`
    applied, and how many quantizers that concerned."""
    count = len(floor_activation_quants(model))
    if not count:
        return model, 0
    return model.transform(TieTolerantFloor(), make_deepcopy=True, cleanup=False), count

