# SPDX-License-Identifier: BSD-3-Clause
"""The binary MobileNet in the FINN build: depthwise layers as VVAUs, -1 padding as bit 0, both gates passing.

A W1A1 ``mobilenet_tiny`` pads each depthwise convolution's bipolar input with -1 (``ConstantPad2d(1, -1)``).
FINN's padding hardware writes bit 0, which is -1 of a bipolar stream and 0 of the 0/1 stream that FINN's XNOR
layers read; hwq's passes put the pad there (``hwq.dataflow.passes``, docs/dataflow.md "Binary MobileNet").
"""

from __future__ import annotations

import copy
import numpy as np
import pytest
from onnx import TensorProto, helper
from qonnx.core.datatype import DataType
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.core.onnx_exec import execute_onnx
from qonnx.custom_op.registry import getCustomOp
from qonnx.transformation.infer_datatypes import InferDataTypes
from qonnx.transformation.infer_shapes import InferShapes
from qonnx.util.basic import qonnx_make_model

from hwq.dataflow import BuildConfig, run_build
from hwq.dataflow import finn_compat
from hwq.dataflow.errors import MappingError
from hwq.dataflow.passes import binary_depthwise_matmuls

# --- a briefly trained digits mobilenet_tiny, built -------------------------------------------------------------


@pytest.fixture(scope="module", params=["uniform", "bitat"])
def mobilenet_build(request, tmp_path_factory):
    """A W1A1 mobilenet_tiny (width 0.5) trained briefly on digits with ``quant``, exported, built for the
    Pynq-Z2: (quant, manifest, build directory). BiTAT trains 1 epoch (its epochs cost several plain ones); its
    export is a plain W1A1 network (tests/test_bitat.py), which must build like the uniform one."""
    from hwq.export import run_export
    from hwq.train import TrainConfig, run_train

    quant = request.param
    bitat = quant == "bitat"
    run = tmp_path_factory.mktemp("runs") / f"mobilenet_tiny-{quant}"
    config = TrainConfig(model="mobilenet_tiny", dataset="digits", quant=quant, wbits=1, abits=1,
                         epochs=1 if bitat else 2, lr=0.01 if bitat else 0.02, model_options={"width": 0.5})
    run_train(config, run, progress=False)
    assert run_export(run)["verification"]["passed"]
    out = run / "build-pynq-z2"
    manifest = run_build(run, BuildConfig(board="pynq-z2", out_dir=str(out), verify_samples=20), progress=False)
    return quant, manifest, out


def test_mobilenet_builds_with_both_gates(mobilenet_build):
    quant, manifest, out = mobilenet_build
    assert manifest["status"] == "done", manifest.get("error")
    exact = manifest["bit_exact"]
    assert exact["passed"] and exact["first_difference"] is None and exact["classes_match"] == 1.0
    # compared layer by layer: 7 binary activations (stem, 3 x depthwise + pointwise), the classifier's integer
    # popcounts, the classes
    assert exact["layerwise"] and exact["integer_output_compared"] and len(exact["tensors"]) == 9
    assert all(t["values_differing"] == 0 for t in exact["tensors"])
    assert manifest["integer_range"]["passed"] and not manifest["integer_range"]["problems"]
    assert len(manifest["binary_depthwise"]) == 3


