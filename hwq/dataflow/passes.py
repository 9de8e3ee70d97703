# SPDX-License-Identifier: BSD-3-Clause
"""hwq's own graph passes and analyses on FINN graphs (qonnx style: one ``apply`` per pass, analyses as functions).

- :class:`ScaleUint8Input` makes the graph take ``uint8`` pixels, the FINN way: the input is annotated UINT8 and
  the 8-bit input quantizer (scale 1/255), which is the identity on ``pixels / 255``, becomes ``Mul(1/255)``;
  streamlining then folds that scale into the first layer's thresholds.
- :func:`popcount_range_violations` finds XNOR-popcount layers whose declared output type cannot hold
  ``0..MW`` (finn-plus 1.6.1 declares INT7 for a 64-input popcount, see FINDINGS.md), and
  :class:`CorrectPopcountDatatypes` widens them to the smallest unsigned type that can.
- :class:`ClampPopcountThresholds` gives thresholded XNOR-popcount layers the popcount's own range: thresholds
  clipped to ``0..MW+1`` (exact, since a popcount is never below 0 or above ``MW``) and an unsigned accumulator
  holding ``0..MW``. finn-plus 1.6.1 derives a *signed* accumulator from ``(2w - 1) . x`` (bipolar weights on
  0/1 inputs), so a trained channel that always fires keeps a negative threshold, and the HLS MVAU's
  ``MinimizeWeightBitWidth`` then fails on ``assert (orig_thres_matrix >= 0).all()`` (see docs/dataflow.md).
  :func:`popcount_threshold_violations` is the matching check for the integer-range gate.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from onnx import helper
from qonnx.core.datatype import DataType
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.custom_op.registry import getCustomOp
from qonnx.transformation.base import Transformation

from hwq.dataflow.errors import MappingError

INPUT_SCALE = 1.0 / 255.0


class ScaleUint8Input(Transformation):
    """Replace the graph input's 8-bit unsigned Quant (scale 1/255, zero point 0) by ``Mul(1/255)`` on UINT8.

    For integer pixels ``x`` in 0..255, ``Quant(x / 255) == x / 255`` exactly, so the graph computes the same.

    >>> model = model.transform(ScaleUint8Input())   # doctest: +SKIP
    >>> model.get_tensor_datatype(model.graph.input[0].name)   # doctest: +SKIP
    UINT8
    """

    def apply(self, model: ModelWrapper) -> tuple[ModelWrapper, bool]:
        graph_in = model.graph.input[0].name
        consumers = model.find_consumers(graph_in) or []
        quants = [n for n in consumers if n.op_type == "Quant"]
        if len(consumers) != 1 or not quants:
            if model.get_tensor_datatype(graph_in) == DataType["UINT8"]:
                return model, False  # already applied
            ops = ", ".join(f"{n.name or '?'} ({n.op_type})" for n in consumers) or "nothing"
            raise MappingError(f"graph input '{graph_in}' feeds {ops}; expected one 8-bit unsigned Quant "
                               "with scale 1/255 (the hwq input quantizer)")
        quant = quants[0]
        scale = model.get_initializer(quant.input[1])
        zero = model.get_initializer(quant.input[2])
        bits = model.get_initializer(quant.input[3])
        signed = getCustomOp(quant).get_nodeattr("signed")
        if (scale is None or zero is None or bits is None or np.size(scale) != 1 or signed
                or int(bits) != 8 or float(zero) != 0.0 or not np.isclose(float(scale), INPUT_SCALE, rtol=1e-6)):
            raise MappingError(
                f"node '{quant.name}' (Quant on the graph input): expected unsigned 8-bit, scale 1/255, zero 0; "
                f"got signed={signed}, bits={bits}, scale={scale}, zero={zero}")
        param = model.make_new_valueinfo_name()
        model.set_initializer(param, np.asarray(float(scale), dtype=np.float32))
        mul = helper.make_node("Mul", [graph_in, param], [quant.output[0]], name="hwq_input_scale")
        index = list(model.graph.node).index(quant)
        model.graph.node.remove(quant)
        model.graph.node.insert(index, mul)
        model.set_tensor_datatype(graph_in, DataType["UINT8"])
        return model, False


def unmapped_nodes(model: ModelWrapper) -> list[dict[str, str]]:
    """Nodes that are not FINN hardware layers (they would stay outside the accelerator)."""
    return [{"node": n.name, "op_type": n.op_type} for n in model.graph.node
            if not n.domain.startswith("finn.custom_op.fpgadataflow")]


def _is_popcount(node) -> bool:
    if not node.op_type.startswith("MVAU"):
        return False
    inst = getCustomOp(node)
    return bool(inst.get_nodeattr("binaryXnorMode")) and bool(inst.get_nodeattr("noActivation"))


def _fits(dt: DataType, low: int, high: int) -> bool:
    return dt.is_integer() and dt.min() <= low and high <= dt.max()


def popcount_range_violations(model: ModelWrapper) -> list[dict[str, Any]]:
    """XNOR-popcount layers (no thresholds) whose declared output type cannot hold their range ``0..MW``."""
    found = []
    for node in model.graph.node:
        if not _is_popcount(node):
            continue
        mw = int(getCustomOp(node).get_nodeattr("MW"))
        declared = model.get_tensor_datatype(node.output[0])
        if not _fits(declared, 0, mw):
            found.append({"node": node.name, "tensor": node.output[0], "declared": declared.name,
                          "range": [0, mw]})
    return found


class CorrectPopcountDatatypes(Transformation):
    """Widen each XNOR-popcount output to the smallest UINT type holding ``0..MW``, also where it is consumed.

    ``self.corrections`` lists what was changed (node, tensor, old and new type), for the build manifest.
    """

    def __init__(self) -> None:
        super().__init__()
        self.corrections: list[dict[str, Any]] = []

    def apply(self, model: ModelWrapper) -> tuple[ModelWrapper, bool]:
        for bad in popcount_range_violations(model):
            new = DataType[f"UINT{int(bad['range'][1]).bit_length()}"]
            node = model.get_node_from_name(bad["node"])
            getCustomOp(node).set_nodeattr("outputDataType", new.name)
            model.set_tensor_datatype(bad["tensor"], new)
            for consumer in model.find_consumers(bad["tensor"]) or []:
                inst = getCustomOp(consumer)
                if "inputDataType" in inst.get_nodeattr_types():
                    inst.set_nodeattr("inputDataType", new.name)
            self.corrections.append({**bad, "corrected": new.name})
        return model, False


def _is_thresholded_popcount(node) -> bool:
    if not node.op_type.startswith("MVAU") or len(node.input) < 3:
        return False
    inst = getCustomOp(node)
    return bool(inst.get_nodeattr("binaryXnorMode")) and not inst.get_nodeattr("noActivation")


def popcount_accumulator_type(mw: int) -> DataType:
    """The smallest unsigned type holding an ``mw``-input popcount, ``0..mw``."""
    return DataType[f"UINT{max(1, int(mw).bit_length())}"]


def popcount_threshold_violations(model: ModelWrapper) -> list[dict[str, Any]]:
    """Thresholded XNOR-popcount layers whose thresholds leave ``0..MW+1`` or whose threshold type (the HLS
    MVAU compares, and accumulates, in the threshold type) cannot hold the popcount range ``0..MW``."""
    found = []
    for node in model.graph.node:
        if not _is_thresholded_popcount(node):
            continue
        mw = int(getCustomOp(node).get_nodeattr("MW"))
        thresholds = model.get_initializer(node.input[2])
        declared = model.get_tensor_datatype(node.input[2])
        if thresholds is not None and thresholds.size and (thresholds.min() < 0 or thresholds.max() > mw + 1):
            found.append({"node": node.name, "tensor": node.input[2], "declared": declared.name,
                          "range": [float(thresholds.min()), float(thresholds.max())],
                          "expected": f"thresholds within 0..{mw + 1}"})
        elif not _fits(declared, 0, mw):
            found.append({"node": node.name, "tensor": node.input[2], "declared": declared.name,
                          "range": [0, mw], "expected": f"a threshold type holding the popcount 0..{mw}"})
    return found


class ClampPopcountThresholds(Transformation):
    """Give each thresholded XNOR-popcount MVAU the popcount's range ``0..MW`` (a finn-plus 1.6.1 workaround).

    - thresholds are clipped to ``0..MW+1``: the popcount ``p`` satisfies ``0 <= p <= MW``, so ``p >= t`` for a
      ``t <= 0`` is always true and for a ``t > MW`` always false; the layer computes exactly the same;
    - ``accDataType`` becomes the smallest UINT holding ``0..MW`` (finn-plus derives a signed one from the
      bipolar weights, e.g. INT10 for a 576-input popcount, whose 512..576 would wrap);
    - the threshold tensor's type is widened to the smallest UINT holding ``0..MW`` and the thresholds where it
      cannot hold them.

    Run it before finn-plus's ``MinimizeWeightBitWidth`` (whose HLS variant asserts non-negative thresholds) and
    again after ``MinimizeAccumulatorWidth`` (which re-derives the signed accumulator). ``self.corrections``
    lists the changes, for the build manifest.
    """

    def __init__(self) -> None:
        super().__init__()
        self.corrections: list[dict[str, Any]] = []

    def apply(self, model: ModelWrapper) -> tuple[ModelWrapper, bool]:
        for node in model.graph.node:
            if not _is_thresholded_popcount(node):
                continue
            inst = getCustomOp(node)
            mw = int(inst.get_nodeattr("MW"))
            acc = popcount_accumulator_type(mw)
            change: dict[str, Any] = {}
            thresholds = model.get_initializer(node.input[2])
            if thresholds is not None:
                clipped = np.clip(thresholds, 0, mw + 1).astype(np.float32)
                moved = int(np.count_nonzero(clipped != thresholds))
                if moved:
                    change["thresholds_clipped"] = moved
                    change["threshold_range"] = [float(thresholds.min()), float(thresholds.max())]
                    model.set_initializer(node.input[2], clipped)
            old_acc = inst.get_nodeattr("accDataType")
            if old_acc != acc.name:
                change["accDataType"] = [old_acc, acc.name]
                inst.set_nodeattr("accDataType", acc.name)
            tdt = model.get_tensor_datatype(node.input[2])
            top = max(mw, int(np.max(clipped))) if thresholds is not None and thresholds.size else mw
            if tdt.is_integer() and not _fits(tdt, 0, top):  # float thresholds: RoundAndClipThresholds types them
                wide = popcount_accumulator_type(top)
                change["thresholdDataType"] = [tdt.name, wide.name]
                model.set_tensor_datatype(node.input[2], wide)
            if change:  # one entry per node, also when the pass runs more than once
                entry = next((c for c in self.corrections if c["node"] == node.name), None)
                if entry is None:
                    self.corrections.append({"node": node.name, "MW": mw, **change})
                else:
                    entry.update({k: v for k, v in change.items() if k not in entry})
        return model, False
