# SPDX-License-Identifier: BSD-3-Clause
"""A QONNX graph's class scores in the integer domain, for the class rule of :mod:`hwq.classes`.

An hwq graph ends ``Quant (activation) -> [Flatten/Reshape] -> MatMul <- Quant (weights)`` (the activation may
also be a ``MultiThreshold`` and its ``Mul`` by a step), then the
TensorNorm's scalar ``Sub/Div/Mul/Add``. The classifier's integer scores are the MatMul's inputs divided by their
quantizers' scales, multiplied as integers: exactly what FINN's streamlined graph hands to its label selection.
They are trusted only when they reproduce the MatMul's float output to within half an integer step, and are
oriented by the sign of the scalar chain after it (a negative scale reverses the ranking).

>>> scores = qonnx_scores(ModelWrapper("runs/x/model.onnx"), images)   # doctest: +SKIP
>>> scores.classes()[:3]                                                # doctest: +SKIP
array([7, 2, 1])
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from hwq.classes import Scores

#: The float output may differ from ``scale * integer`` by float rounding; half a step still names one integer.
HALF_STEP = 0.5
#: Elementwise ops with a scalar constant that may follow the classifier, and whether they can reverse a ranking.
_SCALAR_OPS = {"Mul": True, "Div": True, "Add": False, "Sub": False}


@dataclass(frozen=True)
class FinalMatMul:
    """The classifier MatMul of a QONNX graph and what is needed to recompute it in integers."""

    tensor: str            # the MatMul's output
    act: str               # its activation input (a quantizer's output, possibly through Flatten/Reshape)
    weight: str            # its weight input (a weight quantizer's output)
    act_scale: np.ndarray  # the activation quantizer's scale
    weight_scale: np.ndarray
    #: +1 or -1: the sign of the scalar chain from the MatMul to the graph output; None if it is not one.
    orientation: int | None


def run_qonnx_graph(model, inputs: np.ndarray, keep: list[str], batch: int = 50,
                    constant: tuple[str, ...] = ()) -> dict[str, np.ndarray]:
    """Execute a QONNX graph in batches; returns the ``keep`` tensors stacked over all inputs (the ``constant``
    ones, such as quantized weights, once)."""
    from qonnx.core.onnx_exec import execute_onnx
    from qonnx.transformation.change_batchsize import ChangeBatchSize
    from qonnx.transformation.infer_shapes import InferShapes

    in_name = model.graph.input[0].name
    kept: dict[str, list] = {name: [] for name in keep}
    sized: dict[int, Any] = {}
    for start in range(0, len(inputs), batch):
        chunk = inputs[start:start + batch].astype(np.float32)
        if len(chunk) not in sized:
            sized[len(chunk)] = model.transform(ChangeBatchSize(len(chunk))).transform(InferShapes())
        ctx = execute_onnx(sized[len(chunk)], {in_name: chunk}, return_full_exec_context=True)
        for name in kept:
            kept[name].append(np.asarray(ctx[name]))
    return {k: v[0] if k in constant else np.concatenate(v) for k, v in kept.items()}


def quant_scale(model, quant) -> np.ndarray:
    """The scale input of a ``Quant``/``BipolarQuant`` node (1 where it has none)."""
    scale = model.get_initializer(quant.input[1]) if len(quant.input) > 1 else None
    return np.asarray(1.0 if scale is None else scale, dtype=np.float64)


def final_matmul(model) -> FinalMatMul | None:
    """The last MatMul, when both its inputs come from quantizers (the activation's found through a Flatten or
    Reshape, e.g. MobileNet's flatten -> linear, and through a Concat of quantizers with one scale); None
    otherwise."""
    matmuls = [n for n in model.graph.node if n.op_type == "MatMul"]
    if not matmuls:
        return None
    mm = matmuls[-1]
    acts, w = _act_quants(model, mm.input[0]), model.find_producer(mm.input[1])
    if not acts or w is None or not w.op_type.endswith("Quant"):
        return None
    scales = [quant_scale(model, a) for a in acts]
    if any(s.shape != scales[0].shape or np.any(s != scales[0]) for s in scales[1:]):
        return None  # concatenated activations on different grids: no one integer scale
    return FinalMatMul(tensor=mm.output[0], act=mm.input[0], weight=mm.input[1], act_scale=scales[0],
                       weight_scale=quant_scale(model, w), orientation=_orientation(model, mm.output[0]))


def _act_quants(model, tensor: str) -> list:
    """The quantizers ``tensor`` comes from through Flatten/Reshape and channel Concats; empty when anything
    else computes it."""
    node = model.find_producer(tensor)
    while node is not None and node.op_type in ("Flatten", "Reshape"):
        node = model.find_producer(node.input[0])
    if node is None:
        return []
    if node.op_type == "Concat":
        found = [_act_quants(model, t) for t in node.input]
        return [q for qs in found for q in qs] if all(found) else []
    return [node] if node.op_type.endswith("Quant") or is_threshold_step(model, node) else []


def is_threshold_step(model, node) -> bool:
    """Whether ``node`` is the ``Mul`` by one constant step after a ``MultiThreshold`` (a threshold activation of
    :mod:`hwq.export.multithreshold`): a quantizer whose integers are the threshold counts, its scale input[1]."""
    if node.op_type != "Mul" or len(node.input) != 2:
        return False
    producer, step = model.find_producer(node.input[0]), model.get_initializer(node.input[1])
    return producer is not None and producer.op_type == "MultiThreshold" and step is not None and step.size == 1


def _orientation(model, tensor: str) -> int | None:
    sign, out = 1, model.graph.output[0].name
    while tensor != out:
        consumers = model.find_consumers(tensor)
        if len(consumers) != 1 or consumers[0].op_type not in _SCALAR_OPS:
            return None
        node = consumers[0]
        other = [i for i in node.input if i != tensor]
        const = model.get_initializer(other[0]) if len(other) == 1 else None
        if const is None or const.size != 1:
            return None
        if node.op_type == "Sub" and node.input[1] == tensor:  # c - x reverses the ranking
            sign = -sign
        if _SCALAR_OPS[node.op_type]:
            if float(const.reshape(-1)[0]) == 0:
                return None
            sign *= 1 if float(const.reshape(-1)[0]) > 0 else -1
        tensor = node.output[0]
    return sign


def integer_dot(values: dict[str, np.ndarray], final: FinalMatMul) -> np.ndarray | None:
    """The classifier's integer accumulators (N, C), un-oriented, from executed tensors; None when the MatMul's
    inputs are not on their quantizers' grids with one scale each, or the float MatMul is not their sum."""
    if final.act_scale.size != 1 or final.weight_scale.size != 1:
        return None
    a, w = values[final.act], values[final.weight]
    a_int = np.rint(a.reshape(len(a), -1) / final.act_scale)
    w_int = np.rint(w / final.weight_scale)
    if not (np.allclose(a_int * final.act_scale, a.reshape(len(a), -1), rtol=0, atol=1e-6 * max(1.0, np.abs(a).max()))
            and np.allclose(w_int * final.weight_scale, w, rtol=0, atol=1e-6 * max(1.0, np.abs(w).max()))):
        return None
    dot = a_int @ w_int  # float64, exact: integer sums far below 2^53
    step = float(final.act_scale.reshape(-1)[0]) * float(final.weight_scale.reshape(-1)[0])
    if np.abs(values[final.tensor].reshape(dot.shape) / step - dot).max() >= HALF_STEP:
        return None
    return np.rint(dot).astype(np.int64)


def qonnx_scores(model, inputs: np.ndarray, batch: int = 100, keep: list[str] = ()) -> tuple[Scores, dict]:
    """Execute ``model`` on ``inputs`` (model inputs) and return its scores, with the ``keep`` tensors too."""
    out = model.graph.output[0].name
    final = final_matmul(model)
    wanted = [out, *keep] + ([final.act, final.weight, final.tensor] if final else [])
    values = run_qonnx_graph(model, inputs, list(dict.fromkeys(wanted)), batch,
                             constant=(final.weight,) if final else ())
    return scores_of(model, values, len(inputs)), values


def scores_of(model, values: dict[str, np.ndarray], n: int) -> Scores:
    """The scores of ``n`` inputs from the executed tensors ``values`` of ``model`` (its output, and the
    classifier MatMul's inputs and output where it has one)."""
    final = final_matmul(model)
    logits = values[model.graph.output[0].name].reshape(n, -1)
    integer = None
    if final is not None and final.orientation is not None:
        dot = integer_dot(values, final)
        integer = None if dot is None else final.orientation * dot
    return Scores(logits=logits, integer=integer)
