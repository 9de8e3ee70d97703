# SPDX-License-Identifier: BSD-3-Clause
"""hwq.rtl.reference against finn-plus's own Python execution of the same HW nodes (differential)."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper
from qonnx.core.datatype import DataType
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.core.onnx_exec import execute_onnx
from qonnx.util.basic import qonnx_make_model

from hwq.rtl import reference


def _finn_node(op: str, inputs: dict, out_shape, attrs: dict, dtypes: dict) -> np.ndarray:
    names = list(inputs)
    node = helper.make_node(op, names, ["out"], domain="finn.custom_op.fpgadataflow", backend="fpgadataflow",
                            **attrs)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info(names[0], TensorProto.FLOAT,
                                                                          inputs[names[0]].shape)],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, out_shape)])
    model = ModelWrapper(qonnx_make_model(graph))
    for name, value in list(inputs.items())[1:]:
        model.set_initializer(name, value.astype(np.float32))
    for name, dt in dtypes.items():
        model.set_tensor_datatype(name, DataType[dt])
    return execute_onnx(model, {names[0]: inputs[names[0]].astype(np.float32)})["out"]


def _mvau_case(rng, xnor: bool, with_thr: bool, n_thr: int, idt: str, wdt: str, odt: str, act_val: int):
    mw, mh = 16, 8
    n = 6
    x = rng.integers(DataType[idt].min(), DataType[idt].max() + 1, (n, mw))
    w = rng.integers(DataType[wdt].min(), DataType[wdt].max() + 1, (mw, mh))
    acc = reference.xnor_popcount(x, w) if xnor else reference.matmul(x, w)
    inputs = {"inp": x, "w": w}
    thr = None
    if with_thr:
        # thresholds drawn from the accumulator values (ties included), sorted per channel
        thr = np.sort(rng.choice(acc.ravel(), (mh, n_thr)), axis=1)
        inputs["thr"] = thr
    attrs = dict(MW=mw, MH=mh, SIMD=4, PE=2, numInputVectors=[n], inputDataType=idt, weightDataType=wdt,
                 outputDataType=odt,
                 ActVal=act_val, binaryXnorMode=int(xnor), noActivation=int(not with_thr))
    got = _finn_node("MVAU", inputs, [n, mh], attrs, {"inp": idt, "w": wdt})
    ours = reference.mvau(x, w, thr, xnor=xnor, act_val=act_val)
    return got, ours


@pytest.mark.parametrize("xnor, with_thr, n_thr, idt, wdt, odt, act_val", [
    (True, True, 1, "BINARY", "BINARY", "BINARY", 0),
    (True, False, 0, "BINARY", "BINARY", "UINT5", 0),
    (False, True, 1, "UINT8", "INT2", "BINARY", 0),
    (False, True, 3, "UINT2", "INT2", "UINT2", 0),
    (False, True, 3, "INT4", "INT3", "INT2", -2),
    (False, True, 15, "UINT4", "INT4", "UINT4", 0),
    (False, False, 0, "INT4", "INT4", "INT12", 0),
])
@pytest.mark.parametrize("seed", [0, 1])
def test_mvau_reference_matches_finn_execution(xnor, with_thr, n_thr, idt, wdt, odt, act_val, seed):
    got, ours = _mvau_case(np.random.default_rng(seed), xnor, with_thr, n_thr, idt, wdt, odt, act_val)
    np.testing.assert_array_equal(got.astype(np.int64), ours)


def test_thresholds_broadcast_and_fractional_values():
    acc = np.array([[-2, 0, 3]])
    assert reference.thresholds(acc, np.array([[-1.5, 0.0]])).tolist() == [[0, 2, 2]]
    assert reference.thresholds(acc, np.array([[-1.5, 0.0]]), act_val=-1).tolist() == [[-1, 1, 1]]


@pytest.mark.parametrize("seed", range(3))
def test_label_select_matches_finn_execution_with_ties(seed):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 4, (20, 10))            # few distinct values: many ties
    got = _finn_node("LabelSelect", {"inp": x}, [20, 1],
                     dict(Labels=10, PE=2, K=1, numInputVectors=[20], inputDataType="UINT2",
                          outputDataType="UINT8"), {"inp": "UINT2"})
    np.testing.assert_array_equal(got.astype(np.int64), reference.label_select(x))


@pytest.mark.parametrize("ifm, channels, kernel, stride, depthwise", [
    ((5, 5), 3, (3, 3), (1, 1), 0),
    ((6, 4), 2, (2, 3), (2, 1), 0),
    ((4, 4), 4, (2, 2), (2, 2), 1),            # the window before a max-pool
    ((3, 3), 5, (3, 3), (1, 1), 0),            # one window covering the whole map (CNV's last conv)
])
def test_sliding_window_matches_finn_execution(ifm, channels, kernel, stride, depthwise):
    rng = np.random.default_rng(sum(ifm) + channels)
    x = rng.integers(0, 256, (1, *ifm, channels))
    ofm = [(i - k) // s + 1 for i, k, s in zip(ifm, kernel, stride)]
    got = _finn_node("ConvolutionInputGenerator", {"inp": x}, [1, *ofm, kernel[0] * kernel[1] * channels],
                     dict(ConvKernelDim=list(kernel), IFMChannels=channels, IFMDim=list(ifm), OFMDim=ofm,
                          SIMD=1, Stride=list(stride), Dilation=[1, 1], inputDataType="UINT8",
                          outputDataType="UINT8", depthwise=depthwise), {"inp": "UINT8"})
    ours = reference.sliding_window(x.reshape(1, -1), ifm, channels, kernel, stride)
    np.testing.assert_array_equal(got.reshape(1, -1).astype(np.int64), ours)


@pytest.mark.parametrize("idt", ["BINARY", "INT3"])
def test_max_pool_matches_finn_execution(idt):
    rng = np.random.default_rng(3)
    channels, k, out = 6, (2, 2), (3, 2)
    x = rng.integers(DataType[idt].min(), DataType[idt].max() + 1, (1, *out, k[0] * k[1] * channels))
    got = _finn_node("Pool", {"inp": x}, [1, *out, channels],
                     dict(Channels=channels, PE=2, KernelSize=list(k), Function="MaxPool", OutImgDims=list(out),
                          InputDataType=idt, OutputDataType=idt, BatchSize=1), {"inp": idt})
    ours = reference.max_pool(x.reshape(1, -1), channels, k[0] * k[1])
    np.testing.assert_array_equal(got.reshape(1, -1).astype(np.int64), ours)


def test_mvau_layer_over_many_vectors_matches_finn_execution():
    from hwq.rtl.layers import ElemType, MVAULayer

    rng = np.random.default_rng(4)
    mw, mh, vectors = 12, 4, (1, 3, 2)
    x = rng.integers(0, 2, (1, *vectors[1:], mw))
    w = rng.integers(0, 2, (mw, mh))
    thr = rng.integers(3, 9, (mh, 1))
    got = _finn_node("MVAU", {"inp": x, "w": w, "thr": thr}, [1, *vectors[1:], mh],
                     dict(MW=mw, MH=mh, SIMD=4, PE=2, numInputVectors=list(vectors), inputDataType="BINARY",
                          weightDataType="BINARY", outputDataType="BINARY", binaryXnorMode=1, noActivation=0),
                     {"inp": "BINARY", "w": "BINARY"})
    layer = MVAULayer("mvau", mw, mh, 2, 4, True, ElemType(1, False), ElemType(1, False), w, thr, vectors=6)
    assert (layer.in_elems, layer.out_elems, layer.cycles) == (6 * mw, 6 * mh, 6 * 2 * 3)
    np.testing.assert_array_equal(got.reshape(1, -1).astype(np.int64), layer.run(x.reshape(1, -1)))


def test_conv_graph_read_into_layers_matches_finn_execution():
    """A small CNV-shaped HW graph (SWG -> MVAU over 4 vectors -> depthwise SWG -> MaxPool -> LabelSelect):
    ``layers_from_model`` reads every node and ``run_layers`` equals finn's execution of the whole graph."""
    from hwq.rtl.layers import layers_from_model, run_layers
    from hwq.rtl.layers_conv import PoolLayer, SlidingWindowLayer

    rng = np.random.default_rng(8)
    fd = dict(domain="finn.custom_op.fpgadataflow", backend="fpgadataflow")
    swg = dict(Dilation=[1, 1], SIMD=1, inputDataType="BINARY", outputDataType="BINARY")
    nodes = [
        helper.make_node("ConvolutionInputGenerator", ["x"], ["w0"], name="swg0", ConvKernelDim=[3, 3],
                         IFMChannels=2, IFMDim=[4, 5], OFMDim=[2, 3], Stride=[1, 1], **swg, **fd),
        helper.make_node("MVAU", ["w0", "W", "T"], ["a0"], name="mvau0", MW=18, MH=4, SIMD=6, PE=2,
                         numInputVectors=[1, 2, 3], inputDataType="BINARY", weightDataType="BINARY",
                         outputDataType="BINARY", binaryXnorMode=1, noActivation=0, ActVal=0, **fd),
        helper.make_node("ConvolutionInputGenerator", ["a0"], ["w1"], name="swg1", ConvKernelDim=[2, 2],
                         IFMChannels=4, IFMDim=[2, 3], OFMDim=[1, 1], Stride=[2, 2], depthwise=1, **swg, **fd),
        helper.make_node("Pool", ["w1"], ["p"], name="pool", Channels=4, PE=2, KernelSize=[2, 2], Function="MaxPool",
                         OutImgDims=[1, 1], InputDataType="BINARY", OutputDataType="BINARY", BatchSize=1, **fd),
        helper.make_node("LabelSelect", ["p"], ["out"], name="ls", Labels=4, PE=1, K=1, numInputVectors=[1, 1, 1],
                         inputDataType="BINARY", outputDataType="UINT8", **fd),
    ]
    graph = helper.make_graph(nodes, "cnv", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 5, 2])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 1, 1, 1])])
    model = ModelWrapper(qonnx_make_model(graph))
    for name, shape in {"w0": [1, 2, 3, 18], "a0": [1, 2, 3, 4], "w1": [1, 1, 1, 16], "p": [1, 1, 1, 4]}.items():
        model.set_tensor_shape(name, shape)
    model.set_initializer("W", rng.integers(0, 2, (18, 4)).astype(np.float32))
    model.set_initializer("T", rng.integers(7, 12, (4, 1)).astype(np.float32))
    for name in ("x", "W", "w0", "a0", "w1", "p"):
        model.set_tensor_datatype(name, DataType["BINARY"])
    layers = layers_from_model(model)
    assert [type(layer).__name__ for layer in layers] == ["SlidingWindowLayer", "MVAULayer", "SlidingWindowLayer",
                                                          "PoolLayer", "LabelSelectLayer"]
    assert isinstance(layers[2], SlidingWindowLayer) and layers[2].ofm == (1, 1)
    assert isinstance(layers[3], PoolLayer) and layers[1].vectors == 6
    x = rng.integers(0, 2, (12, 40))
    got = np.stack([execute_onnx(model, {"x": xi.reshape(1, 4, 5, 2).astype(np.float32)})["out"].reshape(-1)
                    for xi in x]).astype(np.int64)
    np.testing.assert_array_equal(got, run_layers(layers, x))


