# SPDX-License-Identifier: BSD-3-Clause
"""The build's two verification gates.

**Bit-exactness**: the abstract HW-layer graph (before layer specialisation, when every layer still executes in
Python) runs on held-out ``uint8`` test images next to the QONNX model (on ``pixels / 255``). The classes must be
identical, and so must the integer outputs: each layer's integer output (a bipolar activation ``b`` in QONNX is
``(b + 1) / 2`` in FINN's binary encoding where it feeds an XNOR layer, ``b`` where FINN keeps it BIPOLAR, as in
front of an integer layer; an XNOR popcount ``p`` over ``MW`` inputs is the dot product
``2p - MW``). The first differing tensor is named.

**Integer range**: every tensor must fit the datatype FINN declared for it. The values seen while running the
HW graph are checked against the *final* graph's declarations (after folding and bit-width minimisation), and
XNOR-popcount outputs are also checked against their exact range ``0..MW``, which catches finn-plus 1.6.1's
INT7 declaration even when no test image reaches 64; thresholded XNOR-popcount layers must have thresholds in
``0..MW+1`` and a threshold type (the HLS MVAU's comparison and accumulator type) holding ``0..MW``.

>>> report = check_bit_exact(qonnx_model, hw_model, images)        # doctest: +SKIP
>>> report["classes_match"], report["first_difference"]            # doctest: +SKIP
(1.0, None)
"""

from __future__ import annotations

from typing import Any

import numpy as np
from qonnx.core.datatype import DataType
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.core.onnx_exec import execute_onnx
from qonnx.custom_op.registry import getCustomOp

from hwq.classes import FLOAT, INTEGER, top_classes
from hwq.dataflow.errors import BitExactnessError, IntegerRangeError
from hwq.dataflow.floor_rounding import FLOOR_TIE_TOLERANCE, tie_tolerant_reference
from hwq.dataflow.passes_branches import TIE_TOLERANCE
from hwq.dataflow.round_ties import round_tie_reference
from hwq.export.scores import FinalMatMul, final_matmul, integer_dot, quant_scale, run_qonnx_graph
from hwq.dataflow.input_convention import InputConvention, find_input_convention
from hwq.dataflow.passes import popcount_range_violations, popcount_threshold_violations

#: HW layers whose outputs are compared with QONNX layer outputs (in graph order).
COMPUTE_OPS = ("MVAU", "VVAU", "Thresholding")


# --- running the graphs ------------------------------------------------------------------------------------------
def run_hw_graph(model: ModelWrapper, images: np.ndarray, keep: list[str]) -> tuple[dict, dict, str]:
    """Execute a FINN HW graph on ``images``: (``keep`` tensors stacked, observed (min, max) of every tensor, which
    executor computed them).

    The NumPy reference of hwq's layers (:mod:`hwq.rtl.reference`, batched; the functional model of the emulated
    board and of the open backend's RTL checks) computes every tensor for all images, once qonnx's execution of
    the graph (image by image, FINN's own layer code) gave the same values for every tensor on the first
    :data:`hwq.accelerator_model.REFERENCE_CHECKS` images (as many as the emulated board's model checks). A graph
    with a node the reference does not model, or a tensor on which the two differ, is executed by qonnx for every
    image (the third value says which, and why)."""
    from hwq.accelerator_model import REFERENCE_CHECKS
    from hwq.rtl.graph import run_graph_streams
    from hwq.rtl.layers import UnsupportedLayerError, layers_from_model

    try:
        graph = layers_from_model(model)
    except UnsupportedLayerError as err:
        return (*run_hw_graph_qonnx(model, images, keep), f"qonnx (the NumPy reference does not model it: {err})")
    checks = min(len(images), REFERENCE_CHECKS)
    expected, _ = run_hw_graph_qonnx(model, images[:checks], list(graph.tensors))
    streams = run_graph_streams(graph, np.asarray(images).reshape(len(images), -1).astype(np.int64))
    values = {name: streams[(src.layer, src.port)] for name, src in graph.tensors.items()}
    for name, value in values.items():
        want, got = expected[name].reshape(checks, -1), value[:checks]
        if np.array_equal(want, got):
            continue
        # a BIPOLAR stream: the reference carries its bits b, FINN's execution may hold the values 2b - 1
        if model.get_tensor_datatype(name) == DataType["BIPOLAR"] and np.array_equal(want, 2 * got - 1):
            values[name] = 2 * value - 1
            continue
        return (*run_hw_graph_qonnx(model, images, keep),
                f"qonnx (the NumPy reference differs from it on tensor '{name}' of the first {checks} images)")
    kept = {name: values[name].reshape((len(images), *model.get_tensor_shape(name)[1:])) for name in keep}
    ranges = {name: (float(v.min()), float(v.max())) for name, v in values.items() if v.size}
    for init in model.graph.initializer:      # as qonnx's execution context holds them (weights, thresholds)
        value = model.get_initializer(init.name)
        if value.size and np.issubdtype(value.dtype, np.number):
            ranges.setdefault(init.name, (float(value.min()), float(value.max())))
    return kept, ranges, (f"hwq.rtl.reference (NumPy, batched), equal to qonnx's execution on every tensor of the "
                          f"first {checks} images")


