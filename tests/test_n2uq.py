# SPDX-License-Identifier: BSD-3-Clause
"""N2UQ: the activation quantizer, its surrogate gradient, the L1-scaled weights, the family and the export."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from hwq.errors import ConfigError
from hwq.export import export_qonnx_model, run_export
from hwq.export.multithreshold import multithreshold_nodes, needs_multithreshold
from hwq.models import ModelSpec, build_model
from hwq.quant.n2uq import (
    MIN_GAP, N2UQAct, N2UQFunction, l1_clip_gain, start_gaps_from_thresholds, surrogate, thresholds_from,
)
from hwq.train import TrainConfig, run_train
from hwq.train.loop import make_optimizer

DIGITS = (1, 8, 8)


# --- forward -------------------------------------------------------------------------------------------------
@settings(max_examples=40, deadline=None)
@given(bits=st.integers(1, 4), channels=st.sampled_from([1, 3]), seed=st.integers(0, 2**16))
def test_outputs_lie_on_the_uniform_levels_and_round_the_surrogate(bits, channels, seed):
    gen = torch.Generator().manual_seed(seed)
    act = N2UQAct(bits, channels=channels, out_range=1.5)
    with torch.no_grad():  # random, non-uniform thresholds
        act.start.normal_(generator=gen)
        act.gap_param.normal_(generator=gen)
    x = 3 * torch.randn(64, 3, 2, generator=gen)
    out = act(x)
    levels = torch.round(out / act.step)
    assert torch.equal(out, levels * act.step) and levels.min() >= 0 and levels.max() <= 2**bits - 1
    # The paper's forward is round-to-nearest of the surrogate (the thresholds are segment midpoints).
    s = surrogate(x.double(), act.start.double(), act.gaps().double(), act.step)
    assert torch.equal(levels.double(), torch.round(s / act.step))


def test_default_init_is_uniform_rounding_of_the_clipped_input():
    act = N2UQAct(3, out_range=2.0)
    x = torch.linspace(-1, 3, 1001)[None, :].T.contiguous()
    expected = torch.round(torch.clamp(x, 0, 2) / act.step) * act.step
    # float32 thresholds sit within an ulp of the rounding midpoints: compare away from them.
    away = (torch.remainder(torch.clamp(x, 0, 2) / act.step, 1.0) - 0.5).abs() > 1e-4
    assert torch.equal(act(x)[away], expected[away])


# --- backward: the generalized straight-through estimator ------------------------------------------------
def _grads(x, start, gaps, step, upstream):
    x, start, gaps = (t.clone().requires_grad_() for t in (x, start, gaps))
    out = N2UQFunction.apply(x, start, gaps, step)
    return torch.autograd.grad((out * upstream).sum(), (x, start, gaps))


def test_backward_matches_hand_computed_cases():
    # bits 2, start 0, gaps (1, 2, 0.5): edges 0, 1, 3, 3.5; thresholds 0.5, 2, 3.25; step 2/3.
    start, gaps, step = torch.tensor([0.0], dtype=torch.float64), torch.tensor([[1.0, 2.0, 0.5]],
                                                                             dtype=torch.float64), 2 / 3
    cases = {  # x: (output, d/dx, d/dstart, d/dgaps)
        -1.0: (0.0, 0.0, 0.0, (0.0, 0.0, 0.0)),
        0.5: (step, step, -step, (-step * 0.5, 0.0, 0.0)),                  # segment 1, fraction 1/2
        1.5: (step, step / 2, -step / 2, (-step / 2, -step / 2 * 0.25, 0.0)),  # segment 2, fraction 1/4
        3.2: (2 * step, 2 * step, -2 * step, (-2 * step, -2 * step, -2 * step * 0.4)),  # segment 3
        4.0: (3 * step, 0.0, 0.0, (0.0, 0.0, 0.0)),
    }
    for x0, (out, dx, dstart, dgaps) in cases.items():
        x = torch.tensor([[x0]], dtype=torch.float64)
        assert N2UQFunction.apply(x, start, gaps, step).item() == pytest.approx(out)
        gx, gs, gg = _grads(x, start, gaps, step, torch.ones_like(x))
        assert gx.item() == pytest.approx(dx), x0
        assert gs.item() == pytest.approx(dstart), x0
        assert gg[0].tolist() == pytest.approx(list(dgaps)), x0


@pytest.mark.parametrize("bits,channels", [(1, 1), (2, 1), (3, 4), (4, 2)])
def test_backward_equals_finite_differences_of_the_surrogate(bits, channels):
    gen = torch.Generator().manual_seed(bits * 10 + channels)
    n, step = 2**bits - 1, 2.0 / (2**bits - 1)
    start = torch.randn(channels, generator=gen, dtype=torch.float64)
    gaps = 0.2 + torch.rand(channels, n, generator=gen, dtype=torch.float64)
    x = start.reshape(1, -1, 1) + 1.2 * n * torch.rand(16, channels, 3, generator=gen, dtype=torch.float64) - 0.5
    upstream = torch.randn(x.shape, generator=gen, dtype=torch.float64)
    gx, gs, gg = _grads(x, start, gaps, step, upstream)

    def loss(x_, start_, gaps_):
        return float((surrogate(x_, start_, gaps_, step) * upstream).sum())

    eps = 1e-6  # central differences of a piecewise-linear function are exact away from its kinks
    fd_x = (surrogate(x + eps, start, gaps, step) - surrogate(x - eps, start, gaps, step)) / (2 * eps) * upstream
    assert torch.allclose(gx, fd_x, atol=1e-6)
    for c in range(channels):
        e = torch.zeros(channels, dtype=torch.float64)
        e[c] = eps
        assert gs[c].item() == pytest.approx((loss(x, start + e, gaps) - loss(x, start - e, gaps)) / (2 * eps),
                                             abs=1e-5)
        for k in range(n):
            e = torch.zeros(channels, n, dtype=torch.float64)
            e[c, k] = eps
            fd = (loss(x, start, gaps + e) - loss(x, start, gaps - e)) / (2 * eps)
            assert gg[c, k].item() == pytest.approx(fd, abs=1e-5), (c, k)
    assert gg.abs().sum() > 0 and gs.abs().sum() > 0  # the thresholds do learn


def test_module_gradients_reach_start_and_gap_parameters_through_softplus():
    act = N2UQAct(2)
    x = torch.linspace(-0.5, 2.5, 50)[:, None]
    act(x).sum().backward()
    _, gs, gg = _grads(x, act.start.detach(), act.gaps().detach(), act.step, torch.ones_like(x))
    assert torch.allclose(act.start.grad, gs)
    assert torch.allclose(act.gap_param.grad, gg * torch.sigmoid(act.gap_param.detach()))


# --- training keeps the thresholds ordered ------------------------------------------------------------------
def test_thresholds_stay_strictly_increasing_under_adversarial_updates():
    act = N2UQAct(3, channels=2)
    opt = torch.optim.Adam(act.parameters(), lr=0.5)
    x = torch.randn(256, 2)
    for _ in range(100):
        loss = (act(x) - 1.0).pow(2).mean()  # pulls every output to one level: collapses the gaps
        opt.zero_grad()
        loss.backward()
        opt.step()
        t = act.thresholds()
        assert bool(torch.all(t[:, 1:] - t[:, :-1] > 0)) and bool(torch.all(act.gaps() > MIN_GAP / 2))
    assert act.gaps().min() < 0.05  # the updates did push gaps towards zero


@pytest.fixture(scope="module")
def n2uq_digits_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("n2uq-tfc-w2a2")
    config = TrainConfig(model="tfc", dataset="digits", quant="n2uq", wbits=2, abits=2, epochs=5, lr=0.01)
    metrics = run_train(config, out, overwrite=True, progress=False)
    return out, metrics


def test_short_training_learns_thresholds_and_keeps_them_sorted(n2uq_digits_run):
    from hwq.train.loop import load_trained_model

    run, metrics = n2uq_digits_run
    assert metrics["test_acc"] > 0.8
    model = load_trained_model(run)[0]
    acts = [m for m in model.modules() if isinstance(m, N2UQAct)]
    assert len(acts) == 3
    initial = N2UQAct(2).thresholds()
    for act in acts:
        t = act.thresholds()
        assert bool(torch.all(t[:, 1:] > t[:, :-1]))
        assert not torch.allclose(t, initial, atol=1e-3)  # trained, not left at the uniform init


def test_threshold_parameters_get_their_own_learning_rate():
    model = build_model(ModelSpec("tfc", 2, 2, quant="n2uq", image_shape=DIGITS,
                                  options={"n2uq_threshold_lr_scale": 0.25}))
    groups = {g["lr_scale"]: g for g in make_optimizer(model, TrainConfig(lr=0.01)).param_groups}
    threshold_params = {id(p) for m in model.modules() if isinstance(m, N2UQAct) for p in (m.start, m.gap_param)}
    assert {id(p) for p in groups[0.25]["params"]} == threshold_params
    assert groups[0.25]["lr"] == pytest.approx(0.0025)


# --- weights -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("bits", [1, 2, 3, 4])
def test_weight_scale_is_per_channel_l1_and_rounding_is_uniform(bits):
    torch.manual_seed(bits)
    layer = build_model(ModelSpec("tfc", bits, 2, quant="n2uq", image_shape=DIGITS)).features[2]
    quant = layer.quant_weight()
    max_int = max(1, 2 ** (bits - 1) - 1)
    expected = l1_clip_gain(bits) * layer.weight.detach().abs().mean(dim=1) / max_int
    assert torch.allclose(quant.scale.flatten(), expected)
    ints = quant.value / quant.scale
    assert torch.allclose(ints, ints.round(), atol=1e-5) and ints.round().abs().max() <= max_int
    if bits > 1:  # round to nearest inside the range
        w = layer.weight.detach()
        ref = torch.clamp(torch.round(w / quant.scale), -max_int, max_int)
        assert torch.allclose(ints, ref, atol=1e-5)
    quant.value.sum().backward()  # straight through: every latent weight gets a gradient
    assert bool(torch.all(layer.weight.grad != 0))


def test_weight_scale_per_tensor_option():
    layer = build_model(ModelSpec("tfc", 2, 2, quant="n2uq", image_shape=DIGITS,
                                  options={"n2uq_weight_per_channel": False})).features[2]
    assert layer.quant_weight().scale.numel() == 1


# --- the family in every model -----------------------------------------------------------------------------
@pytest.mark.parametrize("name,shape", [("tfc", DIGITS), ("sfc", DIGITS), ("lfc", DIGITS), ("cnv", (3, 32, 32)),
                                        ("resnet20", (3, 16, 16))])
def test_family_builds_and_trains_every_model(name, shape):
    model = build_model(ModelSpec(name, 2, 2, quant="n2uq", image_shape=shape, options={"n2uq_per_channel": True}))
    assert needs_multithreshold(model)
    out = model(torch.rand(2, *shape))
    out.sum().backward()
    acts = [m for m in model.modules() if isinstance(m, N2UQAct)]
    assert acts and all(m.gap_param.grad is not None for m in acts)


# --- export --------------------------------------------------------------------------------------------------
def test_export_is_bit_exact_on_held_out_digits(n2uq_digits_run):
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.core.onnx_exec import execute_onnx
    from qonnx.transformation.change_batchsize import ChangeBatchSize
    from qonnx.transformation.infer_shapes import InferShapes

    from hwq.data import Dataset, load_dataset
    from hwq.train.loop import load_trained_model

    run, _ = n2uq_digits_run
    report = run_export(run)
    v = report["verification"]
    assert v["passed"] and v["max_abs_diff"] < 1e-5 and v["n"] == 360
    # a single-scale classifier gives integer-valued logits, so exact ties occur; only those may differ
    assert v["argmax_match"] * v["n"] + v["ties_broken_differently"] == v["n"]
    assert "MultiThreshold" in report["ops"]
    wrapper = ModelWrapper(str(run / "model.onnx"))
    nodes = multithreshold_nodes(wrapper)
    assert [(n["out_dtype"], n["thresholds_shape"], n["sorted"]) for n in nodes] == [("UINT2", [1, 3], True)] * 3
    # Every Quant left is a weight or the 8-bit input: the activations became thresholds.
    assert sum(node.op_type == "Quant" for node in wrapper.graph.node) == 5

    # Bit-exact where it matters: each MultiThreshold count equals the PyTorch activation's level index.
    model = load_trained_model(run)[0]
    acts = [m for m in model.modules() if isinstance(m, N2UQAct)]
    levels = []
    hooks = [a.register_forward_hook(lambda m, i, o: levels.append((o / m.step).round())) for a in acts]
    images = Dataset.to_float(load_dataset("digits").test_x[:100]).reshape(100, -1)
    with torch.no_grad():
        model(images)
    for h in hooks:
        h.remove()
    sized = wrapper.transform(ChangeBatchSize(100)).transform(InferShapes())
    context = execute_onnx(sized, {sized.graph.input[0].name: images.numpy()}, return_full_exec_context=True)
    mt_outputs = [context[n.output[0]] for n in sized.graph.node if n.op_type == "MultiThreshold"]
    assert len(mt_outputs) == 3
    for ours, theirs in zip(levels, mt_outputs):
        np.testing.assert_array_equal(ours.numpy(), theirs)


def test_per_channel_resnet_exports_exactly(tmp_path):
    from hwq.export import execute_qonnx

    torch.manual_seed(0)
    model = build_model(ModelSpec("resnet20", 2, 2, quant="n2uq", image_shape=(3, 8, 8), num_classes=10,
                                  options={"n2uq_per_channel": True}))
    model.train()
    with torch.no_grad():
        for _ in range(3):  # non-trivial batch-norm statistics
            model(torch.rand(16, 3, 8, 8))
    model.eval()
    wrapper = export_qonnx_model(model, tmp_path / "resnet.onnx")
    nodes = multithreshold_nodes(wrapper)
    assert len(nodes) == 19 and all(n["sorted"] for n in nodes)
    assert {n["thresholds_shape"][0] for n in nodes} == {16, 32, 64}
    images = torch.rand(8, 3, 8, 8)
    with torch.no_grad():
        reference = model(images).numpy()
    assert np.abs(execute_qonnx(wrapper, images.numpy(), 8) - reference).max() < 1e-4
    assert any(isinstance(m, N2UQAct) for m in model.modules())  # the export swap was undone


def test_cnv_for_cifar10_exports_exactly(tmp_path):
    """The CIFAR-10 network at its real input size: conv, max-pool and FC layers, N2UQ activations."""
    from hwq.export import ExportConfig, verify_qonnx

    torch.manual_seed(0)
    model = build_model(ModelSpec("cnv", 2, 2, quant="n2uq", image_shape=(3, 32, 32)))
    model.train()
    with torch.no_grad():
        for _ in range(2):  # batch-norm statistics from data, not the initial (0, 1)
            model(torch.rand(32, 3, 32, 32))
    model.eval()
    wrapper = export_qonnx_model(model, tmp_path / "cnv.onnx")
    assert len(multithreshold_nodes(wrapper)) == 8  # six convolutions and two hidden FC layers
    images = torch.rand(4, 3, 32, 32).mul(255).round().div(255)
    verification, _, _ = verify_qonnx(tmp_path / "cnv.onnx", model, images, ExportConfig(batch=4))
    assert verification["passed"] and verification["max_abs_diff"] < 1e-4


def test_uniform_export_has_no_multithreshold(tmp_path):
    model = build_model(ModelSpec("tfc", 2, 2, image_shape=DIGITS)).eval()
    assert not needs_multithreshold(model)
    wrapper = export_qonnx_model(model, tmp_path / "uniform.onnx")
    assert multithreshold_nodes(wrapper) == []


# --- bad settings --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs,match", [
    ({"bits": 0}, "abits"),
    ({"bits": 5}, "abits"),
    ({"bits": 2, "gaps": [0.5, -0.1, 0.5]}, "n2uq_gaps"),
    ({"bits": 2, "gaps": 0.0}, "n2uq_gaps"),
    ({"bits": 2, "gaps": [0.5, 0.5]}, "needs 3 gaps"),
    ({"bits": 2, "thresholds": [0.5, 0.2, 1.0]}, "strictly increasing"),
    ({"bits": 2, "thresholds": [0.5, 1.0]}, "needs 3 thresholds"),
    ({"bits": 2, "thresholds": [0.0, 1.0, 1.01]}, None),
    ({"bits": 2, "out_range": -1.0}, "n2uq_range"),
])
def test_bad_activation_settings_raise_config_errors(kwargs, match):
    if match is None:  # a valid, non-uniform threshold set is accepted and reproduced
        act = N2UQAct(**kwargs)
        assert act.thresholds()[0].tolist() == pytest.approx(kwargs["thresholds"], abs=1e-6)
        return
    with pytest.raises(ConfigError, match=match):
        N2UQAct(**kwargs)


def test_thresholds_that_no_positive_gaps_reach_are_rejected():
    with pytest.raises(ConfigError, match="cannot be the midpoints"):
        start_gaps_from_thresholds([0.0, 1.0, 1.01, 5.0, 5.02, 9.0, 9.01], "n2uq_thresholds")


@pytest.mark.parametrize("wbits,abits,options,match", [
    (2, 0, {}, "--abits 0"),
    (2, 5, {}, "--abits 5"),
    (0, 2, {}, "--wbits 0"),
    (2, 2, {"n2uq_gaps": [-1.0, 1.0, 1.0]}, "n2uq_gaps"),
    (2, 2, {"n2uq_thresholds": [1.0, 0.0, 2.0]}, "n2uq_thresholds"),
    (2, 2, {"n2uq_per_channel": "yes"}, "n2uq_per_channel"),
    (2, 2, {"n2uq_range": True}, "n2uq_range"),
])
def test_bad_family_settings_raise_config_errors_at_build_time(wbits, abits, options, match):
    with pytest.raises(ConfigError, match=match):
        build_model(ModelSpec("tfc", wbits, abits, quant="n2uq", image_shape=DIGITS, options=options))


def test_thresholds_from_helpers_agree():
    start, gaps = start_gaps_from_thresholds([0.1, 0.4, 1.3])
    t = thresholds_from(torch.tensor([start]), torch.tensor([gaps]))
    assert t[0].tolist() == pytest.approx([0.1, 0.4, 1.3])
    assert min(gaps) > 0


# --- FINN: an N2UQ network becomes the same HW layers as a uniform one, bit-exactly ---------------------------
def _hw_graph(run, tmp_path, name):
    """Export ``run`` and take it through hwq.dataflow's steps up to the abstract HW-layer graph."""
    from qonnx.core.modelwrapper import ModelWrapper

    from hwq.dataflow import STEPS, BuildConfig, run_build

    run_export(run)
    steps = STEPS[:[n for n, _ in STEPS].index("minimize_bit_width_initial") + 1]
    manifest = run_build(run, BuildConfig(codegen=False, out_dir=str(tmp_path / name)), progress=False, steps=steps)
    return ModelWrapper(str(tmp_path / name / manifest["steps"][-1]["onnx"]))


