# SPDX-License-Identifier: BSD-3-Clause
"""The stream blocks (standalone thresholds, padding, global sum pool, QuantAvgPool): their readers and NumPy
references against finn-plus's execution of the same nodes, each Verilog block against its reference with random
shapes, folding and producer beat widths under random input gaps and output back-pressure (cocotb + Icarus), the
readers' refusals, and a chain of them with a planted mismatch."""

from __future__ import annotations

import subprocess

import numpy as np
import pytest
from onnx import TensorProto, helper
from qonnx.core.datatype import DataType
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.core.onnx_exec import execute_onnx
from qonnx.util.basic import qonnx_make_model

from hwq.errors import VerificationError
from hwq.rtl import reference
from hwq.rtl.generate import generate_verilog
from hwq.rtl.layers import ElemType, LabelSelectLayer, MVAULayer, UnsupportedLayerError, layers_from_model, \
    run_layers
from hwq.rtl.layers_conv import SlidingWindowLayer
from hwq.rtl.layers_stream import (FMPaddingLayer, GlobalAccPoolLayer, QuantAvgPoolLayer, ThresholdingLayer,
                                   fm_padding_layer, global_acc_pool_layer, quant_avg_pool_layer, thresholding_layer)
from hwq.rtl.simulate import simulate
from tests.test_rtl_blocks import _divisor

FD = dict(domain="finn.custom_op.fpgadataflow", backend="fpgadataflow")


def _node_model(op: str, name: str, in_shape, out_shape, attrs: dict, idt: str, init: dict | None = None):
    """A graph of one FINN HW node ``op`` named ``name`` (input ``x`` of type ``idt``, initializers ``init``)."""
    init = init or {}
    domain = FD["domain"] + (op[-4:].replace("_", ".") if op.endswith(("_hls", "_rtl")) else "")
    node = helper.make_node(op, ["x", *init], ["y"], name=name, **{**FD, "domain": domain}, **attrs)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(in_shape))],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, list(out_shape))])
    model = ModelWrapper(qonnx_make_model(graph))
    for key, value in init.items():
        model.set_initializer(key, np.asarray(value, dtype=np.float32))
    model.set_tensor_datatype("x", DataType[idt])
    return model


def _finn(model, x) -> np.ndarray:
    shape = model.get_tensor_shape("x")
    return np.stack([execute_onnx(model, {"x": xi.reshape(shape).astype(np.float32)})["y"].reshape(-1)
                     for xi in x])


def _images(rng, layer, n: int) -> np.ndarray:
    return rng.integers(layer.in_type.lo, layer.in_type.hi + 1, (n, layer.in_elems))


# --- readers and references against finn's execution --------------------------------------------------------------
def _threshold_node(rng, idt: str, odt: str, steps: int, act_val: int, shared: bool, channels: int = 6,
                    vectors=(1, 2, 2), name: str = "thr0", **extra):
    lo, hi = DataType[idt].min(), DataType[idt].max()
    # unevenly spaced (as learned N2UQ thresholds are), some fractional, some beyond the input range
    thr = np.sort(rng.uniform(lo - 3, hi + 3, (1 if shared else channels, steps)), axis=1)
    thr[:, ::2] = np.round(thr[:, ::2])
    attrs = dict(NumChannels=channels, PE=2, numSteps=steps, inputDataType=idt, weightDataType="INT32",
                 outputDataType=odt, ActVal=act_val, numInputVectors=list(vectors), **extra)
    return _node_model("Thresholding", name, [*vectors, channels], [*vectors, channels], attrs, idt, {"T": thr})


@pytest.mark.parametrize("idt, odt, steps, act_val, shared", [
    ("UINT8", "INT2", 3, -2, False),            # a 2-bit signed quantizer on pixels (2x - 1 absorbed)
    ("UINT8", "BINARY", 1, 0, True),            # a binary quantizer on pixels, one threshold for all channels
    ("UINT8", "BIPOLAR", 1, 0, False),          # FINN's BIPOLAR output: the stream carries 0/1
    ("INT10", "UINT4", 15, 0, False),           # an accumulator thresholded into 4 bits
    ("INT4", "UINT3", 5, 1, True),              # fewer thresholds than the type allows, ActVal 1
])
def test_thresholding_reader_and_reference_match_finn_execution(idt, odt, steps, act_val, shared):
    rng = np.random.default_rng(steps)
    model = _threshold_node(rng, idt, odt, steps, act_val, shared)
    layer = layers_from_model(model)[0]
    assert isinstance(layer, ThresholdingLayer) and (layer.vectors, layer.channels, layer.pe) == (4, 6, 2)
    assert layer.bipolar == (odt == "BIPOLAR") and layer.cycles == 12
    x = rng.integers(DataType[idt].min(), DataType[idt].max() + 1, (10, layer.in_elems))
    got = _finn(model, x)
    if layer.bipolar:
        got = (got + 1) / 2                                      # -1/+1 as the stream's 0/1 bits
    np.testing.assert_array_equal(got.astype(np.int64), layer.run(x))