def run_hw_graph_qonnx(model: ModelWrapper, images: np.ndarray, keep: list[str]) -> tuple[dict, dict]:
    """qonnx's execution of a FINN graph, image by image: (``keep`` tensors stacked, observed (min, max) of every
    tensor)."""
    from hwq.dataflow.finn_compat import import_finn_layers

    import_finn_layers()
    in_name, shape = model.graph.input[0].name, model.get_tensor_shape(model.graph.input[0].name)
    kept: dict[str, list] = {name: [] for name in keep}
    ranges: dict[str, tuple[float, float]] = {}
    for image in images:
        ctx = execute_onnx(model, {in_name: image.reshape(shape).astype(np.float32)}, return_full_exec_context=True)
        for name, value in ctx.items():
            if name in kept:
                kept[name].append(np.asarray(value))
            value = np.asarray(value)
            if value.size and np.issubdtype(value.dtype, np.number):
                lo, hi = float(value.min()), float(value.max())
                old = ranges.get(name, (lo, hi))
                ranges[name] = (min(lo, old[0]), max(hi, old[1]))
    return {k: np.concatenate(v) for k, v in kept.items()}, ranges


# --- which tensors correspond ------------------------------------------------------------------------------------
def qonnx_layer_outputs(model: ModelWrapper) -> tuple[list[dict], FinalMatMul | None]:
    """QONNX activation-quantizer outputs (in order, without the input quantizer; a MultiThreshold's count counts as
    one) and the final MatMul.

    Each entry: ``tensor``, ``scale`` (to turn values into integers), ``bipolar``. The final MatMul
    (:func:`hwq.export.scores.final_matmul`) carries its inputs and their scales, so its integer dot product can
    be recomputed exactly.
    """
    initial = {i.name for i in model.graph.initializer}
    graph_in = model.graph.input[0].name
    acts = []
    for node in model.graph.node:
        if node.op_type in ("BipolarQuant", "Quant") and node.input[0] not in initial and node.input[0] != graph_in:
            acts.append({"tensor": node.output[0], "scale": quant_scale(model, node),
                         "bipolar": node.op_type == "BipolarQuant"})
        elif node.op_type == "MultiThreshold" and node.input[0] not in initial:
            # a threshold activation (N2UQ, LQ-Nets): its count is the integer the HW layer outputs
            acts.append({"tensor": node.output[0], "scale": np.asarray(1.0), "bipolar": False})
    return acts, final_matmul(model)


def hw_layer_outputs(model: ModelWrapper) -> list[Any]:
    """The compute layers (MVAU, VVAU, Thresholding) of a HW graph, in order."""
    return [n for n in model.graph.node if n.op_type.split("_")[0] in COMPUTE_OPS]


def _in_layer_order(qonnx_model: ModelWrapper, acts: list[dict], layers: list[Any]) -> list[dict]:
    """``acts`` in the order of the HW ``layers`` they are the outputs of, when each layer was made from a distinct
    one of their quantizers (:mod:`hwq.dataflow.provenance`; the branches of a concat may come in another order
    on the two sides); else in graph order, as they are."""
    from hwq.dataflow.provenance import user_node

    by_quant = {qonnx_model.find_producer(a["tensor"]).name: a for a in acts}
    made_from = [user_node(n) for n in layers]
    names = [m[0] for m in made_from if m is not None and m[1] in ("Quant", "BipolarQuant")]
    if len(names) == len(layers) and len(set(names)) == len(names) and set(names) == set(by_quant):
        return [by_quant[name] for name in names]
    return acts


def _to_nhwc(x: np.ndarray) -> np.ndarray:
    return x.transpose(0, 2, 3, 1) if x.ndim == 4 else x


