# SPDX-License-Identifier: BSD-3-Clause
"""BiTAT (``--quant bitat``): orthonormal transformation, importance, progressive schedule, plain W1A1 export."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from hwq.data import Dataset, load_dataset
from hwq.errors import ConfigError
from hwq.models import ModelSpec, build_model
from hwq.quant import bitat_transform as T
from hwq.quant.bitat import BiTATAct, bitat_layers, check_deployable
from hwq.train.loop import call_hooks, make_optimizer
from hwq.train.progressive import ProgressivePlan

DIGITS_SHAPE = (1, 8, 8)


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def _model(name="tfc", **options):
    """A first-design BiTAT model (the second design has its own tests: tests/test_bitat2.py)."""
    options.setdefault("bitat_design", "first")
    torch.manual_seed(0)
    return build_model(ModelSpec(name, 1, 1, quant="bitat", image_shape=DIGITS_SHAPE, options=options))


def _acts(model):
    return [m for m in model.modules() if isinstance(m, BiTATAct)]


def _train_steps(model, digits, steps, epochs=1, lr=0.05, check=None):
    """A few steps of the train loop's inner body (hooks, task loss + extra losses, Adam, latent clip)."""
    from hwq.quant import clip_latent_weights
    from hwq.train import TrainConfig

    optimizer = make_optimizer(model, TrainConfig(lr=lr))
    model.train()
    gen = torch.Generator().manual_seed(0)
    for epoch in range(epochs):
        call_hooks(model, "hwq_on_epoch_start", epoch, epochs)
        for _ in range(steps):
            idx = torch.randint(0, len(digits.train_x), (64,), generator=gen)
            logits = model(Dataset.to_float(digits.train_x[idx]))
            loss = torch.nn.functional.cross_entropy(logits, digits.train_y[idx])
            loss = loss + sum(call_hooks(model, "hwq_extra_loss"))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            clip_latent_weights(model)
            call_hooks(model, "hwq_after_step")
            if check is not None:
                check(model)


# --- the transformation --------------------------------------------------------------------------------------
def test_weighted_error_matches_output_error_with_eigenvalues():
    """With s = lambda the penalty is exactly E||(W - alpha b) x||^2: the basis disentangles the weights."""
    torch.manual_seed(1)
    x = torch.randn(4000, 6) @ torch.randn(6, 6)
    w = torch.randn(1, 3, 6)
    u, lam = T.eigenbasis(T.correlation(T.patches(x, 1, max_samples=4000)))
    b = T.binary_codes(w)
    err = T.weighted_binarization_error(w, u, lam)
    # The same alpha per row as the function uses (optimal under M = C).
    c = T.correlation(T.patches(x, 1, max_samples=4000))[0]
    alpha = (w[0] @ c * b[0]).sum(1, keepdim=True) / (b[0] @ c * b[0]).sum(1, keepdim=True)
    direct = (((w[0] - alpha * b[0]) @ x.T) ** 2).mean(1).mean()
    assert float(err) == pytest.approx(float(direct), rel=1e-3)


@pytest.mark.parametrize("transform", ["eigen", "cayley"])
def test_transformation_stays_orthonormal_during_training(digits, transform):
    model = _model("mobilenet_tiny", width=0.5, bitat_transform=transform, bitat_progressive=False)
    errors = []
    _train_steps(model, digits, steps=6, epochs=2,
                 check=lambda m: errors.append(max(layer.orthonormality_error() for layer in bitat_layers(m))))
    assert max(errors) < 1e-4
    layers = bitat_layers(model)
    first = layers[1]  # a depthwise conv: 3x3 patches per channel
    assert float((first.basis - torch.eye(first.bitat_n)).abs().max()) > 0.1
    if transform == "eigen":
        # At an epoch start the basis becomes the eigenbasis of the running correlation: U^T C U is diagonal.
        call_hooks(model, "hwq_on_epoch_start", 2, 3)
        d = first.basis.transpose(1, 2) @ first.corr @ first.basis
        off = d - torch.diag_embed(torch.diagonal(d, dim1=1, dim2=2))
        assert float(off.abs().max()) < 1e-4 * float(d.abs().max())
    else:  # the learned rotation moved away from the eigenbasis and is still orthonormal
        assert max(float(layer.rotation_raw.abs().max()) for layer in layers) > 1e-3


def test_importance_is_trained_by_the_task_loss(digits):
    model = _model(bitat_penalty=0.0, bitat_progressive=False)
    model.train()
    model(Dataset.to_float(digits.train_x[:64]))  # input statistics, from which s is initialised at the switch
    call_hooks(model, "hwq_on_epoch_start", 0, 1)
    before = [layer.importance().detach().clone() for layer in bitat_layers(model)]
    assert all(float(s.std()) > 0 for s in before)  # initialised from the eigenvalues, not uniform
    _train_steps(model, digits, steps=5)
    after = [layer.importance().detach() for layer in bitat_layers(model)]
    assert all(float((a - b).abs().max()) > 1e-4 for a, b in zip(after, before))
    assert all(torch.allclose(a.mean(-1), torch.ones(a.shape[0])) and bool((a > 0).all()) for a in after)


