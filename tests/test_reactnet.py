# SPDX-License-Identifier: BSD-3-Clause
"""The ReActNet-style binary backbone (hwq.models.reactnet): built from every family, trained briefly on digits,
exported bit-exactly and built by FINN with both gates passing; its shortcuts become DuplicateStreams +
ElementwiseAdd, its strided shortcuts QuantAvgPool, its channel doubling StreamingConcat, with no layout Shuffles
left (hwq.dataflow.passes_branches.MakeQuantAvgPoolNHWC)."""

from __future__ import annotations

import pytest
import torch
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.custom_op.registry import getCustomOp

from hwq.errors import ConfigError
from hwq.models import ModelSpec, build_model
from hwq.models.reactnet import BinaryConvShortcut, _channel_plan
from hwq.models.mobilenet import MOBILENET_TINY, MOBILENET_V1_CIFAR


@pytest.mark.parametrize("quant", ["uniform", "float", "bitat"])
def test_reactnet_tiny_builds_from_every_family(quant):
    net = build_model(ModelSpec("reactnet_tiny", 1, 1, quant=quant, image_shape=(1, 8, 8),
                                options={"width": 0.25}))
    assert net(torch.rand(3, 1, 8, 8)).shape == (3, 10)
    blocks = [m for m in net.modules() if isinstance(m, BinaryConvShortcut)]
    assert len(blocks) == 2 * len(MOBILENET_TINY[1])   # a 3x3 and a 1x1 block per MobileNet block
    # each block's body output is quantized by the quantizer that made its input (one scale for the add)
    assert all(b.quant_in is a.quant_out for a, b in zip(blocks, blocks[1:]))


def test_channel_plan_keeps_or_doubles():
    for width in (0.125, 0.25, 0.3, 0.5, 0.7, 1.0):
        for config in (MOBILENET_TINY, MOBILENET_V1_CIFAR):
            cin, plan = _channel_plan(config, width)
            for cout, _ in plan:
                assert cout in (cin, 2 * cin), (config, width, plan)
                cin = cout


def test_reactnet_refuses_what_it_cannot_deploy():
    with pytest.raises(ConfigError, match=r"model_options.shortcut_bits: expected an integer in \[2, 8\], got 1"):
        build_model(ModelSpec("reactnet_tiny", 1, 1, image_shape=(1, 8, 8), options={"shortcut_bits": 1}))
    with pytest.raises(ConfigError, match="laid out for 32x32 images"):
        build_model(ModelSpec("reactnet", 1, 1, image_shape=(1, 28, 28)))
    with pytest.raises(ConfigError, match=r"stride-2 block meets a 7x7 map"):   # 14 -> 7 -> stride 2 again
        build_model(ModelSpec("reactnet_tiny", 1, 1, image_shape=(1, 14, 14)))


#: shortcut_bits 8: the 8-bit stem's 255 thresholds meet float near-ties (the QONNX reference within float rounding
#: of a half step), which the gate's reference decides half to even as the thresholds do (hwq.dataflow.round_ties).
@pytest.fixture(scope="module", params=[{"shortcut_bits": 4}, {"shortcut_bits": 8},
                                        {"shortcut_bits": 4, "block_shape": "rprelu"}], ids=["k4", "k8", "rprelu"])
def reactnet_run(request, tmp_path_factory):
    """reactnet_tiny W1A1 (width 0.25, ``shortcut_bits`` 4 or 8, or RPReLU block shapes) trained 2 epochs on
    digits, exported."""
    from hwq.export import run_export
    from hwq.train import TrainConfig, run_train

    run = tmp_path_factory.mktemp("runs") / f"reactnet_tiny-{'-'.join(map(str, request.param.values()))}"
    config = TrainConfig(model="reactnet_tiny", dataset="digits", wbits=1, abits=1, epochs=2, threads=1,
                         model_options={"width": 0.25, **request.param})
    run_train(config, run, progress=False)
    export = run_export(run)
    assert export["verification"]["passed"], export["verification"]
    return run


@pytest.mark.slow
def test_reactnet_tiny_finn_build_both_gates(reactnet_run):
    """About 1-2 minutes per bit-width on the shared 2-core machine, most of it in StreamlinePlus."""
    from hwq.dataflow import BuildConfig, run_build

    out = reactnet_run / "build-pynq-z2"
    manifest = run_build(reactnet_run, BuildConfig(board="pynq-z2", out_dir=str(out), verify_samples=20),
                         progress=False)
    assert manifest["status"] == "done", manifest.get("error")
    exact = manifest["bit_exact"]
    assert exact["passed"] and exact["classes_match"] == 1.0 and exact["layerwise"]
    assert all(t["values_differing"] == 0 for t in exact["tensors"])
    assert exact["round_ties"]["quantizers"] > 0 and exact["round_ties"]["values"] >= 0  # reported, never silent
    assert manifest["integer_range"]["passed"]
    hw = ModelWrapper(str(out / "intermediate" / "create_dataflow_partition.onnx"))
    ops = [n.op_type for n in hw.graph.node]
    assert all(n.domain.startswith("finn.custom_op.fpgadataflow") for n in hw.graph.node), ops
    # an add per block, two in a doubling one (width 0.25: 8 -> 8 -> 16 -> 16 channels, one doubling); a pooled
    # shortcut per strided block; no layout shuffles left
    stem, plan = _channel_plan(MOBILENET_TINY, 0.25)
    doubling = sum(cout == 2 * cin for (cout, _), cin in zip(plan, [stem] + [c for c, _ in plan]))
    assert doubling == 1
    assert ops.count("ElementwiseAdd") == 2 * len(plan) + doubling and ops.count("StreamingConcat") == doubling
    pools = [n for n in hw.graph.node if n.op_type == "Pool"]
    assert len(pools) == 2 and all(getCustomOp(p).get_nodeattr("Function") == "QuantAvgPool" for p in pools)
    assert "GlobalAccPool" in ops and "DuplicateStreams" in ops and "Shuffle" not in ops
    assert manifest["estimates"]["total"]["estimated_fps"] > 0