# --- the gates -----------------------------------------------------------------------------------------------------
def check_bit_exact(qonnx_model: ModelWrapper, hw_model: ModelWrapper, images: np.ndarray,
                    convention: InputConvention | None = None) -> dict[str, Any]:
    """Compare the HW graph on ``uint8`` ``images`` (N, C, H, W) with the QONNX model on what it expects for them
    (``convention.graph_input(images)``; default ``images / 255``).

    Returns a report (also holding ``observed_ranges`` of every HW tensor, used by the integer-range gate);
    ``layerwise`` says whether every layer's integer output was compared or only the classes and final scores
    (``compared`` says it in words). Raises :class:`BitExactnessError` naming the first differing tensor.
    """
    convention = convention or find_input_convention(qonnx_model)
    # FLOOR quantizers floor a float accumulator, whose exact ties may arrive a rounding error below the integer
    qonnx_model, floor_quants = tie_tolerant_reference(qonnx_model)
    # ROUND quantizers: a float32 value within rounding of a half step is rounded half to even, as the hardware's
    # thresholds decide that tie (hwq.dataflow.round_ties); the masks count those values
    qonnx_model, tie_masks = round_tie_reference(qonnx_model)
    acts, final = qonnx_layer_outputs(qonnx_model)
    layers = hw_layer_outputs(hw_model)
    q_out, h_out = qonnx_model.graph.output[0].name, hw_model.graph.output[0].name
    q_keep = [q_out] + [a["tensor"] for a in acts] + ([final.act, final.weight, final.tensor] if final else [])
    q_keep += tie_masks
    h_keep = [h_out] + [n.output[0] for n in layers]
    q_in_shape = qonnx_model.get_tensor_shape(qonnx_model.graph.input[0].name)[1:]
    ref = run_qonnx_graph(qonnx_model, convention.graph_input(images).reshape(len(images), *q_in_shape),
                          list(dict.fromkeys(q_keep)),
                          constant=(final.weight,) if final else ())
    hw_images = images.astype(np.float32)
    hw_shape = hw_model.get_tensor_shape(hw_model.graph.input[0].name)
    if images.ndim == 4 and len(hw_shape) == 4 and tuple(hw_shape[1:]) == images.shape[2:] + images.shape[1:2]:
        hw_images = hw_images.transpose(0, 2, 3, 1)  # the host-side NCHW -> NHWC Transpose
    hw, ranges, executor = run_hw_graph(hw_model, hw_images, h_keep)

    pairs: list[tuple[str, str, np.ndarray, np.ndarray]] = []  # (qonnx tensor, hw tensor, expected, got)
    dot = integer_dot(ref, final) if final is not None else None
    layerwise = dot is not None and len(acts) == len(layers) - 1
    if layerwise:
        acts = _in_layer_order(qonnx_model, acts, layers[:-1])
    # as long as each pair holds as many values (a branching graph whose layers could not be paired by the user's
    # node they were made from may order its branches differently on the two sides; then only the final integers
    # and the classes are compared)
    layerwise = layerwise and all(ref[a["tensor"]].size == hw[n.output[0]].size for a, n in zip(acts, layers))
    if layerwise:
        for act, node in zip(acts, layers[:-1]):
            value = ref[act["tensor"]]
            # FINN's binary encoding (0/1) where the stream feeds an XNOR layer; a bipolar stream into an integer
            # MVAU (mixed precision: W2 after A1) stays BIPOLAR, its values -1/+1 on both sides
            encoded = act["bipolar"] and hw_model.get_tensor_datatype(node.output[0]) != DataType["BIPOLAR"]
            expected = (value + 1) / 2 if encoded else value if act["bipolar"] else value / act["scale"]
            pairs.append((act["tensor"], node.output[0], _to_nhwc(np.rint(expected)), hw[node.output[0]]))
    if dot is not None:
        last = getCustomOp(layers[-1])
        hw_dot = dot
        if layers[-1].op_type.startswith("MVAU") and last.get_nodeattr("binaryXnorMode"):
            hw_dot = (dot + int(last.get_nodeattr("MW"))) // 2  # popcount = (dot + MW) / 2
        pairs.append((final.tensor + " (as integers)", layers[-1].output[0], hw_dot, hw[layers[-1].output[0]]))
    # The class rule (hwq.classes): the first arg-max of the classifier's integer scores, as FINN's label
    # selection takes it; exact ties go to the lowest index on both sides, so there is nothing to forgive.
    # Without integer scores (a classifier behind an average pool) the reference is float32 logits, in which two
    # classes with the same integer accumulator can differ by rounding: a tie then means within float32 precision.
    ref_scores = ref[q_out].reshape(len(images), -1)
    hw_classes = hw[h_out].reshape(len(images), -1)[:, 0].astype(np.int64)
    if dot is not None and final.orientation is not None:
        ref_classes = top_classes(final.orientation * dot)
        tied = np.zeros(len(images), dtype=bool)
    else:
        ref_classes = top_classes(ref_scores)
        rows = np.arange(len(images))
        tol = 1e-5 * np.abs(ref_scores).max(1)
        tied = (ref_classes != hw_classes) & (ref_scores[rows, hw_classes] >= ref_scores.max(1) - tol)
    pairs.append((q_out + " (class)", h_out, np.where(tied, hw_classes, ref_classes), hw_classes))

    first = None
    compared = []
    for q_name, h_name, expected, got in pairs:
        got = got.reshape(expected.shape)
        differ = (expected != got).reshape(len(images), -1)
        bad = np.flatnonzero(differ.any(1))
        compared.append({"qonnx": q_name, "hw": h_name, "images_differing": int(len(bad)),
                         "values_differing": int(differ.sum()), "values": int(differ.size)})
        if len(bad) and first is None:
            first = {**compared[-1], "image": int(bad[0])}
    report = {
        "n": int(len(images)), "layerwise": layerwise, "integer_output_compared": dot is not None,
        "compared": _what_was_compared(layerwise, dot is not None, len(acts), len(layers)),
        "class_rule": INTEGER if dot is not None and final.orientation is not None else FLOAT,
        "classes_match": float(np.mean(ref_classes == hw_classes)), "ties_broken_differently": int(tied.sum()),
        "tensors": compared,
        "first_difference": first, "passed": first is None, "hw_graph_executor": executor,
    }
    if floor_quants:
        report["floor_ties"] = (f"{floor_quants} FLOOR quantizer(s) of the reference floor x/s raised by "
                                f"{FLOOR_TIE_TOLERANCE:g} * max(1, |x/s|): an exact tie that the float accumulator "
                                f"(or FINN's dropping of a scale within 1e-5 of 1) puts just below its integer "
                                f"counts as that integer, as in the hardware")
    if tie_masks:
        at_tie = int(sum(ref[m].sum() for m in tie_masks))
        report["round_ties"] = {
            "values": at_tie, "quantizers": len(tie_masks), "tolerance": TIE_TOLERANCE,
            "rule": (f"{at_tie} value(s) of {len(tie_masks)} ROUND quantizer(s) of the reference lay within "
                     f"{TIE_TOLERANCE:g} * max(1, |x/s|) of a half step and were rounded half to even, as the "
                     f"hardware's thresholds decide a tie")}
    report["observed_ranges"] = ranges
    if first is not None:
        raise BitExactnessError(
            f"HW tensor '{first['hw']}' differs from QONNX tensor '{first['qonnx']}' on {first['images_differing']} "
            f"of {len(images)} test images (first: image {first['image']}; {first['values_differing']} of "
            f"{first['values']} values)")
    return report


