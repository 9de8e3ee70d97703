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
