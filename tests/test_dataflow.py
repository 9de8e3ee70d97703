# SPDX-License-Identifier: BSD-3-Clause
"""The FINN build stage on a briefly trained digits TFC: builds, estimates, folding, both gates, clear errors."""

from __future__ import annotations

import json
import shutil

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from qonnx.core.datatype import DataType
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.custom_op.registry import getCustomOp

from hwq.boards import load_board
from hwq.cli import main
from hwq.data import load_dataset
from hwq.dataflow import STEPS, BuildConfig, run_build
from hwq.dataflow import estimates, gates
from hwq.dataflow.errors import (BitExactnessError, FoldingError, IntegerRangeError, MappingError,
                                 ModelFileError)
from hwq.dataflow.finn_compat import finn_session
from hwq.dataflow.passes import (ClampPopcountThresholds, CorrectPopcountDatatypes, popcount_range_violations,
                                 popcount_threshold_violations)


@pytest.fixture(scope="module")
def builds(trained_tfc_digits, tmp_path_factory):
    """Two builds of the same run: Pynq-Z2 (fastest folding that fits) via the API, ZCU104 (200k fps) via the CLI."""
    out = tmp_path_factory.mktemp("builds")
    z2 = run_build(trained_tfc_digits, BuildConfig(board="pynq-z2", out_dir=str(out / "z2"), verify_samples=40),
                   progress=False)
    assert main(["build", str(trained_tfc_digits), "--board", "zcu104", "--target-fps", "200000",
                 "--out", str(out / "zcu"), "--verify-samples", "40", "--no-progress"]) == 0
    zcu = json.loads((out / "zcu" / "manifest.json").read_text())
    return {"pynq-z2": (out / "z2", z2), "zcu104": (out / "zcu", zcu)}


def _step_onnx(out, step):
    """The intermediate ONNX a build saved for ``step`` (named in its manifest)."""
    manifest = json.loads((out / "manifest.json").read_text())
    return out / next(s["onnx"] for s in manifest["steps"] if s["name"] == step)


def test_builds_for_two_boards_write_everything(builds):
    for board, (out, manifest) in builds.items():
        assert manifest["status"] == "done" and manifest["board"]["name"] == board
        assert json.loads((out / "manifest.json").read_text())["status"] == "done"
        # a checkpoint per step, named by the step (adding a step renames no other)
        onnx_files = sorted(p.name for p in (out / "intermediate").glob("*.onnx"))
        assert onnx_files == sorted(f"{name}.onnx" for name, _ in STEPS)
        assert [s["onnx"] for s in manifest["steps"]] == [f"intermediate/{name}.onnx" for name, _ in STEPS]
        ops = [n.op_type for n in ModelWrapper(str(_step_onnx(out, "hw_codegen"))).graph.node]
        assert ops == ["MVAU_hls"] * 4 + ["LabelSelect_hls"]
        files = manifest["codegen"]["files"]
        assert sum(f.endswith(".cpp") for f in files) == 5 and all((out / f).is_file() for f in files)
        # vendor steps: skipped, each with a one-line reason, never silently
        for step in ("hls_synthesis", "stitched_ip", "bitfile", "driver"):
            state = manifest["vendor"][step]
            assert state["status"] == "skipped" and "not found" in state["reason"] and "\n" not in state["reason"]
    assert builds["pynq-z2"][1]["board"]["part"] != builds["zcu104"][1]["board"]["part"]


def test_estimates_per_layer_and_total(builds):
    for board, (_, manifest) in builds.items():
        est = manifest["estimates"]
        layers, total = est["layers"], est["total"]
        assert [layer["op_type"] for layer in layers] == ["MVAU_hls"] * 4 + ["LabelSelect_hls"]
        assert all(layer["cycles"] > 0 for layer in layers) and all(l["LUT"] > 0 for l in layers[:4])
        for key in ("LUT", "BRAM_18K", "DSP", "URAM"):
            assert total[key] == sum(layer[key] for layer in layers)
        assert total["max_cycles"] == max(layer["cycles"] for layer in layers)
        assert total["estimated_fps"] == pytest.approx(total["clock_mhz"] * 1e6 / total["max_cycles"])
        assert total["estimated_latency_us"] == pytest.approx(total["critical_path_cycles"] / total["clock_mhz"])
        assert max(est["utilisation"].values()) <= 0.8
    assert builds["zcu104"][1]["estimates"]["total"]["estimated_fps"] >= 200_000
    # the fastest fitting folding on the Pynq-Z2 is much faster than the 200k target on the ZCU104
    assert builds["pynq-z2"][1]["estimates"]["total"]["max_cycles"] < builds["zcu104"][1]["estimates"]["total"]["max_cycles"]


