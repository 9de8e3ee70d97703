# SPDX-License-Identifier: BSD-3-Clause
"""ONNX files are untrusted: a node whose domain is not ONNX's, qonnx's or FINN's is refused, naming the node,
before qonnx would import the module the domain names (the build, the emulated board, the open backend)."""

from __future__ import annotations

import shutil
import sys

import onnx
import pytest

from hwq.dataflow import BuildConfig, run_build
from hwq.onnx_check import KNOWN_DOMAINS, UnknownDomainError, check_domains


@pytest.fixture
def planted_module(tmp_path, monkeypatch):
    """A module on sys.path that leaves a file behind when imported: proof of whether anything imported it."""
    name = f"hwq_planted_{tmp_path.name.replace('-', '_')}"
    marker = tmp_path / "imported"
    (tmp_path / "mods").mkdir()
    (tmp_path / "mods" / f"{name}.py").write_text(f"open({str(marker)!r}, 'w').write('imported')\n")
    monkeypatch.syspath_prepend(str(tmp_path / "mods"))
    yield name, marker
    assert name not in sys.modules and not marker.exists()


def _plant(path, domain, index=0):
    model = onnx.load(str(path))
    node = model.graph.node[index]
    node.domain = domain
    onnx.save(model, str(path))
    return node.name, node.op_type


def test_build_refuses_a_node_with_an_unknown_domain(exported_tfc_w1a1, tmp_path, planted_module):
    name, marker = planted_module
    run = tmp_path / "run"
    shutil.copytree(exported_tfc_w1a1, run, ignore=shutil.ignore_patterns("build-*"))
    node, op = _plant(run / "model.onnx", name, index=2)
    with pytest.raises(UnknownDomainError) as err:
        run_build(run, BuildConfig(force=True), progress=False)  # forced past the export check: the file changed
    assert str(err.value).startswith(f"{run / 'model.onnx'}: node '{node}' ({op}) has domain '{name}', which is "
                                     "not an ONNX, qonnx or FINN domain (expected one of '', 'ai.onnx'")
    assert "\n" not in str(err.value) and not list(run.glob("build-*"))


def test_the_emulated_board_and_the_open_backend_refuse_it_too(digits_tfc_build, tmp_path, planted_module):
    from hwq.dataflow.driver import step_checkpoint
    from hwq.device import BuildModel
    from hwq.errors import HwqError
    from hwq.rtl.steps import finn_execution

    name, _ = planted_module
    build = tmp_path / "build"
    shutil.copytree(digits_tfc_build, build)
    _plant(step_checkpoint(build, "create_dataflow_partition"), name)
    with pytest.raises(HwqError, match=rf"create_dataflow_partition\.onnx: node 'MVAU_0' \(MVAU\) has domain "
                                      rf"'{name}'"):
        BuildModel.from_build_dir(build)
    with pytest.raises(UnknownDomainError, match=rf"has domain '{name}'"):
        finn_execution(step_checkpoint(build, "create_dataflow_partition"), None)


def test_nodes_in_subgraphs_are_checked_and_a_python_module_name_is_refused():
    from onnx import TensorProto, helper

    inner = helper.make_graph([helper.make_node("Zen", [], ["z"], domain="this", name="Zen")], "inner", [],
                              [helper.make_tensor_value_info("z", TensorProto.FLOAT, [1])])
    cond = helper.make_node("If", ["c"], ["y"], then_branch=inner, else_branch=inner, name="branch")
    graph = helper.make_graph([cond], "outer", [helper.make_tensor_value_info("c", TensorProto.BOOL, [])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    with pytest.raises(UnknownDomainError, match=r"^node 'Zen' \(Zen\) has domain 'this'"):
        check_domains(helper.make_model(graph))


def test_every_graph_of_a_real_build_passes(digits_tfc_build, exported_tfc_w1a1):
    """The allow-list covers what hwq's flow produces: the exported QONNX and every intermediate graph."""
    seen = set()
    for path in [exported_tfc_w1a1 / "model.onnx", *sorted((digits_tfc_build / "intermediate").glob("*.onnx"))]:
        seen |= {n.domain for n in check_domains(path).graph.node}
    assert seen == {"", "qonnx.custom_op.general", "finn.custom_op.fpgadataflow", "finn.custom_op.fpgadataflow.hls"}
    assert seen <= set(KNOWN_DOMAINS)