def test_mobilenet_depthwise_layers_are_vvaus_on_binary_streams(mobilenet_build):
    _, manifest, out = mobilenet_build
    model = ModelWrapper(str(out / "intermediate" / "hw_codegen.onnx"))  # checkpoints are named by step
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("VVAU_hls") == 3 and "XnorPopcountMatMul" not in ops
    assert ops.count("MVAU_hls") == 5  # stem, 3 pointwise (XNOR), classifier (XNOR)
    for node in model.get_nodes_by_op_type("VVAU_hls"):
        inst = getCustomOp(node)
        assert inst.get_nodeattr("inputDataType") == "BINARY" and not inst.get_nodeattr("binaryXnorMode")
        assert inst.get_nodeattr("Kernel") == [3, 3]
        # its input is padded by an FMPadding (bit 0) and windowed by a depthwise sliding-window generator
        swg = model.find_producer(node.input[0])
        pad = model.find_producer(swg.input[0])
        assert swg.op_type.startswith("ConvolutionInputGenerator") and getCustomOp(swg).get_nodeattr("depthwise")
        assert pad.op_type.startswith("FMPadding") and getCustomOp(pad).get_nodeattr("Padding") == [1, 1, 1, 1]
        assert getCustomOp(pad).get_nodeattr("inputDataType") == "BINARY"
    # estimates per layer, as for any network
    layers = {layer["node"]: layer for layer in manifest["estimates"]["layers"]}
    for node in model.get_nodes_by_op_type("VVAU_hls"):
        assert layers[node.name]["cycles"] > 0 and layers[node.name]["LUT"] > 0
    assert manifest["estimates"]["total"]["estimated_fps"] > 0
    assert max(manifest["estimates"]["utilisation"].values()) <= 0.8
    # HLS code for the VVAUs reads 0/1 activations (finn_compat workaround 6)
    sources = [out / f for f in manifest["codegen"]["files"] if "VVAU_hls" in f and f.endswith(".cpp")]
    assert len(sources) == 3
    assert all("Vector_Vector_Activate_Stream_Batch" in s.read_text() and "Slice<ap_uint<1>>" in s.read_text()
               for s in sources)


# --- the padding passes on small hand-made graphs ----------------------------------------------------------------
CH, HW = 2, 4


def _multithreshold(inp, thresholds, out, bipolar=True):
    return helper.make_node("MultiThreshold", [inp, thresholds], [out], domain="qonnx.custom_op.general",
                            out_dtype="BIPOLAR" if bipolar else "BINARY", out_scale=2.0 if bipolar else 1.0,
                            out_bias=-1.0 if bipolar else 0.0)