def test_cycles_non_increasing_as_parallelism_grows(builds):
    out, _ = builds["pynq-z2"]
    model = ModelWrapper(str(_step_onnx(out, "specialize_layers")))
    board = load_board("zcu104")
    previous = None
    with finn_session(out / "scratch"):
        for fps in (1_000, 10_000, 100_000, 1_000_000, 10_000_000):
            summary = estimates.fold_for_target(model, board, fps, 1.0).summary
            cycles = [layer["cycles"] for layer in summary["layers"]]
            if previous is not None:
                assert all(c <= p for c, p in zip(cycles, previous)), (fps, cycles, previous)
            previous = cycles
        assert previous[0] < 100  # the fastest folding really is parallel


def test_folding_file_in_finn_format(builds, tmp_path):
    out, _ = builds["pynq-z2"]
    model = ModelWrapper(str(_step_onnx(out, "specialize_layers")))
    folding = {"Defaults": {}, "MVAU_hls_0": {"PE": 4, "SIMD": 8}, "MVAU_hls_1": {"PE": 2, "SIMD": 16}}
    (tmp_path / "fold.json").write_text(json.dumps(folding))
    with finn_session(tmp_path / "scratch"):
        folded = estimates.apply_folding_file(model, tmp_path / "fold.json")
        cycles = {l["node"]: l["cycles"] for l in estimates.estimate(folded, load_board("pynq-z2"))["layers"]}
        assert cycles["MVAU_hls_0"] == 64 * 64 // (4 * 8) and cycles["MVAU_hls_1"] == 64 * 64 // (2 * 16)
        (tmp_path / "bad.json").write_text(json.dumps({"MVAU_hls_9": {"PE": 2}}))
        with pytest.raises(FoldingError, match=r"bad\.json: node 'MVAU_hls_9' is not in the model"):
            estimates.apply_folding_file(model, tmp_path / "bad.json")
        (tmp_path / "odd.json").write_text(json.dumps({"MVAU_hls_0": {"PE": 3}}))
        with pytest.raises(FoldingError, match=r"odd\.json"):
            estimates.apply_folding_file(model, tmp_path / "odd.json")
    # the folding a build wrote can be fed back
    written = json.loads((out / "folding.json").read_text())
    assert {"MVAU_hls_0", "MVAU_hls_3"} <= set(written)


# --- bit-exactness gate ----------------------------------------------------------------------------------------
def _images(n=30):
    return load_dataset("digits").test_x[:n].numpy()


def test_bit_exact_gate_passes_and_names_planted_fault(builds, trained_tfc_digits):
    out, manifest = builds["pynq-z2"]
    report = manifest["bit_exact"]
    assert report["passed"] and report["classes_match"] == 1.0 and report["layerwise"]
    assert [t["hw"] for t in report["tensors"]][-2:] == ["XnorPopcountMatMul_2_out0", "global_out"]
    qonnx = ModelWrapper(str(trained_tfc_digits / "model.onnx"))
    hw = ModelWrapper(str(out / report["hw_graph"]))  # the abstract HW graph the gate executed
    assert report["hw_graph"] == str(_step_onnx(out, "create_dataflow_partition").relative_to(out))
    assert not any(n.domain.endswith((".hls", ".rtl")) for n in hw.graph.node)
    gates.check_bit_exact(qonnx, hw, _images())  # unchanged: passes
    node = hw.get_nodes_by_op_type("MVAU")[1]
    weights = hw.get_initializer(node.input[1]).copy()
    weights[:, :] = 1 - weights[:, :]  # plant a fault: invert the second layer's weights
    hw.set_initializer(node.input[1], weights)
    with pytest.raises(BitExactnessError, match=r"HW tensor 'MultiThreshold_1_out0' differs from QONNX tensor "
                                                r"'BipolarQuant_5_out0'"):
        gates.check_bit_exact(qonnx, hw, _images())


