# SPDX-License-Identifier: BSD-3-Clause
"""Read a user's QONNX file and tidy it the way FINN's own import does, keeping the user's node names.

:func:`load_qonnx` is the build's first contact with a model file, hwq's own export or anyone else's (a raw
Brevitas ``export_qonnx``, either of torch's exporters; a QONNX file from qonnx's converters; a hand-written
graph). It refuses, in one line naming the file: a missing or corrupt file, an unknown node domain
(:mod:`hwq.onnx_check`), a graph that fails ``onnx.checker`` (with the checker's own message), a graph without
QONNX quantizers, one with more than one real input or output, and an activation ``Quant`` with CEIL rounding
(FINN converts every activation quantizer to thresholds as ROUND; FLOOR is built exactly by
:mod:`hwq.dataflow.floor_rounding`; :func:`check_rounding`).

:func:`tidy_qonnx` makes the graph what FINN's conversion expects, as ``qonnx cleanup`` and FINN's
``qonnx_to_finn`` do, and records each pass in the build manifest (``source.import``):

- ``opset_imports``: an opset import for every node domain that lacks one (qonnx ships files without one);
- ``static_inputs``: weights listed as graph inputs (Brevitas' raw export) become plain initializers;
- qonnx's cleanup (shapes, constant folding, unused tensors), but not its renaming passes: node names stay the
  user's, so that every later error can name them; a node without a name is named ``<op>_<index>`` after its
  place in the file;
- ``gemm_to_matmul``: Gemm (torch's dynamo exporter) becomes MatMul + Add, the form FINN's streamlining and hwq's
  layer-wise gate know, so both export paths are compared layer by layer.

The build's gate compares the hardware with the tidied graph; :func:`check_tidy` first runs the tidied graph next
to the file as given on a few inputs and requires the same outputs.

>>> model, report = load_qonnx("tfc_1w1a.onnx")           # doctest: +SKIP
>>> report["passes"]                                        # doctest: +SKIP
['static_inputs', 'cleanup', 'gemm_to_matmul']
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.transformation.base import Transformation

from hwq.dataflow.errors import MappingError, ModelFileError
from hwq.onnx_check import check_domains

QONNX_OPS = ("Quant", "BipolarQuant", "BinaryQuant", "Trunc", "MultiThreshold")


def load_qonnx(path: str | Path) -> tuple[ModelWrapper, dict[str, Any]]:
    """The tidied model of the QONNX file ``path`` and the record of what was done (see the module doc)."""
    path = Path(path)
    if path.is_dir():
        raise ModelFileError(f"{path}: a folder; expected a QONNX file (.onnx) or a run folder holding model.onnx")
    if not path.is_file():
        raise ModelFileError(f"{path}: ONNX file not found")
    try:  # without external data (whose location the file names) until its domains are checked
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as err:  # onnx raises DecodeError, ...
        raise ModelFileError(f"{path}: not a valid ONNX file ({type(err).__name__})") from None
    check_domains(proto, source=path)  # before qonnx, which imports the module a node's domain names
    if any(t.data_location == onnx.TensorProto.EXTERNAL for t in proto.graph.initializer):
        proto = _with_external_data(path)
    added = add_missing_opset_imports(proto)
    try:
        onnx.checker.check_model(proto)
    except Exception as err:  # ValidationError, ...
        text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ModelFileError(f"{path}: not a valid ONNX graph (onnx.checker: {text})") from None
    model = ModelWrapper(proto)
    if not any(n.op_type in QONNX_OPS for n in model.graph.node):
        raise ModelFileError(f"{path}: not a QONNX model (no {'/'.join(QONNX_OPS[:4])} nodes)")
    model, report = tidy_qonnx(model, source=path)
    if added:
        report["passes"].insert(0, "opset_imports")
        report["opset_imports"] = added
    check_rounding(model, path)
    return model, report


def _with_external_data(path: Path) -> onnx.ModelProto:
    """torch's dynamo exporter keeps weights in ``<file>.data`` beside the graph; onnx loads them from the file's
    own folder only."""
    try:
        return onnx.load(str(path), load_external_data=True)
    except Exception as err:
        raise ModelFileError(f"{path}: its weights are in an external data file that could not be read "
                             f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})") from None


def add_missing_opset_imports(proto: onnx.ModelProto) -> dict[str, int]:
    """Add opset version 1 for each custom node domain the graph uses without importing it; returns them."""
    imported = {o.domain for o in proto.opset_import}
    missing = sorted({n.domain for n in proto.graph.node if n.domain not in imported and n.domain not in ("",
                                                                                                       "ai.onnx")})
    for domain in missing:
        proto.opset_import.append(onnx.helper.make_opsetid(domain, 1))
    return {domain: 1 for domain in missing}


def tidy_qonnx(model: ModelWrapper, source: str | Path = "model") -> tuple[ModelWrapper, dict[str, Any]]:
    """Static inputs to initializers, qonnx's cleanup without renaming, Gemm to MatMul (see the module doc)."""
    from qonnx.transformation.fold_constants import FoldConstants
    from qonnx.transformation.general import (GiveUniqueParameterTensors, RemoveStaticGraphInputs,
                                              RemoveUnusedTensors)
    from qonnx.transformation.infer_shapes import InferShapes
    from qonnx.transformation.quant_constant_folding import FoldTransposeIntoQuantInit

    passes: list[str] = []
    named = name_unnamed_nodes(model)
    if named:
        passes.append("named_nodes")
    static = [i.name for i in model.graph.input if model.get_initializer(i.name) is not None]
    for q in model.graph.node:  # older Brevitas exports: qonnx's ops under the alias domain
        if q.op_type in ("Quant", "BipolarQuant", "Trunc") and q.domain in ("onnx.brevitas", ""):
            q.domain = "qonnx.custom_op.general"
    from hwq.dataflow.prelu import DropEmptyTrailingInputs

    for transform in (InferShapes(), GiveUniqueParameterTensors(), DropEmptyTrailingInputs(),
                      FoldConstants(exclude_op_types=["Quant", "BipolarQuant", "QuantizeLinear", "DequantizeLinear"]),
                      FoldTransposeIntoQuantInit(), RemoveUnusedTensors(), RemoveStaticGraphInputs()):
        model = model.transform(transform)
    if static:
        passes.append("static_inputs")
    passes.append("cleanup")
    gemms = [n.name for n in model.graph.node if n.op_type == "Gemm"]
    if gemms:
        model = model.transform(GemmAsMatMul()).transform(InferShapes())
        model = model.transform(FoldTransposeIntoQuantInit()).transform(InferShapes())
        passes.append("gemm_to_matmul")
    if len(model.graph.input) != 1 or len(model.graph.output) != 1:
        ins = ", ".join(i.name for i in model.graph.input)
        outs = ", ".join(o.name for o in model.graph.output)
        raise ModelFileError(f"{source}: expected one graph input and one output after removing weight inputs; "
                             f"inputs: {ins}; outputs: {outs}")
    report: dict[str, Any] = {"passes": passes}
    if static:
        report["static_inputs"] = len(static)
    if gemms:
        report["gemm_to_matmul"] = gemms
    if named:
        report["named_nodes"] = named
    return model, report


