# SPDX-License-Identifier: BSD-3-Clause
"""Models hwq did not train: FINN's reference networks from Brevitas' own model classes (``bnn_pynq``), exported
by Brevitas through both of torch's exporters, built from the bare QONNX file with ``hwq build MODEL.onnx``;
the input conventions; and every way such a file can be wrong, as one line naming the file and the node."""

from __future__ import annotations

import json
import shutil

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from hwq.cli import main
from hwq.dataflow import BuildConfig, run_build
from hwq.dataflow.errors import FoldingError, MappingError, ModelFileError
from hwq.errors import ConfigError

EXPORTS = ["tfc_1w1a-ts", "tfc_1w1a-dynamo", "tfc_2w2a-ts", "tfc_2w2a-dynamo"]


def export_reference(name: str, path, dynamo: bool):
    """A FINN reference network as Brevitas builds it (untrained, seeded), exported by Brevitas' export_qonnx."""
    import torch
    from brevitas.export import export_qonnx
    from brevitas_examples.bnn_pynq.models import model_with_cfg

    torch.manual_seed(0)
    model, _ = model_with_cfg(name, pretrained=False)
    model.eval()
    export_qonnx(model, input_t=torch.rand(1, 1, 28, 28), export_path=str(path), dynamo=dynamo)
    return path


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    """name -> QONNX file (the dynamo exporter's weights beside it in ``<file>.data``); and a calibration file."""
    root = tmp_path_factory.mktemp("byo")
    files = {}
    for key in EXPORTS:
        name, path = key.split("-")
        files[key] = export_reference(name, root / f"{key}.onnx", dynamo=path == "dynamo")
    images = np.random.default_rng(0).integers(0, 256, size=(12, 1, 28, 28), dtype=np.uint8)
    np.savez(root / "calibration.npz", images=images)
    files["calibration"] = root / "calibration.npz"
    return files


@pytest.fixture
def bare(exports, tmp_path):
    """A private copy of each export (a build writes beside its file)."""
    def copy(key: str):
        for suffix in ("", ".data"):
            src = exports[key].with_name(exports[key].name + suffix)
            if src.exists():
                shutil.copy(src, tmp_path / src.name)
        return tmp_path / exports[key].name
    return copy


def _manifest(build_dir):
    return json.loads((build_dir / "manifest.json").read_text())


@pytest.mark.parametrize("key", EXPORTS)
def test_reference_network_builds_from_the_bare_file_layer_wise(exports, bare, key, capsys):
    model = bare(key)
    code = main(["build", str(model), "--calibration", str(exports["calibration"]), "--stop-step", "estimate",
                 "--verify-samples", "12", "--no-progress"])
    assert code == 0, capsys.readouterr().err
    build = model.with_name(f"{key}-build-pynq-z2")               # beside the file, named after it
    m = _manifest(build)
    gate = m["bit_exact"]
    assert gate["passed"] and gate["layerwise"] and gate["n"] == 12
    assert gate["compared"].startswith("layer-wise")
    assert len(gate["tensors"]) == 6   # the input quantizer, three hidden layers, the scores, the class
    source = m["source"]
    assert source["export_check"]["status"] == "not an hwq export"
    assert source["input"]["kind"] == "pixels/255"
    assert source["input"]["quantizer"].endswith("after Reshape, Mul, Sub")      # bnn_pynq's 2x - 1
    assert ("gemm_to_matmul" in source["import"]["passes"]) == key.endswith("dynamo")
    assert "static_inputs" in source["import"]["passes"]
    assert source["import"]["check"]["passed"]
    assert m["accelerator"]["input"]["convention"]["formula"] == "x = pixels / 255"
    assert m["accelerator"]["model_id"] == key