def _hw_graph_and_inputs(builds):
    out, manifest = builds["pynq-z2"]
    hw = ModelWrapper(str(out / manifest["bit_exact"]["hw_graph"]))
    keep = [n.output[0] for n in gates.hw_layer_outputs(hw)] + [hw.graph.output[0].name]
    return manifest, hw, _images(20).reshape(20, -1).astype(np.float32), keep


def test_the_gate_runs_the_hw_graph_by_the_numpy_reference_checked_against_qonnx(builds):
    """The same tensors and observed ranges as qonnx's execution image by image, batched (what makes the gate of
    a large network take seconds rather than minutes: docs/dataflow.md)."""
    manifest, hw, images, keep = _hw_graph_and_inputs(builds)
    assert manifest["bit_exact"]["hw_graph_executor"].startswith("hwq.rtl.reference (NumPy, batched)")
    kept, ranges, executor = gates.run_hw_graph(hw, images, keep)
    expected, expected_ranges = gates.run_hw_graph_qonnx(hw, images, keep)
    assert executor.startswith("hwq.rtl.reference") and ranges == expected_ranges
    for name in keep:
        np.testing.assert_array_equal(kept[name], expected[name])
    assert len({int(c) for c in kept[hw.graph.output[0].name].ravel()}) > 1     # more than one class: it means something


def test_the_gate_falls_back_to_qonnx_where_the_reference_differs(builds, monkeypatch):
    """A planted error in the reference (every threshold count one higher) differs from qonnx on the first images:
    qonnx computes every image, and the report says why."""
    from hwq.rtl import reference

    _, hw, images, keep = _hw_graph_and_inputs(builds)
    expected, _ = gates.run_hw_graph_qonnx(hw, images, keep)
    correct = reference.thresholds
    monkeypatch.setattr(reference, "thresholds", lambda acc, thr, act_val=0: correct(acc, thr, act_val) + 1)
    kept, _, executor = gates.run_hw_graph(hw, images, keep)
    assert executor.startswith("qonnx (the NumPy reference differs from it on tensor '"), executor
    for name in keep:
        np.testing.assert_array_equal(kept[name], expected[name])


# --- integer-range gate ----------------------------------------------------------------------------------------
def test_finn_declares_int7_and_the_correction_fixes_it(builds):
    out, manifest = builds["pynq-z2"]
    assert manifest["datatype_corrections"] == [
        {"node": "MVAU_hls_3", "tensor": "XnorPopcountMatMul_2_out0", "field": "output", "declared": "INT7",
         "range": [0, 64], "corrected": "UINT7"},
        {"node": "MVAU_hls_3", "tensor": "XnorPopcountMatMul_2_out0 (accumulator)", "field": "accDataType",
         "declared": "INT7", "range": [0, 64], "corrected": "UINT7"}]
    assert manifest["integer_range"]["passed"] and manifest["integer_range"]["tensors_checked"] > 10
    final = ModelWrapper(str(_step_onnx(out, "hw_codegen")))
    assert final.get_tensor_datatype("XnorPopcountMatMul_2_out0") == DataType["UINT7"]
    assert getCustomOp(final.get_node_from_name("MVAU_hls_3")).get_nodeattr("accDataType") == "UINT7"
    code = next((out / "codegen").glob("code_gen_ipgen_MVAU_hls_3_*/top_MVAU_hls_3.cpp")).read_text()
    assert "Slice<ap_uint<7>>" in code  # the generated HLS holds 0..64
    # before the correction, the range gate fails on finn-plus's own declaration
    uncorrected = ModelWrapper(str(_step_onnx(out, "minimize_bit_width")))
    assert popcount_range_violations(uncorrected)[0]["declared"] == "INT7"
    with pytest.raises(IntegerRangeError, match=r"node 'MVAU_hls_3'.*XnorPopcountMatMul_2_out0.*INT7.*0\.\.64"):
        gates.check_integer_ranges(uncorrected, {})
    fixed = uncorrected.transform(CorrectPopcountDatatypes())
    assert gates.check_integer_ranges(fixed, {})["passed"]
    # what INT7 means in bit-accurate hardware: a full match (64) wraps to -64 and loses the argmax
    assert list(gates.wrap_to_datatype(np.array([64, 63]), DataType["INT7"])) == [-64, 63]
    assert list(gates.wrap_to_datatype(np.array([64, 63]), DataType["UINT7"])) == [64, 63]