def test_fm_padding_reader_and_reference_match_finn_execution():
    rng = np.random.default_rng(1)
    attrs = dict(ImgDim=[3, 4], Padding=[1, 2, 0, 1], NumChannels=4, SIMD=2, inputDataType="INT3")
    model = _node_model("FMPadding", "pad0", [1, 3, 4, 4], [1, 4, 7, 4], attrs, "INT3")
    layer = layers_from_model(model)[0]
    assert isinstance(layer, FMPaddingLayer) and layer.ofm == (4, 7) and layer.cycles == 4 * 7 * 2
    x = rng.integers(-4, 4, (5, layer.in_elems))
    np.testing.assert_array_equal(_finn(model, x).astype(np.int64), layer.run(x))


@pytest.mark.parametrize("idt", ["UINT4", "INT3", "BINARY"])
def test_global_acc_pool_reader_and_reference_match_finn_execution(idt):
    rng = np.random.default_rng(2)
    attrs = dict(NumChannels=6, PE=3, inputDataType=idt, numInputVectors=[1, 3, 2])
    model = _node_model("GlobalAccPool", "gap0", [1, 3, 2, 6], [1, 1, 1, 6], attrs, idt)
    layer = layers_from_model(model)[0]
    assert isinstance(layer, GlobalAccPoolLayer) and layer.pixels == 6 and layer.cycles == 7 * 2
    dt = DataType[idt]
    assert (layer.out_type.lo, layer.out_type.hi) == (ElemType.for_range(6 * dt.min(), 6 * dt.max()).lo,
                                                      ElemType.for_range(6 * dt.min(), 6 * dt.max()).hi)
    x = rng.integers(dt.min(), dt.max() + 1, (5, layer.in_elems))
    np.testing.assert_array_equal(_finn(model, x).astype(np.int64), layer.run(x))


@pytest.mark.parametrize("idt, odt, k", [("UINT4", "UINT4", [2, 2]), ("UINT2", "UINT3", [3, 3]),
                                         ("INT4", "INT4", [2, 2])])
def test_quant_avg_pool_reader_and_reference_match_finn_execution(idt, odt, k):
    rng = np.random.default_rng(3)
    k2, channels, out = k[0] * k[1], 4, [2, 3]
    shift = reference.quant_avg_pool_shift(DataType[idt].bitwidth(), DataType[odt].bitwidth(), k2)
    attrs = dict(Channels=channels, PE=2, KernelSize=k, Function="QuantAvgPool", OutImgDims=out, InputDataType=idt,
                 OutputDataType=odt, BatchSize=1, Size=shift, AccumBits=8)
    model = _node_model("Pool", "qap0", [1, *out, k2 * channels], [1, *out, channels], attrs, idt)
    layer = layers_from_model(model)[0]
    assert isinstance(layer, QuantAvgPoolLayer) and layer.shift == shift and layer.cycles == 6 * k2 * 2
    x = rng.integers(DataType[idt].min(), DataType[idt].max() + 1, (5, layer.in_elems))
    np.testing.assert_array_equal(_finn(model, x).astype(np.int64), layer.run(x))