@pytest.mark.slow
def test_finn_maps_n2uq_to_the_same_hw_layers_as_uniform_bit_exactly(tmp_path):
    from qonnx.core.modelwrapper import ModelWrapper

    from hwq.data import load_dataset
    from hwq.dataflow.gates import hw_layer_outputs, run_hw_graph, run_qonnx_graph

    graphs = {}
    for quant in ("uniform", "n2uq"):
        run = tmp_path / quant
        # One scale per weight tensor: a per-class scale on the last layer could not fold into FINN's TopK.
        options = {"n2uq_weight_per_channel": False} if quant == "n2uq" else {}  # an option of n2uq only
        run_train(TrainConfig(model="tfc", dataset="digits", quant=quant, wbits=2, abits=2, epochs=5, lr=0.01,
                              model_options=options), run, progress=False)
        graphs[quant] = _hw_graph(run, tmp_path, f"build-{quant}")
    kinds = {q: [n.op_type for n in g.graph.node] for q, g in graphs.items()}
    assert kinds["n2uq"] == kinds["uniform"], kinds
    assert "MVAU" in kinds["n2uq"] and "LabelSelect" in kinds["n2uq"]

    # Layer by layer: each thresholded MVAU output equals the QONNX MultiThreshold count on test images.
    hw = graphs["n2uq"]
    qonnx = ModelWrapper(str(tmp_path / "n2uq" / "model.onnx"))
    images = load_dataset("digits").test_x[:40].numpy()
    mt = [n.output[0] for n in qonnx.graph.node if n.op_type == "MultiThreshold"]
    ref = run_qonnx_graph(qonnx, images.reshape(len(images), -1) / 255.0, mt + [qonnx.graph.output[0].name])
    layers = hw_layer_outputs(hw)
    got, _, _ = run_hw_graph(hw, images.astype(np.float32), [n.output[0] for n in layers] + [hw.graph.output[0].name])
    assert len(layers) == len(mt) + 1
    for tensor, node in zip(mt, layers):
        np.testing.assert_array_equal(got[node.output[0]].reshape(ref[tensor].shape), ref[tensor])
    logits = ref[qonnx.graph.output[0].name]
    top2 = np.sort(logits, axis=1)[:, -2:]
    untied = top2[:, 1] - top2[:, 0] > 1e-4  # exact ties may be broken either way by TopK
    classes = got[hw.graph.output[0].name].reshape(len(images), -1)[:, 0]
    np.testing.assert_array_equal(classes[untied], logits.argmax(1)[untied])