@pytest.mark.parametrize("key", EXPORTS)
def test_reference_network_builds_on_the_open_backend(exports, bare, key):
    """The same files through hwq's own Verilog: the input Thresholding and the Reshape of the 28x28 input are
    blocks of the open backend; the RTL simulation is bit-exact with the NumPy reference, which equals finn's
    execution of the HW graph (check_reference), which the FINN gate compared layer-wise with the file."""
    from hwq.rtl.build import OpenBuildConfig, run_open_build

    model = bare(key)
    m = run_open_build(model, OpenBuildConfig(board="ulx3s-85f", calibration=str(exports["calibration"]),
                                              verify_samples=2, synthesise=False))
    assert m["status"] == "done" and m["bit_exact"]["layerwise"] and m["simulation"]["bit_exact"]
    assert model.with_name(f"{key}-build-ulx3s-85f").is_dir()
    assert next(iter(m["layers"])).startswith("Thresholding")
    assert m["accelerator"]["input"]["convention"]["kind"] == "pixels/255"


def test_a_fastest_folding_is_one_finn_can_generate(exports, bare):
    """SetFolding gives the 28x28 input's Reshape a PE that does not divide 28; the search lowers it, so FINN's
    code generation (hw_codegen, the last step before the vendor tools) succeeds."""
    model = bare("tfc_2w2a-ts")
    m = run_build(model, BuildConfig(calibration=str(exports["calibration"]), verify_samples=4), progress=False)
    assert m["status"] == "done" and m["codegen"]["status"] == "done"
    folding = json.loads((model.with_name("tfc_2w2a-ts-build-pynq-z2") / "folding.json").read_text())
    reshape = next(v for k, v in folding.items() if k.startswith("Reshape"))
    assert 28 % reshape["PE"] == 0