def test_penalty_moves_latent_weights_towards_their_binary_codes():
    model = _model(bitat_progressive=False, bitat_penalty=1.0)
    model.train()
    call_hooks(model, "hwq_on_epoch_start", 0, 1)
    layer = bitat_layers(model)[0]
    layer.observe(torch.rand(256, 64))
    optimizer = torch.optim.Adam([layer.weight], lr=0.02)
    first = float(layer.hwq_extra_loss().detach())
    for _ in range(60):
        optimizer.zero_grad()
        layer.hwq_extra_loss().backward()
        optimizer.step()
    assert float(layer.hwq_extra_loss().detach()) < 0.5 * first


def _correlated_layer_problem(seed=0, rows=16, n=48):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(1, rows, n, generator=g)
    x = torch.randn(3000, n, generator=g) @ (0.3 * torch.randn(n, n, generator=g)) + torch.randn(n, generator=g)
    u, lam = T.eigenbasis((x.T @ x / len(x)).unsqueeze(0))
    return w, u, lam


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_importance_aware_codes_lose_less_than_signs(seed):
    w, u, lam = _correlated_layer_problem(seed)
    s = T.importance_from_eigenvalues(lam, 0.5, 0.05, 20.0)
    codes = T.importance_aware_codes(w, u, s)
    assert set(codes.unique().tolist()) == {-1.0, 1.0}
    signs = T.binary_codes(w)
    assert bool((codes != signs).any())
    assert float(T.weighted_code_error(w, codes, u, s)) < 0.95 * float(T.weighted_code_error(w, signs, u, s))


def test_importance_aware_codes_without_importance_are_signs():
    w, u, _ = _correlated_layer_problem()
    assert torch.equal(T.importance_aware_codes(w, u, torch.ones(1, w.shape[-1])), T.binary_codes(w))


def test_a_layer_switches_to_its_importance_aware_codes():
    model = _model(bitat_progressive=False, bitat_codes="importance")
    model.train()
    layer = bitat_layers(model)[0]
    layer.observe(torch.rand(512, 64))
    before = layer.grouped_weight().detach().clone()
    call_hooks(model, "hwq_on_epoch_start", 0, 1)            # the switch: basis, importance, then the codes
    expected = T.importance_aware_codes(before, layer.transform_basis().detach(), layer.importance().detach())
    assert torch.equal(T.binary_codes(layer.grouped_weight().detach()), expected)
    assert not torch.equal(expected, T.binary_codes(before))
    after = layer.weight.detach().clone()
    layer.hwq_after_step()                                   # codes_every = 0: only at the switch
    assert torch.equal(layer.weight.detach(), after)


def test_deployed_signs_are_the_importance_aware_codes_after_a_refresh(digits):
    model = _model(bitat_progressive=False, bitat_codes="importance", bitat_codes_every=1)
    _train_steps(model, digits, steps=3)
    layer = bitat_layers(model)[0]
    w = layer.grouped_weight().detach().clone()
    expected = T.importance_aware_codes(w, layer.transform_basis().detach(), layer.importance().detach())
    layer.hwq_after_step()     # codes_every = 1: re-applied after this step
    assert torch.equal(T.binary_codes(layer.grouped_weight().detach()), expected)
    assert torch.allclose(layer.grouped_weight().detach().abs(), w.abs().clamp_min(1e-6))   # magnitudes kept
    sign_model = _model(bitat_progressive=False)                          # default: bitat_codes = sign
    _train_steps(sign_model, digits, steps=1)
    before = bitat_layers(sign_model)[0].weight.detach().clone()
    bitat_layers(sign_model)[0].hwq_after_step()
    assert torch.equal(bitat_layers(sign_model)[0].weight.detach(), before)   # the sign ablation never re-signs


# --- the schedule --------------------------------------------------------------------------------------------
@settings(max_examples=200, deadline=None)
@given(n_units=st.integers(1, 40), epochs=st.integers(1, 60), final=st.floats(0.0, 0.6),
       warmup=st.floats(0.0, 0.3), stages=st.none() | st.integers(1, 50))