def test_hwq_build_maps_a_default_n2uq_network(n2uq_digits_run, tmp_path):
    """Default N2UQ options (per-channel hidden weight scales, one classifier scale) build with both gates."""
    import shutil

    from hwq.dataflow import BuildConfig, run_build

    run = tmp_path / "run"
    shutil.copytree(n2uq_digits_run[0], run)
    run_export(run)
    manifest = run_build(run, BuildConfig(board="pynq-z2", verify_samples=40), progress=False)
    assert manifest["status"] == "done"
    assert manifest["bit_exact"]["passed"] and manifest["bit_exact"]["n"] == 40
    assert manifest["integer_range"]["passed"]
    kinds = [layer["op_type"] for layer in manifest["estimates"]["layers"]]
    assert sum(kind.startswith("MVAU") for kind in kinds) == 4 and any(k.startswith("LabelSelect") for k in kinds)
    assert manifest["estimates"]["total"]["estimated_fps"] > 0


def test_an_n2uq_w1a1_network_builds_through_code_generation(tmp_path):
    """A 1-bit N2UQ activation (0/1) is declared UINT2: FINN's MVAU code generation refuses a BINARY input outside
    XNOR mode ("True binary (non-bipolar) inputs not yet supported"), and this build failed at hw_codegen."""
    from qonnx.core.modelwrapper import ModelWrapper

    from hwq.dataflow import BuildConfig, run_build
    from hwq.export.multithreshold import multithreshold_nodes

    run = tmp_path / "run"
    run_train(TrainConfig(model="tfc", dataset="digits", quant="n2uq", wbits=1, abits=1, epochs=2, threads=1), run,
              progress=False)
    run_export(run)
    assert {n["out_dtype"] for n in multithreshold_nodes(ModelWrapper(str(run / "model.onnx")))} == {"UINT2"}
    manifest = run_build(run, BuildConfig(board="pynq-z2", verify_samples=20), progress=False)
    assert manifest["status"] == "done" and manifest["bit_exact"]["passed"]
    assert "hw_codegen" in [step["name"] for step in manifest["steps"]]