class GemmAsMatMul(Transformation):
    """``Gemm(A, B, C)`` as ``MatMul`` (+ ``Transpose`` of B for transB, ``Mul`` for alpha, ``Add`` of beta * C),
    keeping the Gemm's name on the MatMul. qonnx's GemmToMatMul needs the optional C, which torch's dynamo exporter
    leaves out of a bias-free linear layer."""

    def apply(self, model: ModelWrapper) -> tuple[ModelWrapper, bool]:
        from onnx import helper

        for node in list(model.graph.node):
            if node.op_type != "Gemm":
                continue
            attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
            a, b = node.input[0], node.input[1]
            c = node.input[2] if len(node.input) > 2 and node.input[2] else None
            index = list(model.graph.node).index(node)
            new = []
            fresh = model.make_new_valueinfo_name

            if attrs.get("transA", 0):
                t = fresh()
                new.append(helper.make_node("Transpose", [a], [t], name=f"{node.name}_transpose_a", perm=[1, 0]))
                a = t
            if attrs.get("transB", 0):
                t = fresh()
                new.append(helper.make_node("Transpose", [b], [t], name=f"{node.name}_transpose_b", perm=[1, 0]))
                b = t
            out = node.output[0]
            tail = []
            alpha, beta = float(attrs.get("alpha", 1.0)), float(attrs.get("beta", 1.0))
            product = fresh() if (alpha != 1.0 or c is not None) else out
            new.append(helper.make_node("MatMul", [a, b], [product], name=node.name))
            if alpha != 1.0:
                scaled, k = (fresh() if c is not None else out), fresh()
                model.set_initializer(k, np.asarray(alpha, dtype=np.float32))
                tail.append(helper.make_node("Mul", [product, k], [scaled], name=f"{node.name}_alpha"))
                product = scaled
            if c is not None:
                bias = c
                if beta != 1.0:
                    bias, k = fresh(), fresh()
                    model.set_initializer(k, np.asarray(beta, dtype=np.float32))
                    tail.append(helper.make_node("Mul", [c, k], [bias], name=f"{node.name}_beta"))
                tail.append(helper.make_node("Add", [product, bias], [out], name=f"{node.name}_bias"))
            model.graph.node.remove(node)
            for i, n in enumerate(new + tail):
                model.graph.node.insert(index + i, n)
        return model, False