def _what_was_compared(layerwise: bool, integer_output: bool, qonnx_acts: int, hw_layers: int) -> str:
    """The gate's claim in words, for the CLI line and the manifest."""
    if layerwise:
        return f"layer-wise: the integer output of each of {hw_layers} layers, and the classes"
    why = (f"the QONNX graph has {qonnx_acts} activation quantizers for {hw_layers} HW compute layers, so the "
           f"layers do not pair up")
    if integer_output:
        return f"the final integer scores and the classes only ({why})"
    return f"the classes only (no integer scores found; {why})"


def wrap_to_datatype(values: np.ndarray, dt: DataType) -> np.ndarray:
    """What bit-accurate hardware holds when ``values`` are stored in ``dt`` (two's-complement wrap-around).

    >>> wrap_to_datatype(np.array([63, 64]), DataType["INT7"])
    array([ 63, -64])
    """
    bits = dt.bitwidth()
    v = np.asarray(values).astype(np.int64) - int(dt.min())
    return v % (1 << bits) + int(dt.min())


def check_integer_ranges(model: ModelWrapper, observed: dict[str, tuple[float, float]]) -> dict[str, Any]:
    """Check every integer-typed tensor of ``model`` against the values ``observed`` and, for XNOR popcounts,
    against their exact range. Raises :class:`IntegerRangeError` naming the first tensor that does not fit."""
    problems = [{**p, "source": "popcount range"} for p in popcount_range_violations(model)]
    problems += [{**p, "source": p.pop("expected")} for p in popcount_threshold_violations(model)]
    checked = 0
    producers = {o: n.name for n in model.graph.node for o in n.output}
    names = [t.name for t in model.graph.value_info] + [t.name for t in model.graph.output] \
        + [t.name for t in model.graph.input] + [t.name for t in model.graph.initializer]
    for name in names:
        dt = model.get_tensor_datatype(name)
        if not dt.is_integer():
            continue
        init = model.get_initializer(name)
        if init is not None and init.size:
            lo, hi = float(init.min()), float(init.max())
        else:
            lo, hi = observed.get(name, (None, None))
        if lo is None:
            continue
        checked += 1
        if lo < dt.min() or hi > dt.max():
            problems.append({"node": producers.get(name, "(initializer)"), "tensor": name, "declared": dt.name,
                             "range": [lo, hi], "source": "observed values"})
    report = {"tensors_checked": checked, "problems": problems, "passed": not problems}
    if problems:
        p = problems[0]
        raise IntegerRangeError(
            f"node '{p['node']}': tensor '{p['tensor']}' is declared {p['declared']} but holds "
            f"{p['range'][0]:g}..{p['range'][1]:g} ({p['source']})")
    return report