@pytest.mark.parametrize("op, attrs, message", [
    ("Pool", dict(Channels=4, PE=2, KernelSize=[2, 2], Function="AvgPool", OutImgDims=[2, 2],
                  InputDataType="UINT4", OutputDataType="UINT4"), "p0: Pool Function AvgPool"),
    ("ConvolutionInputGenerator", dict(ConvKernelDim=[3, 3], IFMChannels=2, IFMDim=[4, 4], OFMDim=[4, 4],
                                       Stride=[1, 1], Dilation=[1, 1], SIMD=1, inputDataType="BINARY",
                                       outputDataType="BINARY"), "p0: OFMDim .4, 4. implies padding"),
])
def test_unsupported_conv_settings_name_the_node(op, attrs, message):
    from hwq.rtl.layers import UnsupportedLayerError
    from hwq.rtl.layers_conv import pool_layer, sliding_window_layer

    node = helper.make_node(op, ["x"], ["y"], name="p0", domain="finn.custom_op.fpgadataflow",
                            backend="fpgadataflow", **attrs)
    with pytest.raises(UnsupportedLayerError, match=message):
        (pool_layer if op == "Pool" else sliding_window_layer)(node)


@pytest.mark.parametrize("mw,mh", [(1, 1), (7, 3), (784, 256), (3000, 5)])
def test_xnor_popcount_matrix_form_counts_what_the_comparison_counts(mw, mh):
    """The matrix-product form (MW - sum x - sum w + 2 x@w) gives the comparison's integers, on bits of any size."""
    rng = np.random.default_rng(mw)
    x, w = rng.integers(0, 2, (9, mw)), rng.integers(0, 2, (mw, mh))
    expected = (x[:, :, None] == w[None, :, :]).sum(axis=1)
    got = reference.xnor_popcount(x, w)
    assert got.dtype == np.int64 and np.array_equal(got, expected)
    # values other than bits are still compared, not multiplied
    assert np.array_equal(reference.xnor_popcount(x + 1, w + 1), expected)


@pytest.mark.parametrize("magnitude", [3, 2 ** 10, 2 ** 20, 2 ** 26])
def test_exact_int_matmul_is_exact_on_both_sides_of_the_float_limits(magnitude):
    """float32 below 2**24, float64 below 2**53, NumPy's integer product above: always the integer product."""
    rng = np.random.default_rng(magnitude)
    a = rng.integers(-magnitude, magnitude + 1, (5, 300))
    b = rng.integers(-magnitude, magnitude + 1, (300, 4))
    exact = np.array([[sum(int(p) * int(q) for p, q in zip(row, col)) for col in b.T] for row in a])
    assert np.array_equal(reference.exact_int_matmul(a, b), exact)