def _padded_binary_conv(pad_value: float, groups: int, out_ch: int, seed: int = 0) -> ModelWrapper:
    """``INT4 image -> bipolar MultiThreshold -> Pad(pad_value) -> 3x3 conv (bipolar weights, ``groups``) ->
    0/1 MultiThreshold``: a binary network's padded convolution, as FINN-ONNX after ``qonnx_to_finn`` (the last
    activation 0/1, as FINN makes it when a binary layer follows)."""
    rng = np.random.default_rng(seed)
    nodes = [
        _multithreshold("x", "t0", "a0"),
        helper.make_node("Pad", ["a0", "pads", "pad_value"], ["p0"], mode="constant"),
        helper.make_node("Conv", ["p0", "w"], ["c0"], group=groups, kernel_shape=[3, 3], pads=[0, 0, 0, 0],
                         strides=[1, 1], dilations=[1, 1]),
        _multithreshold("c0", "t1", "y", bipolar=False),
    ]
    graph = helper.make_graph(
        nodes, "padded_binary_conv",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, CH, HW, HW])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, out_ch, HW, HW])])
    model = ModelWrapper(qonnx_make_model(graph, producer_name="hwq-test"))
    model.set_initializer("t0", np.zeros((CH, 1), dtype=np.float32))
    model.set_initializer("pads", np.array([0, 0, 1, 1, 0, 0, 1, 1], dtype=np.int64))
    model.set_initializer("pad_value", np.asarray(pad_value, dtype=np.float32))
    weights = rng.choice([-1.0, 1.0], size=(out_ch, CH // groups, 3, 3)).astype(np.float32)
    model.set_initializer("w", weights)
    # thresholds on odd values: a sum of an odd number of +-1 terms never ties with them
    fan_in = 9 * CH // groups
    model.set_initializer("t1", rng.choice(np.arange(-fan_in + 2, fan_in - 1, 2), size=(out_ch, 1)).astype(np.float32))
    model.set_tensor_datatype("x", DataType["INT4"])
    model.set_tensor_datatype("w", DataType["BIPOLAR"])
    return model.transform(InferShapes()).transform(InferDataTypes())


def _images(n: int = 16, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).integers(-8, 8, size=(n, 1, CH, HW, HW)).astype(np.float32)


def _run(model: ModelWrapper, images: np.ndarray) -> np.ndarray:
    name_in, name_out = model.graph.input[0].name, model.graph.output[0].name
    return np.stack([execute_onnx(model, {name_in: x})[name_out] for x in images])


def _im2col(model: ModelWrapper):
    (im2col,) = model.get_nodes_by_op_type("Im2Col")
    return getCustomOp(im2col)


def test_depthwise_padding_becomes_bit_zero_of_a_binary_stream():
    """The -1 padding of a bipolar depthwise conv becomes pad 0 of a 0/1 stream; the graph computes the same,
    after streamlining and as HW layers (FMPadding pads 0), and would not with the bipolar pad value kept."""
    from finn.transformation.fpgadataflow.convert_to_hw.conv_inp_gen import InferConvInpGen
    from finn.transformation.fpgadataflow.convert_to_hw.vector_vector_activation import InferVectorVectorActivation

    original = _padded_binary_conv(-1.0, groups=CH, out_ch=CH)
    images = _images()
    expected = _run(original, images)
    # the border outputs depend on the pad value: +1 padding gives another result
    assert not np.array_equal(_run(_padded_binary_conv(1.0, groups=CH, out_ch=CH), images), expected)

    model = finn_compat.streamline(original, cfg=None)
    assert not model.get_nodes_by_op_type("Pad") and not model.get_nodes_by_op_type("XnorPopcountMatMul")
    im2col = _im2col(model)
    assert im2col.get_nodeattr("pad_amount") == [1, 1, 1, 1] and im2col.get_nodeattr("pad_value") == 0
    assert im2col.get_nodeattr("depthwise") == 1
    assert model.get_tensor_datatype(im2col.onnx_node.input[0]) == DataType["BINARY"]
    assert len(binary_depthwise_matmuls(model)) == 1
    assert np.array_equal(_run(model, images), expected)

    # a wrong pad value in the 0/1 stream (1, bipolar +1) computes something else; the bipolar -1 kept as it was
    # is not even a value of the stream (qonnx's Im2Col refuses it)
    for value, check in ((1, lambda run: not np.array_equal(run(), expected)), (-1, None)):
        wrong = ModelWrapper(copy.deepcopy(model.model))
        _im2col(wrong).set_nodeattr("pad_value", value)
        if check is None:
            with pytest.raises(AssertionError, match="pad_val"):
                _run(wrong, images)
        else:
            assert check(lambda: _run(wrong, images))

    # as FINN HW layers: FMPadding (Python: pads 0; hardware: bit 0) + sliding window + VVAU on 0/1 inputs (the
    # first activation stays a MultiThreshold: it reads the NCHW graph input)
    hw = model.transform(InferVectorVectorActivation()).transform(InferConvInpGen())
    ops = [n.op_type for n in hw.graph.node]
    assert ops[ops.index("FMPadding"):ops.index("VVAU") + 1] == ["FMPadding", "ConvolutionInputGenerator", "VVAU"]
    (vvau,) = hw.get_nodes_by_op_type("VVAU")
    assert getCustomOp(vvau).get_nodeattr("inputDataType") == "BINARY"
    assert np.array_equal(_run(hw, images), expected)


def test_xnor_conv_padding_becomes_bit_zero():
    """An ordinary binary conv padded with -1 becomes an XNOR-popcount layer whose Im2Col pads 0/1 data with 0."""
    original = _padded_binary_conv(-1.0, groups=1, out_ch=3)
    images = _images()
    model = finn_compat.streamline(original, cfg=None)
    assert len(model.get_nodes_by_op_type("XnorPopcountMatMul")) == 1 and not binary_depthwise_matmuls(model)
    assert _im2col(model).get_nodeattr("pad_value") == 0
    expected = _run(original, images)
    assert np.array_equal(_run(model, images), expected)
    _im2col(model).set_nodeattr("pad_value", 1)  # bipolar +1: another result
    assert not np.array_equal(_run(model, images), expected)


@pytest.mark.parametrize("groups", [CH, 1])
def test_a_bipolar_stream_padded_with_zero_is_a_mapping_error(groups):
    """Zero (a conv's own padding of a bipolar stream) has no 1-bit encoding: a clear error, not a wrong graph."""
    with pytest.raises(MappingError, match="pads a bipolar stream with 0"):
        finn_compat.streamline(_padded_binary_conv(0.0, groups=groups, out_ch=CH), cfg=None)