def test_a_build_with_a_reshape_layer_executes_outside_the_build(exports, bare):
    """The emulated board executes the HW graph in a fresh process, where finn-plus's Reshape layer is not
    registered unless imported (finn_compat workaround 8); it classifies like the build's gate."""
    import subprocess
    import sys

    model = bare("tfc_1w1a-ts")
    run_build(model, BuildConfig(calibration=str(exports["calibration"]), verify_samples=2, codegen=False),
              progress=False, stop_step="estimate")
    build = model.with_name("tfc_1w1a-ts-build-pynq-z2")
    images = np.load(exports["calibration"])["images"][:3]
    code = ("import sys, numpy as np; from hwq.accelerator_model import BuildModel; "
            f"m = BuildModel.from_build_dir({str(build)!r}); x = np.load({str(exports['calibration'])!r})['images']; "
            "print([m.classify(m.to_device_bytes(i)) for i in x[:3]])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    from hwq.dataflow.gates import run_hw_graph
    from qonnx.core.modelwrapper import ModelWrapper

    hw = ModelWrapper(str(build / "intermediate" / "create_dataflow_partition.onnx"))
    expected, _, _ = run_hw_graph(hw, images.astype(np.float32), [hw.graph.output[0].name])
    assert out.stdout.strip() == str([int(c) for c in expected[hw.graph.output[0].name].reshape(-1)])


def test_a_folding_file_finn_cannot_generate_is_refused_naming_the_layer(exports, bare, tmp_path):
    model = bare("tfc_1w1a-ts")
    first = run_build(model, BuildConfig(calibration=str(exports["calibration"]), verify_samples=2),
                      progress=False, stop_step="fold")
    folding = json.loads((model.with_name("tfc_1w1a-ts-build-pynq-z2") / "folding.json").read_text())
    reshape = next(k for k in folding if k.startswith("Reshape"))
    folding[reshape]["PE"] = 16
    path = tmp_path / "bad-folding.json"
    path.write_text(json.dumps(folding))
    with pytest.raises(FoldingError, match=rf"node '{reshape}' \(Reshape_rtl\): PE=16 cannot be generated "
                                           r"\(PE must divide last axis\); the failed build is in"):
        run_build(model, BuildConfig(calibration=str(exports["calibration"]), verify_samples=2,
                                     folding_file=str(path)), progress=False, stop_step="fold")
    assert first["status"] == "stopped"


def test_a_folder_with_only_model_onnx_and_a_dataset_builds(exports, tmp_path):
    run = tmp_path / "theirs"
    run.mkdir()
    shutil.copy(exports["tfc_1w1a-ts"], run / "model.onnx")
    m = run_build(run, BuildConfig(calibration=str(exports["calibration"]), verify_samples=3), progress=False,
                  stop_step="verify_bit_exact")
    assert m["bit_exact"]["passed"] and (run / "build-pynq-z2" / "manifest.json").is_file()


# --- input conventions ---------------------------------------------------------------------------------------------
def test_a_user_given_input_scale_is_what_the_gate_feeds(exports, bare):
    """bnn_pynq's input is pixels / 255; --input-scale 1/255 says so explicitly (kind ``user``); --input-scale
    1/510 is a different model input, and the thresholds FINN builds for it differ (the gate still compares the
    same claim: the graph on that input against the hardware on the pixels)."""
    model = bare("tfc_1w1a-ts")
    calibration = str(exports["calibration"])
    m = run_build(model, BuildConfig(calibration=calibration, verify_samples=6, input_scale=1 / 255),
                  progress=False, stop_step="verify_bit_exact")
    assert m["source"]["input"]["kind"] == "user" and m["bit_exact"]["layerwise"] and m["bit_exact"]["passed"]
    m = run_build(model, BuildConfig(calibration=calibration, verify_samples=6, input_scale=1 / 510,
                                     input_offset=0.25, out_dir=str(model.parent / "half")),
                  progress=False, stop_step="verify_bit_exact")
    assert m["source"]["input"]["formula"] == "x = pixels * 0.00196078 + 0.25" and m["bit_exact"]["passed"]


def test_an_input_annotated_uint8_takes_the_pixels_themselves(exports, bare):
    """FINN's own flow prepends x / 255 to the graph and annotates the input UINT8: hwq then sends the pixels."""
    from qonnx.core.datatype import DataType
    from qonnx.core.modelwrapper import ModelWrapper

    from hwq.dataflow.input_convention import InputConvention, UseUint8Input
    from hwq.dataflow.model_import import load_qonnx

    model, _ = load_qonnx(bare("tfc_1w1a-ts"))
    model = model.transform(UseUint8Input(InputConvention("pixels/255", 1 / 255, 0.0, "")))
    assert model.get_tensor_datatype(model.graph.input[0].name) == DataType["UINT8"]
    path = bare("tfc_1w1a-ts").with_name("finn-style.onnx")
    model.save(str(path))
    m = run_build(path, BuildConfig(calibration=str(exports["calibration"]), verify_samples=6), progress=False,
                  stop_step="verify_bit_exact")
    assert m["source"]["input"]["kind"] == "pixels" and m["bit_exact"]["passed"] and m["bit_exact"]["layerwise"]
    assert ModelWrapper(str(path)).graph.node[0].name == "hwq_input_scale"


# --- one-line errors -------------------------------------------------------------------------------------------------
def _hand_made(path, nodes, inits, in_shape=(1, 4), out_shape=(1, 3), opsets=None):
    graph = helper.make_graph(nodes, "hand_made", [helper.make_tensor_value_info("x", TensorProto.FLOAT, in_shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)],
                              initializer=[helper.make_tensor(k, TensorProto.FLOAT, v.shape, v.ravel())
                                           for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=opsets or [helper.make_opsetid("", 13),
                                                              helper.make_opsetid("qonnx.custom_op.general", 1)])
    onnx.save(model, str(path))
    return path


def _quant(name, src, dst, rounding="ROUND"):
    return helper.make_node("Quant", [src, "s", "z", "b"], [dst], name=name, domain="qonnx.custom_op.general",
                            signed=1, narrow=0, rounding_mode=rounding)


QUANT_PARAMS = {"s": np.array(0.5, np.float32), "z": np.array(0.0, np.float32), "b": np.array(4.0, np.float32)}


def test_an_unquantized_input_is_a_line_naming_the_node(tmp_path, exports):
    path = _hand_made(tmp_path / "float-in.onnx",
                      [helper.make_node("MatMul", ["x", "w"], ["h"], name="fc1"), _quant("act", "h", "y")],
                      {"w": np.ones((4, 3), np.float32), **QUANT_PARAMS})
    with pytest.raises(MappingError) as err:
        run_build(path, BuildConfig(dataset="digits"), progress=False)
    assert str(err.value).startswith(f"{path}: graph input 'x' reaches MatMul 'fc1' before any quantizer")
    assert "\n" not in str(err.value) and not list(tmp_path.glob("*-build-*"))


def test_ceil_rounding_of_an_activation_is_refused_naming_the_node(tmp_path):
    path = _hand_made(tmp_path / "ceil.onnx",
                      [_quant("q_in", "x", "xq"), helper.make_node("MatMul", ["xq", "w"], ["h"], name="fc1"),
                       _quant("act_ceil", "h", "y", rounding="CEIL")],
                      {"w": np.ones((4, 3), np.float32), **QUANT_PARAMS})
    with pytest.raises(MappingError, match=r"ceil\.onnx: node 'act_ceil' \(Quant\) rounds with "
                                           r"rounding_mode=CEIL; FINN maps .* export it with ROUND"):
        run_build(path, BuildConfig(dataset="digits"), progress=False)


def _with_floor_activations(src, dst):
    """``src`` with every activation Quant (not those on weights) rounding down; their names."""
    model = onnx.load(str(src), load_external_data=False)
    weights = {i.name for i in model.graph.initializer}
    names = []
    for node in model.graph.node:
        if node.op_type == "Quant" and node.input[0] not in weights:
            next(a for a in node.attribute if a.name == "rounding_mode").s = b"FLOOR"
            names.append(node.name)
    onnx.save(model, str(dst))
    return names


def test_floor_rounding_activations_build_exactly(exports, bare, tmp_path):
    """FINN builds every activation quantizer as ROUND; hwq's FLOOR passes make a network whose quantizers
    (input and hidden) all round down build bit-exact layer by layer; the same hardware is not the ROUND network."""
    from qonnx.core.modelwrapper import ModelWrapper

    from hwq.dataflow import gates
    from hwq.dataflow.errors import BitExactnessError
    from hwq.dataflow.model_import import load_qonnx

    path = tmp_path / "tfc-floor.onnx"
    floors = _with_floor_activations(bare("tfc_2w2a-ts"), path)
    m = run_build(path, BuildConfig(calibration=str(exports["calibration"]), verify_samples=12), progress=False,
                  stop_step="estimate")
    gate = m["bit_exact"]
    assert gate["passed"] and gate["layerwise"] and len(gate["tensors"]) == 6
    assert gate["floor_ties"].startswith("4 FLOOR quantizer(s) of the reference floor x/s raised by 2e-05")
    assert m["floor_quants"] == floors and len(floors) == 4          # the input quantizer and three hidden
    build = tmp_path / "tfc-floor-build-pynq-z2"
    hw_graph = ModelWrapper(str(build / "intermediate" / "create_dataflow_partition.onnx"))
    images = np.load(exports["calibration"])["images"]
    as_round, _ = load_qonnx(exports["tfc_2w2a-ts"])
    with pytest.raises(BitExactnessError):
        gates.check_bit_exact(as_round, hw_graph, images)


def test_floor_rounding_activations_on_the_open_backend(exports, bare, tmp_path):
    """The open backend reads the FINN HW graph's thresholds, so the floor's snapped thresholds are its too."""
    from hwq.rtl.build import OpenBuildConfig, run_open_build

    path = tmp_path / "tfc-floor.onnx"
    _with_floor_activations(bare("tfc_2w2a-ts"), path)
    m = run_open_build(path, OpenBuildConfig(board="ulx3s-85f", calibration=str(exports["calibration"]),
                                             verify_samples=2, synthesise=False))
    assert m["status"] == "done" and m["bit_exact"]["layerwise"] and m["simulation"]["bit_exact"]
    assert m["bit_exact"]["floor_ties"].startswith("4 FLOOR quantizer(s)")


def test_a_floor_tie_the_float_accumulator_misses_counts_as_its_integer(tmp_path):
    """QONNX floors an exact tie that float rounding put at -1e-8 to -1; the gate's reference takes it as 0, as
    the hardware's snapped thresholds do (hwq.dataflow.floor_rounding)."""
    from qonnx.core.datatype import DataType
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.core.onnx_exec import execute_onnx
    from qonnx.transformation.infer_shapes import InferShapes

    from hwq.dataflow.floor_rounding import SnapFloorThresholds, tie_tolerant_reference
    from hwq.dataflow.provenance import record_user_nodes

    path = _hand_made(tmp_path / "floor.onnx", [_quant("act_floor", "x", "y", rounding="FLOOR")],
                      dict(QUANT_PARAMS), out_shape=(1, 4))
    model = ModelWrapper(str(path)).transform(InferShapes())
    x = np.array([[-1e-8, 0.5 - 1e-7, 0.7, -0.3]], np.float32)  # in steps of 0.5: ties at 0 and 1, then 1.4, -0.6
    plain = execute_onnx(model, {"x": x})["y"]
    reference, count = tie_tolerant_reference(model)
    tolerant = execute_onnx(reference.transform(InferShapes()), {"x": x})["y"]
    assert count == 1 and plain.tolist() == [[-0.5, 0.0, 0.5, -0.5]]
    assert tolerant.tolist() == [[0.0, 0.5, 0.5, -0.5]]
    assert [n.op_type for n in model.graph.node] == ["Quant"]       # the user's graph is left as it was

    # thresholds on an integer accumulator that streamlining left a float rounding off the floor's integers
    mt = helper.make_node("MultiThreshold", ["acc", "t"], ["out"], name="MultiThreshold_0",
                          domain="qonnx.custom_op.general", out_dtype="INT4")
    mt.doc_string = record_user_nodes(model).graph.node[0].doc_string    # made from the user's 'act_floor'
    graph = helper.make_graph([mt], "hw", [helper.make_tensor_value_info("acc", TensorProto.FLOAT, (1, 2))],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, (1, 2))],
                              initializer=[helper.make_tensor("t", TensorProto.FLOAT, (1, 3),
                                                              [0.999999, 2.00001, 2.6])])
    hw = ModelWrapper(helper.make_model(graph))
    hw.set_tensor_datatype("acc", DataType["INT8"])
    snap = SnapFloorThresholds.for_user_graph(model)
    hw = hw.transform(snap)
    assert hw.get_initializer("t").tolist() == [[1.0, 2.0, 2.5999999046325684]] and snap.changed == 2


