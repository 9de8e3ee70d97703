# SPDX-License-Identifier: BSD-3-Clause
"""Skipping the tidy-ups known to change nothing (hwq.dataflow.fixed_points) streamlines to exactly the graph the
plain run gives (docs/dataflow.md, "Streamline time")."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
import torch
from onnx import TensorProto, helper
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.transformation.general import GiveReadableTensorNames, GiveUniqueNodeNames

from hwq.dataflow import BuildConfig, run_build
from hwq.dataflow.finn_compat import finn_session, import_finn_steps, streamline
from hwq.dataflow.fixed_points import skipping_known_fixed_points
from hwq.dataflow.provenance import record_user_nodes, tracking_user_nodes
from tests.test_dataflow_branches import ResidualNet, _train, make_run


def _mul_graph() -> ModelWrapper:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    graph = helper.make_graph([helper.make_node("Mul", ["x", "s"], ["m"]), helper.make_node("Relu", ["m"], ["y"])],
                              "g", [x], [y])
    model = ModelWrapper(helper.make_model(graph))
    model.set_initializer("s", np.full((1, 4), 2.0, dtype=np.float32))
    return model


def test_a_tidy_up_runs_once_per_unchanged_graph_and_ModelWrapper_is_restored():
    original = ModelWrapper.transform, ModelWrapper.cleanup
    model = _mul_graph()
    with skipping_known_fixed_points() as memo:
        named = model.transform(GiveUniqueNodeNames()).transform(GiveReadableTensorNames())  # changes: runs
        again = named.transform(GiveReadableTensorNames())  # unchanged the first time: recorded
        assert memo.skipped["GiveReadableTensorNames"] == 0 and memo.ran["GiveReadableTensorNames"] == 2
        third = again.transform(GiveReadableTensorNames())  # the same graph again: skipped
        assert memo.skipped["GiveReadableTensorNames"] == 1 and memo.ran["GiveReadableTensorNames"] == 2
        assert third is not again and third.model == again.model == named.model
        # another transformation, or other arguments, still runs
        named.transform(GiveReadableTensorNames(), cleanup=False)
        assert memo.skipped["GiveReadableTensorNames"] == 1 and memo.ran["GiveReadableTensorNames"] == 3
    assert (ModelWrapper.transform, ModelWrapper.cleanup) == original


def test_a_changed_graph_is_tidied_again():
    with skipping_known_fixed_points() as memo:
        model = _mul_graph().transform(GiveUniqueNodeNames()).transform(GiveReadableTensorNames())
        model.transform(GiveReadableTensorNames())
        model.set_initializer(model.graph.node[0].input[1], np.full((1, 4), 3.0, dtype=np.float32))
        model.graph.node[1].name = "renamed"
        skipped = memo.skipped["GiveUniqueNodeNames"]
        tidied = model.transform(GiveUniqueNodeNames())
        assert memo.skipped["GiveUniqueNodeNames"] == skipped and tidied.graph.node[1].name == "Relu_0"


def _join_graph() -> ModelWrapper:
    """A 2-bit quantizer's output forks into two scaled branches that an Add joins, then a sign: StreamlinePlus
    moves the scales past the fork and the join into the sign's thresholds (a few rounds of its lists)."""
    from qonnx.core.datatype import DataType

    nodes = [helper.make_node("MultiThreshold", ["x", "t0"], ["x0"], domain="qonnx.custom_op.general",
                              out_dtype="UINT2"),
             helper.make_node("Mul", ["x0", "s1"], ["a"]), helper.make_node("Mul", ["x0", "s2"], ["b"]),
             helper.make_node("Add", ["a", "b"], ["c"]),
             helper.make_node("MultiThreshold", ["c", "t"], ["y"], domain="qonnx.custom_op.general",
                              out_dtype="BIPOLAR", out_scale=2.0, out_bias=-1.0)]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    model = ModelWrapper(helper.make_model(graph))
    model.set_tensor_datatype("x", DataType["INT4"])
    model.set_initializer("t0", np.tile(np.array([[-1.0, 0.0, 1.0]], dtype=np.float32), (4, 1)))
    for name, value in (("s1", 0.25), ("s2", 0.25)):
        model.set_initializer(name, np.asarray(value, dtype=np.float32))
    model.set_initializer("t", np.zeros((4, 1), dtype=np.float32))
    return model


def test_streamline_plus_skipping_fixed_points_gives_the_same_graph():
    from qonnx.transformation.infer_shapes import InferShapes

    from hwq.dataflow.fast_renames import fast_tensor_renames
    from hwq.dataflow.passes_branches import streamline_plus_unrounded

    graphs = []
    for fast in (False, True):
        model = record_user_nodes(_join_graph().transform(InferShapes()).transform(GiveUniqueNodeNames()))
        with tracking_user_nodes(), (skipping_known_fixed_points() if fast else contextlib.nullcontext()) as memo, \
                (fast_tensor_renames() if fast else contextlib.nullcontext()):
            model = model.transform(streamline_plus_unrounded())
        graphs.append(model.model.SerializeToString())
    assert graphs[0] == graphs[1]
    assert sum(memo.skipped.values()) > sum(memo.ran.values())
    assert "Mul" not in [n.op_type for n in ModelWrapper(graphs[1]).graph.node]  # the scales moved into the sign