def name_unnamed_nodes(model: ModelWrapper) -> list[str]:
    """Give every node without a name ``<op_type>_<index in the file>``; returns the names given."""
    taken = {n.name for n in model.graph.node if n.name}
    given = []
    for index, node in enumerate(model.graph.node):
        if not node.name:
            name = f"{node.op_type}_{index}"
            while name in taken:
                name += "_"
            node.name = name
            taken.add(name)
            given.append(name)
    return given


def check_rounding(model: ModelWrapper, source: str | Path) -> None:
    """Refuse an activation ``Quant`` that rounds other than ROUND or FLOOR: FINN turns activation quantizers into
    thresholds placed for round-to-nearest; FLOOR is built exactly by :mod:`hwq.dataflow.floor_rounding`, CEIL
    would be built as ROUND without a word. Weight quantizers (on initializers) are folded into integers exactly
    and may round any way."""
    from hwq.dataflow.floor_rounding import rounding_mode

    for node in model.graph.node:
        if node.op_type != "Quant" or model.get_initializer(node.input[0]) is not None:
            continue
        mode = rounding_mode(node)
        if mode not in ("ROUND", "FLOOR"):
            raise MappingError(f"{source}: node '{node.name}' (Quant) rounds with rounding_mode={mode}; FINN maps "
                               f"activation quantizers to thresholds that round to nearest (hwq also builds "
                               f"FLOOR), so it would compute ROUND; export it with ROUND (Brevitas' default)")


def check_tidy(original: ModelWrapper, tidied: ModelWrapper, inputs: np.ndarray) -> dict[str, Any]:
    """Run the file as given and the tidied graph on ``inputs`` (float, the graph's own input, a few images);
    the outputs must agree within float32 rounding. Returns ``{"n", "max_abs_diff", "passed"}``."""
    from qonnx.core.onnx_exec import execute_onnx

    from qonnx.transformation.infer_shapes import InferShapes

    results = []
    for model in (original.transform(InferShapes()), tidied):  # shapes only: qonnx executes annotated graphs
        name, out = model.graph.input[0].name, model.graph.output[0].name
        shape = model.get_tensor_shape(name)
        results.append(np.stack([execute_onnx(model, {name: x.reshape(shape).astype(np.float32)})[out].reshape(-1)
                                 for x in inputs]))
    diff = float(np.max(np.abs(results[0] - results[1]))) if results[0].size else 0.0
    scale = float(np.max(np.abs(results[0]))) if results[0].size else 0.0
    return {"n": int(len(inputs)), "max_abs_diff": diff, "passed": diff <= 1e-5 * max(1.0, scale)}