def test_plan_switches_units_in_order_and_finishes_binary(n_units, epochs, final, warmup, stages):
    plan = ProgressivePlan(final_fraction=final, warmup_fraction=warmup, stages=stages)
    starts = [plan.start_epoch(u, n_units, epochs) for u in range(n_units)]
    assert starts == sorted(starts)                       # bottom to top
    assert max(starts) < epochs                           # everything is binary by the last epoch
    stage_starts = sorted(set(starts))
    by_stage = [plan.stage_of(u, n_units, epochs) for u in range(n_units)]
    assert len(stage_starts) == len(set(by_stage))        # distinct stages never share an epoch
    prefixes = [plan.binary_prefix(e, n_units, epochs) for e in range(epochs)]
    assert prefixes == sorted(prefixes) and prefixes[-1] == n_units


def test_model_quantizes_layers_strictly_in_order_and_never_back():
    model = _model("mobilenet_tiny", bitat_final=0.2)
    n = len(bitat_layers(model))
    epochs = 10
    seen = []
    for epoch in list(range(epochs)) + [0, 3]:  # then replay early epochs, as a restarted schedule would
        model.train()
        model(torch.rand(8, *DIGITS_SHAPE))      # gather input statistics like a training step
        call_hooks(model, "hwq_on_epoch_start", epoch, epochs)
        flags = [bool(m.binary) for m in bitat_layers(model)]
        act_flags = [bool(m.binary) for m in _acts(model)]
        k = sum(flags)
        assert flags == [True] * k + [False] * (n - k)   # a prefix from the input side
        assert act_flags == flags[: len(act_flags)]       # each activation switches with its layer
        seen.append(k)
    assert seen[:epochs] == sorted(seen[:epochs]) and seen[0] >= 1 and seen[epochs - 1] == n
    assert len(set(seen[:epochs])) >= min(n, 8) - 1     # progressive: many distinct steps, not all at once
    assert seen[epochs:] == [n, n]                        # never back to full precision
    check_deployable(model)


# --- ablation switches ---------------------------------------------------------------------------------------
def test_ablation_no_progressive_binarizes_everything_at_the_first_epoch():
    model = _model(bitat_progressive=False)
    call_hooks(model, "hwq_on_epoch_start", 0, 20)
    assert all(bool(m.binary) for m in bitat_layers(model) + _acts(model))


def test_ablation_no_transformation_uses_the_identity_basis():
    model = _model(bitat_transform="none", bitat_progressive=False)
    model.train()
    model(torch.rand(32, *DIGITS_SHAPE))
    call_hooks(model, "hwq_on_epoch_start", 0, 1)
    for layer in bitat_layers(model):
        assert torch.equal(layer.transform_basis(), torch.eye(layer.bitat_n).expand(layer.bitat_groups, -1, -1))
        assert layer.basis is None   # nothing dense is stored for it
        assert float(layer.importance().std()) > 0  # importance still comes from the (diagonal) statistics


def test_ablation_no_importance_fixes_s_to_one(digits):
    model = _model(bitat_importance=False, bitat_progressive=False)
    params = {id(p) for g in make_optimizer(model, __import__("hwq.train").train.TrainConfig()).param_groups
              for p in g["params"]}
    _train_steps(model, digits, steps=3)
    for layer in bitat_layers(model):
        assert torch.equal(layer.importance(), torch.ones(1, layer.bitat_n))
        assert id(layer.importance_raw) not in params


def test_coordinate_basis_shortcut_equals_the_dense_identity():
    """``u = None`` (no n x n products) computes what ``U = I`` computes, for the metric, penalty and codes."""
    torch.manual_seed(3)
    w, s = torch.randn(2, 4, 9), T.normalized_importance(torch.randn(2, 9))
    eye = torch.eye(9).expand(2, 9, 9)
    assert torch.allclose(T.apply_metric(w, None, s), T.apply_metric(w, eye, s), atol=1e-6)
    assert float(T.weighted_binarization_error(w, None, s)) == pytest.approx(
        float(T.weighted_binarization_error(w, eye, s)), rel=1e-5)
    assert torch.equal(T.importance_aware_codes(w, None, s), T.importance_aware_codes(w, eye, s))
    x = torch.randn(2, 9, 50)
    assert torch.allclose(T.correlation(x, diagonal=True), torch.diagonal(T.correlation(x), dim1=1, dim2=2))


def test_layers_above_the_eigen_size_keep_the_coordinate_basis():
    model = _model("tfc", bitat_max_eigen_dim=100)   # TFC on digits: 64 inputs, then 64-wide hidden layers
    assert [layer.transform for layer in bitat_layers(model)] == ["eigen"] * len(bitat_layers(model))
    model = _model("tfc", bitat_max_eigen_dim=32)
    layers = bitat_layers(model)
    assert all(layer.transform == "none" and layer.corr.shape == (1, layer.bitat_n) for layer in layers)