def _thresholds_of(model, quant, acc_scale, levels):
    """A MultiThreshold on an integer accumulator, made from the user's ``quant`` (``round(acc * acc_scale)``), its
    thresholds at the half steps as float32 streamlining computes them."""
    from qonnx.core.datatype import DataType
    from qonnx.core.modelwrapper import ModelWrapper

    from hwq.dataflow.provenance import record_user_nodes

    steps = (np.arange(levels[0], levels[1]) + 0.5).astype(np.float32) / np.float32(acc_scale)
    mt = helper.make_node("MultiThreshold", ["acc", "t"], ["out"], name="MultiThreshold_0",
                          domain="qonnx.custom_op.general", out_dtype="INT5", out_bias=float(levels[0]))
    mt.doc_string = next(n for n in record_user_nodes(model).graph.node if n.name == quant).doc_string
    graph = helper.make_graph([mt], "hw", [helper.make_tensor_value_info("acc", TensorProto.FLOAT, (1, 4))],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, (1, 4))],
                              initializer=[helper.make_tensor("t", TensorProto.FLOAT, (1, len(steps)), steps)])
    hw = ModelWrapper(helper.make_model(graph))
    hw.set_tensor_datatype("acc", DataType["INT32"])
    return hw


def test_a_round_tie_the_float_accumulator_misses_is_decided_as_the_thresholds_do(tmp_path):
    """An 8-bit first layer's accumulator of -10333 on a threshold: QONNX computes -6.5000005 and rounds to -7,
    the half-to-even thresholds give -6, and so does the gate's reference (hwq.dataflow.round_ties); a threshold
    one level off, at a tie or not, still differs from the reference."""
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.core.onnx_exec import execute_onnx
    from qonnx.transformation.infer_shapes import InferShapes

    from hwq.dataflow.passes_branches import RoundHalfEvenAtTies
    from hwq.dataflow.round_ties import round_tie_reference

    acc_scale = np.float32(6.5 / 10333)
    nodes = [helper.make_node("Mul", ["x", "c"], ["h"], name="bn"), _quant("act_round", "h", "y")]
    params = {"c": acc_scale, "s": np.array(1.0, np.float32), "z": np.array(0.0, np.float32),
              "b": np.array(5.0, np.float32)}
    model = ModelWrapper(str(_hand_made(tmp_path / "round.onnx", nodes, params, out_shape=(1, 4))))
    model = model.transform(InferShapes())
    acc = np.array([[-10333, -10332, 5000, 0]], np.float32)
    plain = execute_onnx(model, {"x": acc})["y"]
    assert np.float32(-10333) * acc_scale == np.float32(-6.5000005) and plain.tolist() == [[-7, -6, 3, 0]]
    reference, masks = round_tie_reference(model)
    ctx = execute_onnx(reference.transform(InferShapes()), {"x": acc}, return_full_exec_context=True)
    assert ctx["y"].tolist() == [[-6, -6, 3, 0]] and ctx[masks[0]].tolist() == [[1, 0, 0, 0]]
    assert [n.op_type for n in model.graph.node] == ["Mul", "Quant"]   # the user's graph is left as it was

    def hardware(thresholds):
        hw = _thresholds_of(model, "act_round", acc_scale, (-16, 15))
        if thresholds is not None:
            hw.set_initializer("t", thresholds(hw.get_initializer("t")))
        ties = RoundHalfEvenAtTies.for_user_graph(model)
        return execute_onnx(hw.transform(ties), {"acc": acc})["out"], ties.changed

    out, moved = hardware(None)
    assert moved >= 1 and (out == ctx["y"]).all()                       # the tie goes as in the reference

    def step_at(level, at):
        def edit(t):
            t = t.copy()
            t[0, level + 16] = at
            return t
        return edit

    wrong, _ = hardware(step_at(2, 5001.0))                  # the step from 2 to 3 past the accumulator of 5000
    assert wrong.tolist() == [[-6, -6, 2, 0]] and (wrong != ctx["y"]).sum() == 1
    up, _ = hardware(step_at(-7, -10332.5))                  # the tie's own step moved by half an integer
    assert up.tolist() == [[-7, -6, 3, 0]] and (up != ctx["y"]).sum() == 1