def test_build_without_correction_fails_the_range_gate(trained_tfc_digits, tmp_path):
    config = BuildConfig(board="pynq-z2", target_fps=100_000, fix_datatypes=False, out_dir=str(tmp_path / "b"),
                         verify_samples=10, codegen=False)
    with pytest.raises(IntegerRangeError, match="INT7"):
        run_build(trained_tfc_digits, config, progress=False)
    assert not (tmp_path / "b").exists()  # a failed build is kept aside, as b.failed
    manifest = json.loads((tmp_path / "b.failed" / "manifest.json").read_text())
    assert manifest["status"] == "failed" and manifest["steps"][-1]["name"] == "verify_integer_ranges"


def test_range_gate_catches_planted_narrow_type(builds):
    out, manifest = builds["pynq-z2"]
    model = ModelWrapper(str(_step_onnx(out, "hw_codegen")))
    observed = {"global_in": (0.0, 255.0), "XnorPopcountMatMul_2_out0": (5.0, 60.0)}
    assert gates.check_integer_ranges(model, observed)["passed"]
    model.set_tensor_datatype("global_in", DataType["UINT4"])  # plant: declare the pixels 4-bit
    with pytest.raises(IntegerRangeError, match=r"tensor 'global_in' is declared UINT4 but holds 0\.\.255"):
        gates.check_integer_ranges(model, observed)


# --- thresholded XNOR popcounts: negative thresholds of channels that always fire (trained CNV) -------------------
def _xnor_mvau(op_type: str = "MVAU", mw: int = 16) -> tuple[ModelWrapper, np.ndarray]:
    """One thresholded XNOR-popcount MVAU (MW=16, MH=4) and inputs covering every popcount 0..16 per channel.

    Channel 0 always fires (threshold -40: what the trained CNV-w1a1's MVAU_7 has and random BN statistics rarely
    give); channel 3 never fires (30 > MW), which finn-plus's clipping to its signed range also gets wrong."""
    from qonnx.util.basic import qonnx_make_model

    rng = np.random.default_rng(0)
    mh = 4
    w = rng.integers(0, 2, (mw, mh)).astype(np.float32)
    w[:2] = [[1, 0, 1, 0], [0, 1, 0, 1]]  # every column mixes 1s and 0s, so finn-plus's acc_max < MW
    thr = np.array([[-40.0], [5.0], [9.0], [30.0]], dtype=np.float32)
    # inputs: for each channel c, x = w[:, c] with its first k bits flipped gives popcount MW - k on channel c
    x = np.concatenate([np.array([np.where(np.arange(mw) < k, 1 - w[:, c], w[:, c]) for k in range(mw + 1)])
                        for c in range(mh)]).astype(np.float32)
    domain = "finn.custom_op.fpgadataflow" + (".hls" if op_type.endswith("_hls") else "")
    node = helper.make_node(op_type, ["x", "w", "t"], ["y"], domain=domain, backend="fpgadataflow", name=op_type,
                            MW=mw, MH=mh, SIMD=4, PE=2, inputDataType="BINARY", weightDataType="BINARY",
                            outputDataType="BINARY", ActVal=0, binaryXnorMode=1, noActivation=0,
                            numInputVectors=[len(x)])
    graph = helper.make_graph([node], "xnor_mvau",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [len(x), mw])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [len(x), mh])])
    model = ModelWrapper(qonnx_make_model(graph))
    model.set_initializer("w", w)
    model.set_initializer("t", thr)
    for name, dt in (("x", "BINARY"), ("w", "BINARY"), ("t", "INT32"), ("y", "BINARY")):
        model.set_tensor_datatype(name, DataType[dt])
    return model, x