def test_schedule_flags_survive_a_checkpoint(digits):
    """The flags are read as Python values (no GPU sync per step) but a state dict carries them."""
    model = _model()
    model.train()
    call_hooks(model, "hwq_on_epoch_start", 0, 10)   # the first layer switches
    for _ in range(2):
        model(Dataset.to_float(digits.train_x[:32]))
        call_hooks(model, "hwq_after_step")
    before = [(m.binary, m.corr_seen, m.transform_ready, m.steps_binary) for m in bitat_layers(model)]
    assert any(b[0] for b in before) and not all(b[0] for b in before) and max(b[3] for b in before) == 2
    fresh = _model()
    fresh.load_state_dict(model.state_dict())
    assert [(m.binary, m.corr_seen, m.transform_ready, m.steps_binary) for m in bitat_layers(fresh)] == before
    assert [m.binary for m in _acts(fresh)] == [m.binary for m in _acts(model)]


def test_mobilenet_pads_binary_depthwise_inputs_with_minus_one():
    """A bipolar stream has no 0: the depthwise convs see -1 at the border, as the 1-bit hardware pads."""
    net = build_model(ModelSpec("mobilenet_tiny", 1, 1, quant="uniform", image_shape=DIGITS_SHAPE,
                                options={"width": 0.5}))
    pads = [m for m in net.modules() if isinstance(m, torch.nn.ConstantPad2d)]
    assert len(pads) == 3 and all(p.value == -1.0 and p.padding == (1, 1, 1, 1) for p in pads)
    depthwise = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d) and m.groups > 1]
    assert len(depthwise) == 3 and all(tuple(m.padding) == (0, 0) for m in depthwise)
    wide = build_model(ModelSpec("mobilenet_tiny", 2, 2, quant="uniform", image_shape=DIGITS_SHAPE))
    assert all(p.value == 0.0 for p in wide.modules() if isinstance(p, torch.nn.ConstantPad2d))
    with pytest.raises(ConfigError, match="pad_value"):
        build_model(ModelSpec("mobilenet_tiny", 1, 1, image_shape=DIGITS_SHAPE, options={"pad_value": "minus"}))


def test_bad_options_name_the_field():
    with pytest.raises(ConfigError, match="bitat_transform"):
        _model(bitat_transform="svd")
    with pytest.raises(ConfigError, match="bitat_importance"):
        _model(bitat_importance="yes")
    with pytest.raises(ConfigError, match="bitat_codes"):
        _model(bitat_codes="round")
    with pytest.raises(ConfigError, match="wbits"):
        build_model(ModelSpec("tfc", 2, 1, quant="bitat", image_shape=DIGITS_SHAPE))


# --- deployment ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("model_name", ["tfc", "mobilenet_tiny"])
def test_export_is_a_plain_w1a1_network_equal_to_the_trained_one(tmp_path, model_name):
    from qonnx.core.modelwrapper import ModelWrapper

    from hwq.export import run_export
    from hwq.train import TrainConfig, run_train
    from hwq.train.loop import load_trained_model

    run = tmp_path / model_name
    config = TrainConfig(model=model_name, dataset="digits", quant="bitat", epochs=3, lr=0.01,
                         model_options={"bitat_design": "first", **({"width": 0.5} if model_name != "tfc" else {})})
    run_train(config, run, progress=False)
    report = run_export(run)
    assert report["verification"]["passed"] and report["verification"]["argmax_match"] == 1.0

    # Every weight tensor in the graph is binarized with scale 1: the deployed weights are plain +-1.
    graph = ModelWrapper(str(run / "model.onnx"))
    trained, _, spec = load_trained_model(run)
    check_deployable(trained)
    weight_nodes = [n for n in graph.graph.node
                    if n.op_type == "BipolarQuant" and graph.get_initializer(n.input[0]) is not None]
    assert len(weight_nodes) == len(bitat_layers(trained))
    for node in weight_nodes:
        assert np.array_equal(graph.get_initializer(node.input[1]), np.ones(1, dtype=np.float32))
    assert "Conv" in report["ops"] or model_name == "tfc"

    # Differential: the same weights in a plain binary network (uniform family, sign + STE) give the same logits.
    plain = build_model(ModelSpec(spec.name, 1, 1, quant="uniform", image_shape=spec.image_shape,
                                  options={k: v for k, v in spec.options.items() if not k.startswith("bitat_")}))
    plain.load_state_dict({k: v for k, v in trained.state_dict().items() if k in plain.state_dict()})
    plain.eval()
    images = Dataset.to_float(load_dataset("digits").test_x[:200]).reshape(200, *trained.input_shape)
    with torch.no_grad():
        assert torch.equal(plain(images), trained(images))

    if model_name == "tfc":     # and FINN builds it like any binary network, both gates passing
        from hwq.dataflow import BuildConfig, run_build

        manifest = run_build(run, BuildConfig(board="pynq-z2", verify_samples=10), progress=False)
        assert manifest["status"] == "done" and manifest["estimates"]["total"]["estimated_fps"] > 0
        assert manifest["bit_exact"]["passed"] and manifest["integer_range"]["passed"]