def test_a_graph_the_checker_rejects_shows_the_checkers_message(tmp_path):
    path = _hand_made(tmp_path / "bad.onnx", [helper.make_node("Relu", ["x", "x"], ["y"], name="two_inputs"),
                                               _quant("q", "y", "z")], dict(QUANT_PARAMS), out_shape=(1, 4))
    with pytest.raises(ModelFileError, match=r"bad\.onnx: not a valid ONNX graph \(onnx\.checker: .*Relu.*\)$"):
        run_build(path, BuildConfig(dataset="digits"), progress=False)


def test_a_missing_opset_import_is_added(tmp_path):
    """qonnx ships files whose custom domain has no opset import; the import tidying adds it (and says so)."""
    from hwq.dataflow.model_import import load_qonnx

    path = _hand_made(tmp_path / "no-opset.onnx", [_quant("q_in", "x", "y")], dict(QUANT_PARAMS), out_shape=(1, 4),
                      opsets=[helper.make_opsetid("", 13)])
    _, report = load_qonnx(path)
    assert report["opset_imports"] == {"qonnx.custom_op.general": 1} and report["passes"][0] == "opset_imports"


@pytest.mark.parametrize("args,message", [
    (["{model}"], r"{model}: no dataset for the gate's test images: give --dataset NAME \(digits, mnist, cifar10\) "
                  r"or --calibration FILE\.npz$"),
    (["{model}", "--dataset", "digits"], r"{model}: graph input '.*' takes \[1, 1, 28, 28\], the images of digits "
                                         r"are \[1, 8, 8\] \(64 values\)$"),
    (["{tmp}/model.onnx", "--dataset", "mnist"], r"{tmp}/model\.onnx: ONNX file not found$"),
    (["{tmp}/dir.onnx", "--dataset", "mnist"], r"{tmp}/dir\.onnx: a folder; expected a QONNX file"),
    (["{model}", "--calibration", "{tmp}/none.npz"], r"calibration \(--calibration\) .*none\.npz: file not found$"),
    (["{model}", "--dataset", "imagenet"], r"dataset \(--dataset\) 'imagenet': expected one of digits, mnist"),
    (["{model}", "--calibration", "{tmp}/float.npz"], r"float\.npz: expected uint8 pixels 0\.\.255"),
])
def test_bad_sources_are_one_line_errors(exports, bare, tmp_path, capsys, args, message):
    model = bare("tfc_1w1a-ts")
    (tmp_path / "dir.onnx").mkdir()
    np.savez(tmp_path / "float.npz", images=np.zeros((2, 1, 28, 28), np.float32) + 0.5)
    fill = {"model": str(model), "tmp": str(tmp_path)}
    assert main(["build", *[a.format(**fill) for a in args], "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err
    import re
    assert re.search(message.format(**{k: re.escape(v) for k, v in fill.items()}), err), err


def test_a_source_without_its_own_record_is_not_treated_as_an_hwq_export(exports, tmp_path):
    """An hwq run folder (metrics.json) whose export.json is missing is still refused: it is not a bare model."""
    from hwq.dataflow.build import UnverifiedModelError

    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(exports["tfc_1w1a-ts"], run / "model.onnx")
    (run / "metrics.json").write_text(json.dumps({"config": {"dataset": "mnist"}}))
    with pytest.raises(UnverifiedModelError):
        run_build(run, BuildConfig(calibration=str(exports["calibration"])), progress=False)
    with pytest.raises(ConfigError, match="exclude each other"):
        BuildConfig(dataset="mnist", calibration="x.npz")


@pytest.mark.slow
@pytest.mark.parametrize("how", ["ts", "dynamo"])
def test_cnv_reference_network_builds_layer_wise(tmp_path, how):
    """FINN's CNV-1w1a (8-bit Q1.7 input after 2x - 1, three conv blocks with max-pools), both exports."""
    import torch
    from brevitas.export import export_qonnx
    from brevitas_examples.bnn_pynq.models import model_with_cfg

    torch.manual_seed(0)
    model, _ = model_with_cfg("cnv_1w1a", pretrained=False)
    path = tmp_path / f"cnv_1w1a-{how}.onnx"
    export_qonnx(model.eval(), input_t=torch.rand(1, 3, 32, 32), export_path=str(path), dynamo=how == "dynamo")
    np.savez(tmp_path / "images.npz",
             images=np.random.default_rng(1).integers(0, 256, size=(3, 3, 32, 32), dtype=np.uint8))
    m = run_build(path, BuildConfig(calibration=str(tmp_path / "images.npz"), verify_samples=3, codegen=False),
                  progress=False, stop_step="estimate")
    assert m["bit_exact"]["passed"] and m["bit_exact"]["layerwise"]
    assert m["source"]["input"]["quantizer"].startswith("Quant") and "Mul, Sub" in m["source"]["input"]["quantizer"]
    ops = [layer["op_type"].split("_")[0] for layer in m["estimates"]["layers"]]
    assert ops[0] == "Thresholding" and {"ConvolutionInputGenerator", "MVAU", "Pool", "LabelSelect"} <= set(ops)


@pytest.mark.slow
def test_cnv_reference_network_builds_on_the_open_backend(tmp_path):
    """CNV-1w1a (TorchScript export) through hwq's Verilog: two CIFAR-sized images simulated in Icarus (21,600
    cycles each at the fastest Pynq-Z2 folding: a few minutes; two, so that there is an interval between
    results), bit-exact, at the folding bound."""
    import torch
    from brevitas.export import export_qonnx
    from brevitas_examples.bnn_pynq.models import model_with_cfg

    from hwq.rtl.build import OpenBuildConfig, run_open_build

    torch.manual_seed(0)
    model, _ = model_with_cfg("cnv_1w1a", pretrained=False)
    path = tmp_path / "cnv_1w1a.onnx"
    export_qonnx(model.eval(), input_t=torch.rand(1, 3, 32, 32), export_path=str(path), dynamo=False)
    np.savez(tmp_path / "images.npz",
             images=np.random.default_rng(1).integers(0, 256, size=(2, 3, 32, 32), dtype=np.uint8))
    m = run_open_build(path, OpenBuildConfig(board="ulx3s-85f", calibration=str(tmp_path / "images.npz"),
                                             verify_samples=2, synthesise=False))
    assert m["status"] == "done" and m["bit_exact"]["layerwise"] and m["simulation"]["bit_exact"]
    assert m["simulation"]["cycles_per_image"] == m["simulation"]["folding_bound_cycles"]