def test_a_reshape_is_no_layer_and_a_transpose_is_refused():
    rng = np.random.default_rng(4)
    nodes = [helper.make_node("Thresholding", ["x", "T"], ["a"], name="thr0", NumChannels=4, PE=4, numSteps=1,
                              inputDataType="UINT8", weightDataType="UINT8", outputDataType="BINARY",
                              numInputVectors=[1, 2, 2], **FD),
             helper.make_node("Reshape", ["a"], ["y"], name="flat0", inp_shape=[1, 2, 2, 4], out_shape=[1, 16],
                              dtype="BINARY", PE=4, **FD)]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 2, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16])])
    model = ModelWrapper(qonnx_make_model(graph))
    model.set_initializer("T", rng.integers(0, 256, (4, 1)).astype(np.float32))
    model.set_tensor_datatype("x", DataType["UINT8"])
    model.set_tensor_shape("a", [1, 2, 2, 4])
    layers = layers_from_model(model)
    assert [type(layer).__name__ for layer in layers] == ["ThresholdingLayer"]       # the reshape is no layer
    x = rng.integers(0, 256, (6, 16))
    import finn.custom_op.fpgadataflow.reshape  # noqa: F401  (registers finn-plus's Reshape op for execution)

    np.testing.assert_array_equal(_finn(model, x).astype(np.int64), run_layers(layers, x))
    model.graph.node[1].op_type = "Shuffle"
    with pytest.raises(UnsupportedLayerError, match=r"^flat0 \(Shuffle\): a transpose reorders the stream"):
        layers_from_model(model)


@pytest.mark.parametrize("make, message", [
    (lambda rng: _threshold_node(rng, "UINT8", "INT2", 3, -2, False, runtime_writeable_weights=1),
     r"^thr0 \(Thresholding\): runtime_writeable_weights=1 is not supported"),
    (lambda rng: _threshold_node(rng, "UINT8", "BIPOLAR", 3, 0, False),
     r"^thr0 \(Thresholding\): a BIPOLAR output needs numSteps=1 and ActVal=0"),
    (lambda rng: _threshold_node(rng, "UINT8", "UINT2", 3, 1, False),
     r"^thr0 \(Thresholding\): outputs 1..4 \(ActVal \+ numSteps\) do not fit UINT2"),
    (lambda rng: _threshold_node(rng, "UINT8", "UINT2", 3, 0, False, channels=5),
     r"^thr0 \(Thresholding\): PE=2 must divide NumChannels=5"),
    (lambda rng: _node_model("FMPadding", "pad0", [1, 2, 2, 4], [1, 4, 4, 4],
                             dict(ImgDim=[2, 2], Padding=[1, 1, 1, 1], NumChannels=4, SIMD=3, inputDataType="INT2"),
                             "INT2"),
     r"^pad0 \(FMPadding\): SIMD=3 must divide NumChannels=4"),
    (lambda rng: _node_model("FMPadding_rtl", "pad1", [1, 2, 2, 4], [1, 4, 4, 4],
                             dict(ImgDim=[2, 2], Padding=[1, 1, 1, 1], NumChannels=4, SIMD=2, inputDataType="INT2",
                                  dynamic_mode=1), "INT2"),
     r"^pad1 \(FMPadding_rtl\): dynamic_mode=1 is not supported"),
    (lambda rng: _node_model("GlobalAccPool", "gap0", [1, 4], [1, 4],
                             dict(NumChannels=4, PE=2, inputDataType="UINT4", numInputVectors=[1]), "UINT4"),
     r"^gap0 \(GlobalAccPool\): numInputVectors \[1\] \(expected \[1, H, W\]\)"),
    (lambda rng: _node_model("Pool", "qap0", [1, 2, 2, 16], [1, 2, 2, 4],
                             dict(Channels=4, PE=2, KernelSize=[2, 2], Function="QuantAvgPool", OutImgDims=[2, 2],
                                  InputDataType="UINT4", OutputDataType="UINT4", Size=1), "UINT4"),
     r"^qap0 \(Pool\): Size=1 \(the HLS shift\) differs from the shift 2 of FINN's execution"),
    (lambda rng: _node_model("Reshape", "flat0", [1, 2, 2, 4], [1, 12],
                             dict(inp_shape=[1, 2, 2, 4], out_shape=[1, 12], dtype="UINT2"), "UINT2"),
     r"^flat0 \(Reshape\): inp_shape holds 16 elements, out_shape 12"),
])
def test_readers_refuse_unsupported_settings_in_one_line_naming_the_node(make, message):
    model = make(np.random.default_rng(5))
    with pytest.raises(UnsupportedLayerError, match=message) as err:
        layers_from_model(model)
    assert "\n" not in str(err.value)


# --- the blocks in simulation --------------------------------------------------------------------------------------
#: (input type, output type, thresholds per channel, ActVal, bipolar) of the random threshold layers.
THRESHOLD_KINDS = [(ElemType(8, False), ElemType(2, True), 3, -2, False),     # pixels -> INT2 (2x - 1, 2-bit)
                   (ElemType(8, False), ElemType(1, False), 1, 0, True),      # pixels -> BIPOLAR bits
                   (ElemType(6, True), ElemType(4, False), 15, 0, False),     # an accumulator -> UINT4
                   (ElemType(2, False), ElemType(3, False), 5, 2, False)]     # few thresholds, ActVal 2