def _run_mvau(model: ModelWrapper, x: np.ndarray) -> np.ndarray:
    from qonnx.core.onnx_exec import execute_onnx

    return execute_onnx(model, {"x": x})["y"]


def test_xnor_thresholds_keep_the_popcount_range(tmp_path):
    """Regression (trained CNV-w1a1 failed in minimize_bit_width with a bare AssertionError): finn-plus 1.6.1 gives
    an XNOR popcount a signed accumulator, so a negative threshold survives and the HLS MVAU asserts; hwq's
    minimize_bit_width keeps thresholds in 0..MW+1 and the accumulator unsigned, computing the same function."""
    from finn.builder.build_dataflow_config import DataflowBuildConfig

    from hwq.dataflow import finn_compat, steps

    cfg = DataflowBuildConfig(output_dir=str(tmp_path / "finn"), synth_clk_period_ns=10.0,
                              generate_outputs=[])
    with finn_session(tmp_path / "codegen"):
        finn_steps = finn_compat.import_finn_steps()
        # the bug: finn-plus's own step on the specialised layer
        hls, _ = _xnor_mvau("MVAU_hls")
        with pytest.raises(AssertionError):
            finn_steps.step_minimize_bit_width(hls, cfg)
        # the fix, as the build runs it
        clamp = ClampPopcountThresholds()
        fixed = finn_compat.minimize_bit_width(_xnor_mvau("MVAU_hls")[0], cfg, clamp)
        thr = fixed.get_initializer("t")
        assert thr.min() >= 0 and thr.max() <= 17 and list(thr[:, 0]) == [0, 5, 9, 17]
        assert getCustomOp(fixed.graph.node[0]).get_nodeattr("accDataType") == "UINT5"
        assert fixed.get_tensor_datatype("t") == DataType["UINT5"]  # compares (and accumulates) 0..16 in HLS
        assert clamp.corrections[0]["node"] == "MVAU_hls" and clamp.corrections[0]["thresholds_clipped"] == 2
        assert popcount_threshold_violations(fixed) == []
        # the same on the abstract layer, which executes in Python: the function is unchanged on every popcount
        abstract, x = _xnor_mvau("MVAU")
        expected = _run_mvau(abstract, x)
        assert expected[:, 0].all() and not expected[:, 3].any()
        ours = finn_compat.minimize_bit_width(_xnor_mvau("MVAU")[0], cfg)
        assert np.array_equal(_run_mvau(ours, x), expected)
        # finn-plus's own clipping (to its signed accumulator range) changes it: threshold 30 drops to <= 16
        theirs = finn_steps.step_minimize_bit_width_initial(_xnor_mvau("MVAU")[0], cfg)
        assert theirs.get_initializer("t")[0, 0] < 0
        assert not np.array_equal(_run_mvau(theirs, x), expected)
    # both minimize steps of the flow are hwq's
    names = dict(steps.STEPS)
    assert names["minimize_bit_width"].__doc__.startswith("finn-plus ``step_minimize_bit_width`` (the same")
    assert "ClampPopcountThresholds" in names["minimize_bit_width_initial"].__doc__


def test_range_gate_catches_negative_or_narrow_xnor_thresholds():
    model, _ = _xnor_mvau("MVAU_hls")
    with pytest.raises(IntegerRangeError, match=r"node 'MVAU_hls'.*'t'.*-40\.\.30 \(thresholds within 0\.\.17\)"):
        gates.check_integer_ranges(model, {})
    model.set_initializer("t", np.array([[0.0], [5.0], [9.0], [17.0]], dtype=np.float32))
    model.set_tensor_datatype("t", DataType["UINT4"])  # thresholds fit, the popcount 16 would wrap
    with pytest.raises(IntegerRangeError, match=r"declared UINT4 but holds 0\.\.16 \(a threshold type holding"):
        gates.check_integer_ranges(model, {})
    model.set_tensor_datatype("t", DataType["UINT5"])
    assert gates.check_integer_ranges(model, {})["passed"]


