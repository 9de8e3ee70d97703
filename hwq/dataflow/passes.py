# SPDX-License-Identifier: BSD-3-Clause
"""hwq's own graph passes and analyses on FINN graphs (qonnx style: one ``apply`` per pass, analyses as functions).

- (The graph's uint8 input is made by :class:`hwq.dataflow.input_convention.UseUint8Input`.)
- :func:`popcount_range_violations` finds XNOR-popcount layers whose declared output or accumulator type cannot hold
  ``0..MW`` (finn-plus 1.6.1 declares INT7 for a 64-input popcount, see FINDINGS.md), and
  :class:`CorrectPopcountDatatypes` widens them to the smallest unsigned type that can.
- :class:`ClampPopcountThresholds` gives thresholded XNOR-popcount layers the popcount's own range: thresholds
  clipped to ``0..MW+1`` (exact, since a popcount is never below 0 or above ``MW``) and an unsigned accumulator
  holding ``0..MW``. finn-plus 1.6.1 derives a *signed* accumulator from ``(2w - 1) . x`` (bipolar weights on
  0/1 inputs), so a trained channel that always fires keeps a negative threshold, and the HLS MVAU's
  ``MinimizeWeightBitWidth`` then fails on ``assert (orig_thres_matrix >= 0).all()`` (see docs/dataflow.md).
  :func:`popcount_threshold_violations` is the matching check for the integer-range gate.
- Padded binary convolutions (the binary MobileNet's ``ConstantPad2d(1, -1)`` before each depthwise conv):
  :class:`AbsorbPadIntoIm2Col` folds an explicit Pad into the Im2Col after it;
  :class:`ConvertBipolarDepthwiseToBinaryInput` gives a binary depthwise conv 0/1 inputs (a VVAU, not an XNOR
  layer over its block-sparse weights) and writes its bipolar -1 padding as 0 of the 0/1 stream, which is what
  FINN's padding hardware inserts; :func:`check_bipolar_pads` and :class:`BinaryPadsForXnorConvs` do the same for
  the padding of ordinary XNOR convolutions. A bipolar stream padded with anything but -1 is a MappingError.
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
    """XNOR-popcount layers (no thresholds) whose declared output type, or accumulator type (``accDataType``),
    cannot hold their range ``0..MW``; ``field`` says which (``output`` or ``accDataType``)."""
    found = []
    for node in model.graph.node:
        if not _is_popcount(node):
            continue
        inst = getCustomOp(node)
        mw = int(inst.get_nodeattr("MW"))
        declared = model.get_tensor_datatype(node.output[0])
        if not _fits(declared, 0, mw):
            found.append({"node": node.name, "tensor": node.output[0], "field": "output", "declared": declared.name,
                          "range": [0, mw]})
        acc = DataType[inst.get_nodeattr("accDataType")]
        if not _fits(acc, 0, mw):
            found.append({"node": node.name, "tensor": f"{node.output[0]} (accumulator)", "field": "accDataType",
                          "declared": acc.name, "range": [0, mw]})
    return found


class CorrectPopcountDatatypes(Transformation):
    """Widen each XNOR-popcount output (also where it is consumed) and accumulator to the smallest UINT type
    holding ``0..MW``. finn-plus's HLS layer accumulates an un-thresholded layer in its output type, so the output
    is what the hardware needs; the accumulator type is widened too so that the graph says what it computes and
    FINN's estimates count the right width.

    ``self.corrections`` lists what was changed (node, tensor, field, old and new type), for the build manifest.
    """

    def __init__(self) -> None:
        super().__init__()
        self.corrections: list[dict[str, Any]] = []

    def apply(self, model: ModelWrapper) -> tuple[ModelWrapper, bool]:
        for bad in popcount_range_violations(model):
            new = DataType[f"UINT{int(bad['range'][1]).bit_length()}"]
            node = model.get_node_from_name(bad["node"])
            if bad["field"] == "accDataType":
                getCustomOp(node).set_nodeattr("accDataType", new.name)
            else:
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


# --- padded binary convolutions (MobileNet's depthwise layers) -----------------------------------------------------
#
# FINN streams a BIPOLAR tensor as one bit per value, bit 0 standing for -1 (``ConvertBipolarMatMulToXnorPopcount``
# turns the stream into BINARY {0, 1}, bit 0 = 0 = bipolar -1), and FINN's padding hardware writes all-zero bits
# (finn-rtllib ``fmpadding.sv``: ``B.dat <= !fwd? '0 : ...``; finn-hlslib ``FMPadding`` in ``streamtools.h``:
# ``outData = 0``). A padded binary
# layer is therefore exact only when (a) the network was trained with -1 padding (hwq's binary MobileNet) and (b)
# the pad is expressed as 0 in the BINARY domain, where FMPadding's Python execution (``np.pad`` with 0) and the
# hardware agree. The passes below do that; a bipolar stream padded with anything else is a MappingError.

#: Nodes that move values without changing them, through which a stream's encoding can be followed.
_VALUE_MOVERS = ("Im2Col", "Transpose", "Reshape")


def _pad_constant(model: ModelWrapper, pad) -> float:
    if len(pad.input) > 2 and pad.input[2]:
        value = model.get_initializer(pad.input[2])
        if value is None:
            raise MappingError(f"node '{pad.name}' (Pad): the pad value is not a constant")
        return float(np.asarray(value).reshape(-1)[0]) if np.size(value) else 0.0
    return 0.0


def _pad_amounts(model: ModelWrapper, pad) -> list[int] | None:
    """The ``[begin..., end...]`` pads of every axis of a Pad node (``axes`` input resolved), or None."""
    pads = model.get_initializer(pad.input[1]) if len(pad.input) > 1 else None
    shape = model.get_tensor_shape(pad.input[0])
    if pads is None or shape is None:
        return None
    rank = len(shape)
    pads = [int(p) for p in np.asarray(pads).reshape(-1)]
    if len(pad.input) > 3 and pad.input[3]:
        axes = model.get_initializer(pad.input[3])
        if axes is None:
            return None
        full = [0] * (2 * rank)
        for i, axis in enumerate(int(a) % rank for a in np.asarray(axes).reshape(-1)):
            full[axis], full[rank + axis] = pads[i], pads[len(pads) // 2 + i]
        return full
    return pads if len(pads) == 2 * rank else None


class AbsorbPadIntoIm2Col(Transformation):
    """Fold a constant Pad of the spatial axes into the ``Im2Col`` that consumes it (``pad_amount``, ``pad_value``).

    Matches ``Pad (NCHW) -> Transpose(0, 2, 3, 1) -> Im2Col`` (what lowering an explicitly padded convolution
    leaves, e.g. MobileNet's ``ConstantPad2d(1, -1) -> Conv``) and ``Pad (NHWC) -> Im2Col``, when the Im2Col does
    not pad already and the pad value is an integer (Im2Col's ``pad_value``). The Pad is removed; the Transposes
    it stood between then cancel (``AbsorbConsecutiveTransposes``). The computation is unchanged: Im2Col pads the
    same pixels with the same value. ``InferConvInpGen`` later maps the padding to an FMPadding layer, which it
    accepts only for a pad value 0 (see :class:`ConvertBipolarDepthwiseToBinaryInput` for bipolar streams).
    """

    def apply(self, model: ModelWrapper) -> tuple[ModelWrapper, bool]:
        for pad in model.get_nodes_by_op_type("Pad"):
            mode = next((a.s.decode() for a in pad.attribute if a.name == "mode"), "constant")
            consumers = model.find_consumers(pad.output[0]) or []
            amounts = _pad_amounts(model, pad)
            if mode != "constant" or len(consumers) != 1 or amounts is None or len(amounts) != 8 \
                    or min(amounts) < 0:
                continue
            transpose, im2col = None, consumers[0]
            if im2col.op_type == "Transpose":
                perm = next((list(a.ints) for a in im2col.attribute if a.name == "perm"), None)
                after = model.find_consumers(im2col.output[0]) or []
                if perm != [0, 2, 3, 1] or len(after) != 1:
                    continue
                transpose, im2col = im2col, after[0]
                h, w = 2, 3  # the Pad works on NCHW
            else:
                h, w = 1, 2  # the Pad works on NHWC
            if im2col.op_type != "Im2Col":
                continue
            inst = getCustomOp(im2col)
            spatial = {h, w, h + 4, w + 4}
            value = _pad_constant(model, pad)
            if any(amounts[i] for i in range(8) if i not in spatial) or any(inst.get_nodeattr("pad_amount")) \
                    or value != int(value):
                continue
            inst.set_nodeattr("pad_amount", [amounts[h], amounts[w], amounts[h + 4], amounts[w + 4]])
            inst.set_nodeattr("pad_value", int(value))
            source = pad.input[0]
            dtype = model.get_tensor_datatype(source)
            if transpose is not None:
                transpose.input[0] = source
                n, c, hh, ww = model.get_tensor_shape(source)
                model.set_tensor_shape(transpose.output[0], [n, hh, ww, c])
                model.set_tensor_datatype(transpose.output[0], dtype)
            else:
                im2col.input[0] = source
            n, hh, ww, c = model.get_tensor_shape(im2col.input[0])
            inst.set_nodeattr("input_shape", f"({n},{hh},{ww},{c})")
            model.graph.node.remove(pad)
            return model, True
        return model, False


def _bipolar_threshold_chain(model: ModelWrapper, tensor: str, user: str) -> tuple[Any, list[Any]]:
    """The bipolar MultiThreshold producing ``tensor`` and the value-moving nodes (Im2Col, Transpose, Reshape)
    between them, each tensor on the way read by one node only; MappingError naming ``user`` otherwise."""
    chain = []
    while True:
        producer = model.find_producer(tensor)
        if len(model.find_consumers(tensor) or []) != 1:
            raise MappingError(f"node '{user}': its bipolar input '{tensor}' also feeds other nodes; hwq converts "
                               "the stream of a binary depthwise layer to 0/1 only when nothing else reads it")
        if producer is None:
            raise MappingError(f"node '{user}': its bipolar input comes from the graph input, not from a bipolar "
                               "activation (MultiThreshold)")
        if producer.op_type == "MultiThreshold":
            inst = getCustomOp(producer)
            if (inst.get_nodeattr("out_dtype") != "BIPOLAR" or inst.get_nodeattr("out_scale") != 2.0
                    or inst.get_nodeattr("out_bias") != -1.0):
                raise MappingError(f"node '{user}': its input comes from '{producer.name}', which is not a "
                                   "bipolar activation (out_scale 2, out_bias -1)")
            return producer, chain
        if producer.op_type not in _VALUE_MOVERS:
            raise MappingError(f"node '{user}': its bipolar input passes through '{producer.name}' "
                               f"({producer.op_type}); expected only {', '.join(_VALUE_MOVERS)} after the activation")
        chain.append(producer)
        tensor = producer.input[0]


def binary_pad_value(im2col, user: str) -> int:
    """The pad value of a padding Im2Col on a bipolar stream, in the stream's BINARY encoding: bipolar -1 is bit 0.

    Any other bipolar pad value (0 in particular, what a convolution's own ``padding=1`` means) has no 1-bit
    encoding, so FINN cannot pad with it: MappingError naming the Im2Col and ``user``."""
    inst = getCustomOp(im2col)
    value = inst.get_nodeattr("pad_value")
    if not any(inst.get_nodeattr("pad_amount")):
        return value
    if value != -1:
        raise MappingError(
            f"node '{im2col.name}' (padding for '{user}') pads a bipolar stream with {value}, which a 1-bit stream "
            "cannot hold (its bit 0 is -1); train the binary network with -1 padding (hwq's MobileNet "
            "pad_value=-1)")
    return 0


class ConvertBipolarDepthwiseToBinaryInput(Transformation):
    """Give each binary depthwise convolution (a MatMul with FINN's ``dw`` sparsity annotation, bipolar input and
    weights) a BINARY ``{0, 1}`` input, so that FINN maps it to a VVAU instead of an XNOR-popcount layer.

    ``ConvertBipolarMatMulToXnorPopcount`` would turn the block-sparse depthwise MatMul into an XNOR layer over all
    ``k*k*C`` inputs, which is wrong (the off-diagonal zeros are not bipolar weights). Instead, with ``x = 2b - 1``
    (bipolar ``x``, its bit ``b``), ``sum_k w_k x_k = 2 sum_k w_k b_k - S_c`` where ``S_c`` is the sum of channel
    ``c``'s weights. The pass

    - makes the producing bipolar MultiThreshold output ``b`` (BINARY, out_scale 1, out_bias 0), as the XNOR
      conversion does for its inputs;
    - rewrites the pad value of a padding Im2Col on the way from bipolar -1 to binary 0 (:func:`binary_pad_value`;
      any other bipolar pad value is a MappingError), so that FMPadding's Python execution and its hardware,
      which pads with bit 0, both give what the QONNX model computes;
    - keeps the MatMul (now ``BINARY x BIPOLAR``, integers ``sum_k w_k b_k``) and appends ``Mul(2)`` and the
      per-channel ``Add(-S)``, which streamlining absorbs into the next thresholds, as it absorbs the XNOR
      conversion's ``Mul(2), Add(-K)``.

    ``InferVectorVectorActivation`` then makes the MatMul a VVAU with BINARY inputs and bipolar weights (integer
    multiply-accumulate, no XNOR). ``self.converted`` lists the MatMuls converted.
    """

    def __init__(self) -> None:
        super().__init__()
        self.converted: list[str] = []

    def apply(self, model: ModelWrapper) -> tuple[ModelWrapper, bool]:
        for index, node in enumerate(model.graph.node):
            sparsity = model.get_tensor_sparsity(node.input[1]) if node.op_type == "MatMul" else None
            if not sparsity or "dw" not in sparsity \
                    or model.get_tensor_datatype(node.input[0]) != DataType["BIPOLAR"] \
                    or model.get_tensor_datatype(node.input[1]) != DataType["BIPOLAR"]:
                continue
            name = node.name or node.output[0]
            weights = model.get_initializer(node.input[1])
            if weights is None or not np.isin(weights, (-1.0, 0.0, 1.0)).all():
                raise MappingError(f"node '{name}': a binary depthwise MatMul needs constant weights in -1/0/+1")
            threshold, chain = _bipolar_threshold_chain(model, node.input[0], name)
            for mover in chain:
                if mover.op_type == "Im2Col":
                    getCustomOp(mover).set_nodeattr("pad_value", binary_pad_value(mover, name))
            inst = getCustomOp(threshold)
            inst.set_nodeattr("out_dtype", "BINARY")
            inst.set_nodeattr("out_scale", 1.0)
            inst.set_nodeattr("out_bias", 0.0)
            for moved in [threshold, *chain]:
                model.set_tensor_datatype(moved.output[0], DataType["BINARY"])
            # m = sum_k w_k b_k  ->  y = 2 m - S (per channel): the bipolar result the thresholds expect
            shape = model.get_tensor_shape(node.output[0])
            integers, doubled = model.make_new_valueinfo_name(), model.make_new_valueinfo_name()
            two, minus_sums = model.make_new_valueinfo_name(), model.make_new_valueinfo_name()
            model.set_initializer(two, np.asarray(2.0, dtype=np.float32))
            model.set_initializer(minus_sums, -weights.sum(axis=0).astype(np.float32))
            out = node.output[0]
            node.output[0] = integers
            for tensor in (integers, doubled):
                model.set_tensor_shape(tensor, shape)
            model.graph.node.insert(index + 1, helper.make_node("Mul", [integers, two], [doubled]))
            model.graph.node.insert(index + 2, helper.make_node("Add", [doubled, minus_sums], [out]))
            self.converted.append(name)
            return model, True
        return model, False


def _padding_im2cols(model: ModelWrapper, tensor: str) -> list[Any]:
    """The padding Im2Col nodes among the value movers directly upstream of ``tensor``."""
    found = []
    while (producer := model.find_producer(tensor)) is not None and producer.op_type in _VALUE_MOVERS:
        if producer.op_type == "Im2Col" and any(getCustomOp(producer).get_nodeattr("pad_amount")):
            found.append(producer)
        tensor = producer.input[0]
    return found


def check_bipolar_pads(model: ModelWrapper) -> None:
    """Before the XNOR conversion: every padding Im2Col in front of a bipolar x bipolar MatMul must pad with -1,
    the only bipolar value a 1-bit stream holds (:func:`binary_pad_value`); MappingError otherwise."""
    for node in model.get_nodes_by_op_type("MatMul"):
        if model.get_tensor_datatype(node.input[0]) == DataType["BIPOLAR"] \
                and model.get_tensor_datatype(node.input[1]) == DataType["BIPOLAR"]:
            for im2col in _padding_im2cols(model, node.input[0]):
                binary_pad_value(im2col, node.name or node.output[0])


def binary_depthwise_matmuls(model: ModelWrapper) -> list[str]:
    """Depthwise MatMuls (FINN's ``dw`` sparsity annotation) with a BINARY input: those
    :class:`ConvertBipolarDepthwiseToBinaryInput` made (FINN maps them to VVAUs)."""
    return [n.name for n in model.get_nodes_by_op_type("MatMul")
            if "dw" in (model.get_tensor_sparsity(n.input[1]) or {})
            and model.get_tensor_datatype(n.input[0]) == DataType["BINARY"]]


class BinaryPadsForXnorConvs(Transformation):
    """Express the padding of XNOR-popcount convolutions in their BINARY stream (run after
    ``ConvertBipolarMatMulToXnorPopcount``, with :func:`check_bipolar_pads` before it).

    The XNOR conversion makes the input stream BINARY but leaves an Im2Col's ``pad_value`` as it was, the bipolar
    -1 of an absorbed ``Pad(-1)``; in the BINARY stream that is 0, bit 0: exact in Python and in hardware. (A -1 in
    a 0/1 stream has no other meaning, so the pass can run more than once.)
    """

    def apply(self, model: ModelWrapper) -> tuple[ModelWrapper, bool]:
        for node in model.get_nodes_by_op_type("XnorPopcountMatMul"):
            for im2col in _padding_im2cols(model, node.input[0]):
                if getCustomOp(im2col).get_nodeattr("pad_value") == -1:
                    getCustomOp(im2col).set_nodeattr("pad_value", 0)
        return model, False
