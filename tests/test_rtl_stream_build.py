# SPDX-License-Identifier: BSD-3-Clause
"""Networks hwq did not train, in the style of FINN's reference networks (input ``2x - 1``, then a 2-bit or a
bipolar quantizer), through hwq's FINN steps to a HW graph with a leading standalone Thresholding (and, for a
padded conv, an FMPadding), then through the open backend's steps ``read_layers`` .. ``simulate``: the reference
equals finn's execution, and the simulation is bit-exact with back-pressure.

The graph's input is annotated UINT8 with a ``Mul(1/255)`` in front by the test itself (``_uint8_input``): hwq's
``scale_uint8_input`` step only takes hwq's own 8-bit input quantizer, and the pass that prepends the uint8 scaling
for a ``2x - 1`` input is the integrator's; this stands in for it.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from hwq.dataflow.driver import run_steps, step_names
from hwq.dataflow.steps import HW_GRAPH_STEP


def _two_x_minus_one_net(kind: str):
    """An untrained Brevitas network on 6x6 images whose input is ``2x - 1``, then (``conv-w2a2``) a 2-bit
    QuantIdentity, a padded 3x3 QuantConv2d (INT2 weights) with BatchNorm and a 2-bit activation, flatten, a
    QuantLinear classifier; (``conv-avgpool``) the same with a 2-bit ReLU and a 2x2 TruncAvgPool2d before the
    flatten; or (``fc-w1a1``, bnn_pynq's TFC in small) a bipolar QuantIdentity and binary
    QuantLinear layers with BatchNorm and bipolar activations."""
    import torch
    from brevitas.nn import QuantConv2d, QuantIdentity, QuantLinear, QuantReLU, TruncAvgPool2d
    from brevitas.quant import SignedBinaryActPerTensorConst, SignedBinaryWeightPerTensorConst
    from torch import nn

    class ConvNet(nn.Module):
        input_shape = (1, 6, 6)

        def __init__(self, pool: bool):
            super().__init__()
            self.q0 = QuantIdentity(bit_width=2, return_quant_tensor=True)
            self.conv = QuantConv2d(1, 4, 3, padding=1, bias=False, weight_bit_width=2)
            self.bn = nn.BatchNorm2d(4)
            if pool:   # 2-bit ReLU, then Brevitas' truncating average pool (AveragePool + Trunc: QuantAvgPool)
                self.q1 = QuantReLU(bit_width=2, return_quant_tensor=True)
                self.pool = TruncAvgPool2d(2, stride=2, bit_width=2, float_to_int_impl_type="FLOOR")
            else:
                self.q1 = QuantIdentity(bit_width=2, return_quant_tensor=True)
                self.pool = nn.Identity()
            self.fc = QuantLinear(4 * (9 if pool else 36), 10, bias=False, weight_bit_width=2)

        def forward(self, x):
            x = self.q0(2 * x - 1)
            x = self.pool(self.q1(self.bn(self.conv(x))))
            return self.fc(torch.flatten(x, 1))

    class BinaryFC(nn.Module):
        input_shape = (36,)          # flat: a leading Flatten would stay on the host (FINN maps no HW layer to it)

        def __init__(self):
            super().__init__()
            binary = dict(bias=False, weight_quant=SignedBinaryWeightPerTensorConst)
            self.q0 = QuantIdentity(act_quant=SignedBinaryActPerTensorConst, return_quant_tensor=True)
            self.fc0 = QuantLinear(36, 16, **binary)
            self.bn = nn.BatchNorm1d(16)
            self.q1 = QuantIdentity(act_quant=SignedBinaryActPerTensorConst, return_quant_tensor=True)
            self.fc1 = QuantLinear(16, 10, **binary)

        def forward(self, x):
            x = self.q0(2 * x - 1)
            return self.fc1(self.q1(self.bn(self.fc0(x))))

    torch.manual_seed(0)
    net = (BinaryFC() if kind == "fc-w1a1" else ConvNet(pool=kind == "conv-avgpool")).eval()
    with torch.no_grad():     # statistics as if trained, so the thresholds differ per channel
        net.bn.running_mean.uniform_(-1, 1)
        net.bn.running_var.uniform_(0.5, 2)
    return net


def _uint8_input(path):
    """The exported graph with ``Mul(1/255)`` on a UINT8 input in front (the images reach FINN as 0..255)."""
    from onnx import helper
    from qonnx.core.datatype import DataType
    from qonnx.core.modelwrapper import ModelWrapper

    model = ModelWrapper(str(path))
    graph_in = model.graph.input[0].name
    scaled = model.make_new_valueinfo_name()
    for node in model.graph.node:
        node.input[:] = [scaled if name == graph_in else name for name in node.input]
    scale = model.make_new_valueinfo_name()
    model.set_initializer(scale, np.asarray(1 / 255, dtype=np.float32))
    model.graph.node.insert(0, helper.make_node("Mul", [graph_in, scale], [scaled], name="uint8_input_scale"))
    model.set_tensor_datatype(graph_in, DataType["UINT8"])
    return model


_SWG = {"SIMD": 1, "parallel_window": 0}      # hwq's sliding window sends SIMD channels a beat, not whole windows
#: Foldings (None: FINN's fastest fitting one).
FOLDINGS = {"conv-w2a2": {"Defaults": {}, "Thresholding_rtl_0": {"PE": 1}, "FMPadding_rtl_0": {"SIMD": 1},
                          "ConvolutionInputGenerator_rtl_0": _SWG, "MVAU_hls_0": {"PE": 2, "SIMD": 3},
                          "MVAU_hls_1": {"PE": 2, "SIMD": 12}, "LabelSelect_hls_0": {"PE": 1}},
            "conv-avgpool": {"Defaults": {}, "ConvolutionInputGenerator_rtl_0": _SWG,
                             "ConvolutionInputGenerator_rtl_1": {"SIMD": 2, "parallel_window": 0},
                             "Pool_hls_0": {"PE": 2}},
            "fc-w1a1": None}
#: The HW layers FINN leaves: the standalone thresholds on the pixels first, the padding before the sliding window,
#: the average pool as a depthwise window and a QuantAvgPool, and no reshape for the flatten
#: (RemoveCNVtoFCFlatten folds it into the classifier's weights).
_CONV = ["Thresholding_rtl", "FMPadding_rtl", "ConvolutionInputGenerator_rtl", "MVAU_hls"]
OPS = {"conv-w2a2": [*_CONV, "MVAU_hls", "LabelSelect_hls"],
       "conv-avgpool": [*_CONV, "ConvolutionInputGenerator_rtl", "Pool_hls", "MVAU_hls", "LabelSelect_hls"],
       "fc-w1a1": ["Thresholding_rtl", "MVAU_hls", "MVAU_hls", "LabelSelect_hls"]}
#: The first Thresholding's input type, output type and ActVal: pixels into INT2 (-2..1), or into the 0/1 bits
#: that FINN's XNOR conversion makes of the bipolar input.
THRESHOLDS = {"conv-w2a2": ("UINT8", "INT2", -2), "conv-avgpool": ("UINT8", "INT2", -2),
              "fc-w1a1": ("UINT8", "BINARY", 0)}


@pytest.mark.parametrize("kind", ["conv-w2a2", "conv-avgpool", "fc-w1a1"])
def test_two_x_minus_one_network_through_finn_and_the_open_backend_is_bit_exact(tmp_path, kind):
    from qonnx.custom_op.registry import getCustomOp

    from hwq.dataflow.build import finn_config
    from hwq.dataflow.finn_compat import finn_output_to, finn_session
    from hwq.dataflow.progress import quiet
    from hwq.export.qonnx_export import export_qonnx_model
    from hwq.rtl.config import OpenBuildConfig
    from hwq.rtl.layers import layers_from_model
    from hwq.rtl.layers_stream import QuantAvgPoolLayer, ThresholdingLayer
    from hwq.rtl.steps import OpenBuildContext, open_steps

    net = _two_x_minus_one_net(kind)
    qonnx = export_qonnx_model(net, tmp_path / "model.onnx")
    folding = None
    if FOLDINGS[kind] is not None:
        folding = tmp_path / "folding.json"
        folding.write_text(json.dumps(FOLDINGS[kind]))
    config = OpenBuildConfig(board="icebreaker", synthesise=False, verify_samples=6,
                             folding_file=str(folding) if folding else None)
    board, fold_board, _ = config.boards()
    images = np.random.default_rng(0).integers(0, 256, (6, *net.input_shape)).astype(np.uint8)
    out = tmp_path / "build"
    out.mkdir()
    ctx = OpenBuildContext(config=config.fold_config(), board=fold_board, out_dir=out,
                           finn_cfg=finn_config(fold_board, out), qonnx_model=qonnx, images=images,
                           progress=quiet(), open_config=config, target=board)
    steps = [s for s in open_steps(config, xilinx=False) if s[0] != "scale_uint8_input"]   # done by _uint8_input
    assert step_names(steps)[-4:] == ["read_layers", "check_reference", "generate_verilog", "simulate"]
    manifest = {"steps": []}
    with finn_session(out / "codegen"), (out / "build.log").open("w") as log, finn_output_to(log):
        run_steps(steps, _uint8_input(tmp_path / "model.onnx"), ctx, manifest, progress=quiet(), log=log)

    hw = ctx.checkpoint("correct_datatypes")
    assert [n.op_type for n in hw.graph.node] == OPS[kind]
    thr = getCustomOp(hw.graph.node[0])
    assert tuple(thr.get_nodeattr(a) for a in ("inputDataType", "outputDataType", "ActVal")) == THRESHOLDS[kind]
    assert manifest["bit_exact"]["passed"] and HW_GRAPH_STEP in ctx.checkpoints
    layers = layers_from_model(hw)
    assert isinstance(layers[0], ThresholdingLayer) and layers[0].in_elems == 36
    if kind == "conv-avgpool":     # 2-bit sums of 4 need 4 bits: shifted right by 2 into UINT2
        pool = layers[5]
        assert isinstance(pool, QuantAvgPoolLayer) and (pool.window, pool.shift, pool.out_type.bits) == (4, 2, 2)
    assert list(manifest["layers"]) == [n.name for n in hw.graph.node]
    assert manifest["reference"]["passed"] and manifest["reference"]["n"] == 6   # == finn's execution
    sim = manifest["simulation"]
    assert sim["bit_exact"] and sim["n"] == 6 and sim["back_pressure"]["p_stall"] > 0
    assert sim["cycles_per_image"] >= sim["folding_bound_cycles"]
    text = (out / "rtl" / "accel.v").read_text()
    assert all(f"module {n.name} (" in text for n in hw.graph.node)