# --- clear errors ------------------------------------------------------------------------------------------------
def _copy_run(run, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(run, copy, ignore=shutil.ignore_patterns("build-*"))
    return copy


def test_corrupt_onnx_names_the_file(trained_tfc_digits, tmp_path):
    run = _copy_run(trained_tfc_digits, tmp_path)
    (run / "model.onnx").write_bytes(b"\x00not an onnx file" * 20)
    with pytest.raises(ModelFileError, match=r"model\.onnx: not a valid ONNX file"):
        run_build(run, BuildConfig(force=True), progress=False)  # past the export check: the file changed
    (run / "model.onnx").unlink()
    with pytest.raises(ModelFileError, match=r"model\.onnx: ONNX file not found"):
        run_build(run, BuildConfig(), progress=False)


def test_plain_onnx_is_not_qonnx(trained_tfc_digits, tmp_path):
    run = _copy_run(trained_tfc_digits, tmp_path)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 64])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "plain", [x], [y])
    onnx.save(helper.make_model(graph), str(run / "model.onnx"))
    with pytest.raises(ModelFileError, match=r"model\.onnx: not a QONNX model"):
        run_build(run, BuildConfig(force=True), progress=False)


def test_model_finn_cannot_map_names_the_node(trained_tfc_digits, tmp_path):
    run = _copy_run(trained_tfc_digits, tmp_path)
    model = ModelWrapper(str(run / "model.onnx"))
    last = model.graph.node[-1]
    out = last.output[0]
    last.output[0] = "before_sin"
    model.graph.node.append(helper.make_node("Sin", ["before_sin"], [out], name="Unmappable_Sin"))
    model.save(str(run / "model.onnx"))
    with pytest.raises((MappingError, ModelFileError), match="Sin"):
        run_build(run, BuildConfig(out_dir=str(tmp_path / "b"), verify_samples=5, force=True), progress=False)


@pytest.mark.slow
def test_cnv_build_is_bit_exact(tmp_path):
    """An untrained CNV-w1a1 (random BN statistics) builds for the ZCU104 and passes both gates (about 3 min)."""
    import torch

    from hwq._io import write_json
    from hwq.export import export_qonnx_model
    from hwq.models import ModelSpec, build_model
    from tests.conftest import random_bn_statistics

    torch.manual_seed(0)
    model = build_model(ModelSpec("cnv", 1, 1, image_shape=(3, 32, 32))).eval()
    random_bn_statistics(model)
    run = tmp_path / "cnv"
    run.mkdir()
    export_qonnx_model(model, run / "model.onnx")
    write_json(run / "metrics.json", {"config": {"dataset": "cifar10"}})
    m = run_build(run, BuildConfig(board="zcu104", verify_samples=3, force=True), progress=False)  # no export.json
    assert m["status"] == "done" and m["bit_exact"]["passed"] and m["integer_range"]["passed"]
    assert m["host_side_nodes"][0]["op_type"] == "Transpose"
    ops = {layer["op_type"].split("_")[0] for layer in m["estimates"]["layers"]}
    assert {"MVAU", "ConvolutionInputGenerator", "Pool", "LabelSelect"} <= ops


def test_finn_session_leaves_no_global_state(tmp_path):
    import os

    import finn.xsi
    from finn.util import settings as finn_settings

    from hwq.dataflow.finn_compat import import_finn_steps

    env, saved = dict(os.environ), finn_settings._SETTINGS
    with finn_session(tmp_path / "codegen"):
        assert finn_settings.get_settings().finn_build_dir == (tmp_path / "codegen").resolve()
        assert hasattr(import_finn_steps(), "step_streamline")
    # the caller's environment is as it was; finn_session removes only the XILINX_VIVADO it set (what a module
    # first imported inside it sets up, e.g. sklearn's KMP_DUPLICATE_LIB_OK, stays)
    assert {k: os.environ.get(k) for k in env} == env and ("XILINX_VIVADO" in os.environ) == ("XILINX_VIVADO" in env)
    assert finn_settings._SETTINGS is saved
    assert "SimEngine" not in vars(finn.xsi)