@pytest.fixture(scope="module")
def residual_before_streamline(tmp_path_factory):
    """ResidualNet (a residual add: finn-plus's StreamlinePlus runs) as it reaches ``streamline`` in a build."""
    tmp = tmp_path_factory.mktemp("residual")
    torch.manual_seed(0)
    run = make_run(_train(ResidualNet()), tmp / "run")
    manifest = run_build(run, BuildConfig(board="pynq-z2", out_dir=str(run / "build"), verify_samples=2),
                         progress=False, stop_step="insert_topk")
    assert manifest["status"] == "stopped", manifest.get("error")
    return ModelWrapper(str(run / "build" / "intermediate" / "insert_topk.onnx"))


@pytest.mark.slow  # about 70 s on the shared machine: the plain streamline is the slow part
def test_streamlining_skipping_fixed_points_gives_the_same_graph(residual_before_streamline, tmp_path):
    from hwq.dataflow.fast_renames import fast_tensor_renames

    import_finn_steps()
    graphs, counts = [], None
    for skip in (False, True):
        model = record_user_nodes(ModelWrapper(residual_before_streamline.model.SerializeToString()))
        with finn_session(tmp_path / "codegen"), tracking_user_nodes():
            if skip:
                with skipping_known_fixed_points() as memo, fast_tensor_renames():
                    model = streamline(model, None)
                counts = sum(memo.skipped.values()), sum(memo.ran.values())
            else:
                model = streamline(model, None)
        graphs.append(model.model.SerializeToString())
    # the same nodes, names, provenance tags and initializers, bit for bit
    assert graphs[0] == graphs[1]
    assert counts[0] > counts[1]  # most tidy-ups were skipped
    assert any(n.op_type == "Add" for n in ModelWrapper(graphs[1]).graph.node)  # it streamlined the join


def _graph_with(names: dict[str, str] | None = None, twice: bool = False) -> ModelWrapper:
    """``x -> Mul(s) -> Add(b) -> Relu -> y`` with value infos; ``names`` renames tensors first, ``twice`` makes the
    Add read its input twice (qonnx then renames only the first: the one-pass renaming steps aside)."""
    names = names or {}
    n = lambda t: names.get(t, t)  # noqa: E731
    nodes = [helper.make_node("Mul", [n("x"), n("s")], [n("m")], name="Mul_0"),
             helper.make_node("Add", [n("m"), n("m") if twice else n("b")], [n("a")], name="Add_0"),
             helper.make_node("Relu", [n("a")], [n("y")], name="Relu_0")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(n("x"), TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info(n("y"), TensorProto.FLOAT, [1, 4])],
                              value_info=[helper.make_tensor_value_info(n(t), TensorProto.FLOAT, [1, 4])
                                          for t in ("m", "a")])
    model = ModelWrapper(helper.make_model(graph))
    model.set_initializer(n("s"), np.full((1, 4), 2.0, dtype=np.float32))
    if not twice:
        model.set_initializer(n("b"), np.full((1, 4), 1.0, dtype=np.float32))
    return model


@pytest.mark.parametrize("names, twice", [
    ({}, False),
    ({"m": "tensor_1", "a": "tensor_0"}, False),  # a rename onto a name in use: the fork steps aside
    ({"m": "Mul_0_out0", "a": "Relu_0_out0"}, False),
    ({}, True),
])
def test_one_pass_renames_are_qonnxs(names, twice, monkeypatch):
    from qonnx.transformation.general import GiveUniqueTensorNames

    from hwq.dataflow.fast_renames import fast_tensor_renames

    searches = []
    rename_tensor = ModelWrapper.rename_tensor
    monkeypatch.setattr(ModelWrapper, "rename_tensor", lambda self, *a: searches.append(a) or rename_tensor(self, *a))

    def renamed(transformation):
        try:
            return _graph_with(names, twice).transform(transformation()).model
        except Exception as error:  # qonnx's own failure (the merged tensor found twice), also the fork's
            return repr(error)

    saved = vars(GiveUniqueTensorNames)["apply"], vars(GiveReadableTensorNames)["apply"]
    for transformation in (GiveUniqueTensorNames, GiveReadableTensorNames):
        theirs = renamed(transformation)
        searches.clear()
        with fast_tensor_renames():
            ours = renamed(transformation)
        assert ours == theirs, transformation.__name__
        assert bool(searches) == (names == {"m": "tensor_1", "a": "tensor_0"} or twice)  # qonnx's only if needed
    assert (vars(GiveUniqueTensorNames)["apply"], vars(GiveReadableTensorNames)["apply"]) == saved