@pytest.mark.slow
def test_reactnet_tiny_open_backend_simulates_bit_exact(reactnet_run):
    """The open backend's FINN steps, Verilog and simulation (no synthesis): bit-exact against the NumPy
    reference; about 3 minutes on the shared machine."""
    from hwq.rtl.build import OpenBuildConfig, run_open_build

    m = run_open_build(reactnet_run, OpenBuildConfig(board="ulx3s-85f", verify_samples=2, synthesise=False,
                                                     out_dir=str(reactnet_run / "build-open")))
    assert m["status"] == "done", m.get("error")
    assert m["bit_exact"]["passed"] and m["simulation"]["bit_exact"] and m["simulation"]["n"] == 2
    kinds = {layer.split("_")[0] for layer in m["layers"]}
    assert {"ElementwiseAdd", "DuplicateStreams", "StreamingConcat", "GlobalAccPool"} <= kinds, sorted(m["layers"])


def test_rprelu_keeps_its_slope_positive_and_shifts_both_sides():
    from hwq.models.reactnet import RPReLU

    shape = RPReLU(2)
    with torch.no_grad():
        shape.slope.copy_(torch.tensor([-1.0, 0.5]))
        shape.shift_in.copy_(torch.tensor([1.0, 0.0]))
        shape.shift_out.copy_(torch.tensor([0.0, 2.0]))
    x = torch.tensor([[[[0.0]], [[-2.0]]]])                     # (1, 2, 1, 1)
    # channel 0: slope -1 is used as the minimum 0.01, on x - 1 = -1; channel 1: 0.5 * -2 + 2
    assert shape(x).flatten().tolist() == pytest.approx([-RPReLU.MIN_SLOPE, 1.0])


def test_a_prelu_before_thresholds_becomes_thresholds():
    """A PRelu (per-channel slopes) feeding a MultiThreshold, absorbed: the same outputs on random inputs; a
    falling PRelu (slope < 0) is left alone."""
    import numpy as np
    from onnx import TensorProto, helper
    from qonnx.core.onnx_exec import execute_onnx
    from qonnx.transformation.infer_shapes import InferShapes
    from qonnx.util.basic import qonnx_make_model

    from hwq.dataflow.prelu import AbsorbPReluIntoMultiThreshold

    def graph(slope):
        x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4])
        y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 4, 4])
        nodes = [helper.make_node("PRelu", ["x", "a"], ["p"]),
                 helper.make_node("MultiThreshold", ["p", "t"], ["y"], domain="qonnx.custom_op.general",
                                  out_dtype="UINT2", data_layout="NCHW")]
        model = ModelWrapper(qonnx_make_model(helper.make_graph(nodes, "g", [x], [y]), producer_name="t"))
        model.set_initializer("a", np.asarray(slope, np.float32).reshape(3, 1, 1))
        model.set_initializer("t", np.array([[-1.0, -0.25, 0.5]] * 3, np.float32))
        return model.transform(InferShapes())

    rng = np.random.default_rng(0)
    x = rng.uniform(-6, 2, (1, 3, 4, 4)).astype(np.float32)
    model = graph([0.25, 0.5, 2.0])
    expected = execute_onnx(model, {"x": x})["y"]
    absorbed = model.transform(AbsorbPReluIntoMultiThreshold())
    assert [n.op_type for n in absorbed.graph.node] == ["MultiThreshold"]
    assert np.array_equal(execute_onnx(absorbed, {"x": x})["y"], expected) and len(np.unique(expected)) == 4
    falling = graph([0.25, -0.5, 2.0]).transform(AbsorbPReluIntoMultiThreshold())
    assert [n.op_type for n in falling.graph.node] == ["PRelu", "MultiThreshold"]


def test_reactnet_tiny_with_rprelu_exports_bit_exactly(tmp_path):
    from hwq.export import run_export
    from hwq.train import TrainConfig, run_train

    run = tmp_path / "rprelu"
    run_train(TrainConfig(model="reactnet_tiny", dataset="digits", wbits=1, abits=1, epochs=1, threads=1,
                          model_options={"width": 0.25, "block_shape": "rprelu"}), run, progress=False)
    export = run_export(run)
    assert export["verification"]["passed"] and "PRelu" in export["ops"]