def random_thresholding(rng, kind: int, name: str = "thr") -> ThresholdingLayer:
    in_type, out_type, steps, act_val, bipolar = THRESHOLD_KINDS[kind]
    channels = int(rng.choice([2, 4, 6, 12]))
    pe = _divisor(rng, channels)
    if pe * out_type.bits == 1:     # a 1-bit output port: tb_stream reads m_axis_tdata as a vector
        pe = channels
    rows = 1 if rng.random() < 0.3 else channels           # sometimes one set for all channels
    thr = np.sort(rng.integers(in_type.lo - 2, in_type.hi + 3, (rows, steps)), axis=1)   # uneven, some outside
    return ThresholdingLayer(name, channels, pe, int(rng.integers(1, 5)), in_type, out_type, thr, act_val, bipolar)


def _run_block(tmp_path, rng, layer, in_beat: int, seed: int, n: int = 4):
    design = generate_verilog([layer], tmp_path / "rtl", top="dut", in_beat=in_beat)
    x = _images(rng, layer, n)
    return simulate(design, x, layer.run(x), tmp_path / "sim", p_gap=0.3, p_stall=0.4, seed=seed)


@pytest.mark.parametrize("kind, seed", [(0, 0), (1, 1), (2, 2), (3, 3), (0, 4), (2, 5)])
def test_thresholding_block_matches_reference(tmp_path, kind, seed):
    rng = np.random.default_rng(seed)
    layer = random_thresholding(rng, kind)
    in_beat = _divisor(rng, layer.channels)              # the producer's beat width (e.g. an MVAU's PE)
    result = _run_block(tmp_path, rng, layer, in_beat, seed)
    # a beat a cycle on the longer of the two streams
    assert result["cycles_per_image"] == max(layer.in_elems // in_beat, layer.in_elems // layer.pe)


@pytest.mark.parametrize("seed", range(4))
def test_fm_padding_block_matches_reference(tmp_path, seed):
    rng = np.random.default_rng(20 + seed)
    in_type = [ElemType(1, False), ElemType(2, True), ElemType(8, False), ElemType(4, False)][seed]
    channels = int(rng.choice([2, 3, 4, 6]))
    simd = _divisor(rng, channels)
    if simd * in_type.bits == 1:
        simd = channels
    padding = tuple(int(p) for p in rng.integers(0, 3, 4))
    layer = FMPaddingLayer("pad", tuple(int(d) for d in rng.integers(1, 5, 2)), channels, padding, simd, in_type)
    in_beat = _divisor(rng, channels)
    result = _run_block(tmp_path, rng, layer, in_beat, seed)
    # the padded image is walked at the producer's beat width; the output at SIMD
    assert result["cycles_per_image"] == max(layer.out_elems // in_beat, layer.cycles)


@pytest.mark.parametrize("seed", range(3))
def test_global_acc_pool_block_matches_reference(tmp_path, seed):
    rng = np.random.default_rng(30 + seed)
    in_type = [ElemType(4, False), ElemType(3, True), ElemType(1, False)][seed]
    channels, pixels = int(rng.choice([2, 4, 6])), int(rng.integers(1, 10))
    pe = _divisor(rng, channels)
    out_type = ElemType.for_range(pixels * in_type.lo, pixels * in_type.hi)
    layer = GlobalAccPoolLayer("gap", channels, pixels, pe, in_type, out_type)
    in_beat = _divisor(rng, channels)
    result = _run_block(tmp_path, rng, layer, in_beat, seed)
    # the sums go out while the next image streams in
    assert result["cycles_per_image"] == max(layer.in_elems // in_beat, channels // pe)


@pytest.mark.parametrize("seed", range(3))
def test_quant_avg_pool_block_matches_reference(tmp_path, seed):
    rng = np.random.default_rng(40 + seed)
    in_type, out_type = [(ElemType(4, False), ElemType(4, False)), (ElemType(2, False), ElemType(3, False)),
                         (ElemType(4, True), ElemType(4, True))][seed]
    channels, window = int(rng.choice([2, 4, 6])), int(rng.choice([4, 9]))
    shift = reference.quant_avg_pool_shift(in_type.bits, out_type.bits, window)
    layer = QuantAvgPoolLayer("qap", channels, window, int(rng.integers(2, 5)), _divisor(rng, channels), shift,
                              in_type, out_type)
    in_beat = _divisor(rng, channels)
    result = _run_block(tmp_path, rng, layer, in_beat, seed)
    # per window: collect its beats (plus the collector's registered ready), or send C / PE beats
    assert result["cycles_per_image"] == layer.windows * max(window * channels // in_beat + 1, channels // layer.pe)


def stream_chain(rng) -> list:
    """Pixels -> thresholds (INT2, 2x - 1 absorbed) -> padding -> 3x3 window -> integer MVAU without activation ->
    thresholds on its signed sums -> global sum pool -> label select: the new blocks between the existing ones,
    beats converted between them."""
    c0, c1 = 2, 4
    thr = ThresholdingLayer("thr", c0, 2, 16, ElemType(8, False), ElemType(2, True),
                            np.sort(rng.integers(0, 256, (c0, 3)), axis=1), -2)
    pad = FMPaddingLayer("pad", (4, 4), c0, (1, 1, 1, 1), 1, ElemType(2, True))
    swg = SlidingWindowLayer("swg", (6, 6), c0, (3, 3), (1, 1), 2, ElemType(2, True))
    base = np.resize([-2, -1, 0, 1], 9 * c0)    # every output channel the same weights, permuted: equal column
    w = np.stack([rng.permutation(base) for _ in range(c1)], axis=1)  # sums, so no class wins on every image
    lo = int(np.minimum(w * -2, w * 1).sum(axis=0).min())
    hi = int(np.maximum(w * -2, w * 1).sum(axis=0).max())
    mvau = MVAULayer("mvau", 9 * c0, c1, 2, 6, False, ElemType(2, True), ElemType.for_range(lo, hi), w, None,
                     vectors=16)
    acc_t = mvau.out_type          # FINN's standalone thresholds after an MVAU: signed sums -> UINT2
    act = ThresholdingLayer("act", c1, 1, 16, acc_t, ElemType(2, False), np.array([[-3, 0, 3]]))   # one set
    gap = GlobalAccPoolLayer("gap", c1, 16, 2, act.out_type, ElemType.for_range(0, 16 * 3))
    ls = LabelSelectLayer("ls", c1, 1, gap.out_type, ElemType(8, False))
    return [thr, pad, swg, mvau, act, gap, ls]


def test_stream_chain_and_a_planted_mismatch_is_caught(tmp_path):
    rng = np.random.default_rng(50)
    layers = stream_chain(rng)
    design = generate_verilog(layers, tmp_path / "rtl", top="chain")
    strict = subprocess.run(["iverilog", "-g2005", "-Wall", "-o", str(tmp_path / "v2005"), *map(str, design.files)],
                            capture_output=True, text=True)
    assert strict.returncode == 0, strict.stderr                      # plain Verilog-2005
    x = _images(rng, layers[0], 5)
    want = run_layers(layers, x)
    assert len(set(want.ravel().tolist())) > 1                        # the images do not all give one class
    result = simulate(design, x, want, tmp_path / "ok", p_gap=0.2, p_stall=0.3)
    assert result["cycles_per_image"] >= design.cycles_bound
    planted = want.copy()
    planted[2, 0] = (planted[2, 0] + 1) % 4
    with pytest.raises(VerificationError, match="image 2"):
        simulate(design, x, planted, tmp_path / "bad")


@pytest.mark.slow
def test_stream_chain_on_verilator_matches_icarus(tmp_path):
    """The same chain on Verilator (about 30 s of C++ compilation here): no lint warning beyond the waivers, the
    same outputs under back-pressure and the same cycles as Icarus."""
    rng = np.random.default_rng(50)
    layers = stream_chain(rng)
    design = generate_verilog(layers, tmp_path / "rtl", top="chain")
    x = _images(rng, layers[0], 5)
    want = run_layers(layers, x)
    runs = {sim: simulate(design, x, want, tmp_path / sim, simulator=sim, p_gap=0.2, p_stall=0.3, seed=1)
            for sim in ("verilator", "icarus")}
    assert runs["verilator"]["cycles_per_image"] == runs["icarus"]["cycles_per_image"]
    assert runs["verilator"]["latency_cycles"] == runs["icarus"]["latency_cycles"]
