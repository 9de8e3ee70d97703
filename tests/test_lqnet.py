# SPDX-License-Identifier: BSD-3-Clause
"""``--method lqnet``: LQ-Nets' quantizer and QEM on hand-made tensors, the deployed grid, a digits run's export and
FINN build."""

import itertools

import pytest
import torch

from hwq.quant import get_family
from hwq.quant.lqnet import (LQAct, LQWeightTensorQuant, code_matrix, grid_basis, levels, nearest_codes, qem_step,
                             quantization_error, quantize)


def _x(seed=0, rows=3, n=400):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(rows, n, generator=g) * torch.tensor([[0.5], [1.0], [2.0]])[:rows]


@pytest.mark.parametrize("bits,signed", [(2, True), (3, True), (2, False), (3, False)])
def test_qem_never_increases_the_quantization_error_on_a_fixed_tensor(bits, signed):
    x = _x().abs() if not signed else _x()
    codes = code_matrix(bits, signed)
    basis = torch.full((3, bits), 0.05) * 2.0 ** torch.arange(bits)  # a poor start: levels far too narrow
    errors = [quantization_error(x, basis, codes)]
    for _ in range(30):
        basis = qem_step(x, basis, codes, decay=0.9)
        errors.append(quantization_error(x, basis, codes))
    assert all(b <= a * (1 + 1e-6) for a, b in zip(errors, errors[1:])), errors
    assert errors[-1] < 0.5 * errors[0]


def test_qem_without_averaging_is_the_least_squares_basis_of_the_codes():
    x, codes = _x(1), code_matrix(2, True)
    basis = torch.tensor([[0.3, 0.6]] * 3)
    b = nearest_codes(x, basis, codes)
    expected = torch.stack([torch.linalg.lstsq(b[p], x[p].unsqueeze(1)).solution.squeeze(1) for p in range(3)])
    assert torch.allclose(qem_step(x, basis, codes, decay=0.0, ridge=0.0), expected, atol=1e-5)


def test_levels_are_sorted_and_are_every_code_combination():
    basis = torch.tensor([[0.7, -0.2, 1.5]])
    for signed in (True, False):
        lv = levels(basis, code_matrix(3, signed))[0]
        assert torch.all(lv[1:] >= lv[:-1])
        combos = sorted(sum(v * c for v, c in zip(basis[0].tolist(), e))
                        for e in itertools.product(*([(-1.0, 1.0) if signed else (0.0, 1.0)] * 3)))
        assert torch.allclose(lv, torch.tensor(combos))


def test_one_bit_weight_basis_is_a_scaled_sign_and_qem_gives_mean_abs():
    x = _x(2)
    codes = code_matrix(1, True)
    basis = torch.full((3, 1), 0.1)
    assert torch.equal(quantize(x, basis, codes), 0.1 * torch.where(x >= 0, 1.0, -1.0))
    solved = qem_step(x, basis, codes, decay=0.0, ridge=0.0)
    assert torch.allclose(solved[:, 0], x.abs().mean(1), atol=1e-6)  # the LS scale of sign(x) is mean |x|


def test_codes_are_those_of_the_nearest_level():
    x = _x(3)
    for bits, signed in ((2, True), (3, False)):
        codes = code_matrix(bits, signed)
        basis = torch.rand(3, bits, generator=torch.Generator().manual_seed(bits)) + 0.1
        q = quantize(x, basis, codes)
        all_levels = basis @ codes.T                                   # (3, 2^K), unsorted
        best = (x.unsqueeze(-1) - all_levels.unsqueeze(1)).abs().min(-1).values
        assert torch.allclose((x - q).abs(), best, atol=1e-6)
        assert set(nearest_codes(x, basis, codes).unique().tolist()) <= ({-1.0, 1.0} if signed else {0.0, 1.0})


def test_grid_basis_keeps_uniform_bases_and_bounds_the_sum():
    step, m = grid_basis(torch.tensor([[0.25, 0.5, 1.0], [0.3, 0.31, 2.0], [0.0, 0.0, 0.0]]), 7)
    assert m[0].tolist() == [1, 2, 4] and abs(float(step[0]) - 0.25) < 1e-7
    assert torch.all(m >= 1) and torch.all(m.sum(1) <= 7) and torch.all(step > 0)
    _, m15 = grid_basis(torch.tensor([[0.3, 0.31, 2.0]]), 15)
    assert m15[0].tolist() == [2, 2, 11]  # finer grid, the learned ratios survive better


def test_weight_quantizer_outputs_integers_times_its_per_channel_scale_and_passes_gradients_straight():
    torch.manual_seed(0)
    layer = get_family("lqnet").linear(16, 4, bits=2)
    q = layer.quant_weight()
    assert q.scale.shape == (4, 1)
    integers = (q.value / q.scale).detach()
    assert torch.allclose(integers, integers.round(), atol=1e-5) and integers.abs().max() <= 2 ** (2 + 2) - 1
    assert torch.equal(integers.round() * q.scale, q.value)  # what the exported Quant node computes
    layer.weight.grad = None
    x = torch.randn(5, 16)
    layer(x).sum().backward()
    assert torch.allclose(layer.weight.grad, x.sum(0).expand(4, 16))  # identity straight-through


def test_weight_basis_follows_qem_after_a_step_and_survives_a_state_dict_round_trip():
    family = get_family("lqnet")
    layer = family.linear(32, 3, bits=2)
    (quant,) = [m for m in layer.modules() if isinstance(m, LQWeightTensorQuant)]
    w = layer.weight.detach().reshape(3, -1)
    before = quantization_error(w, quant.basis, quant.codes)
    for _ in range(20):
        quant.hwq_after_step()
    assert quantization_error(w, quant.basis, quant.codes) < before
    fresh = family.linear(32, 3, bits=2)
    fresh.load_state_dict(layer.state_dict())
    assert torch.equal(fresh.quant_weight().value, layer.quant_weight().value)


def test_activation_is_the_nearest_deployed_level_of_relu_x_with_clipped_straight_through():
    act = LQAct(bits=2, extra_bits=2)
    act.basis.copy_(torch.tensor([[0.3, 1.0]]))
    step, m = act.deployed()
    deployed = step * m.float()
    x = torch.linspace(-1, 2, 301, requires_grad=True)
    y = act(x.unsqueeze(0))[0]
    expected = quantize(torch.relu(x.detach()).unsqueeze(0), deployed, code_matrix(2, False))[0]
    assert torch.allclose(y, expected, atol=1e-6)
    assert torch.allclose(y / act.step, (y / act.step).round(), atol=1e-5)  # integers times the step
    y.sum().backward()
    top = float(deployed.sum())
    assert torch.equal(x.grad, ((x >= 0) & (x <= top)).float())


def test_activation_thresholds_repeat_so_the_count_is_the_level_over_the_step():
    act = LQAct(bits=2, extra_bits=2)
    act.basis.copy_(torch.tensor([[0.24, 0.96]]))  # grid 15: m = (3, 12) -> gcd 3 -> (1, 4): levels 0, 1, 4, 5
    assert act.integer_levels() == [0, 1, 4, 5] and act.count_bits() == 3
    t = act.thresholds()[0] / act.step
    assert torch.allclose(t, torch.tensor([0.5, 2.5, 2.5, 2.5, 4.5]))


def test_a_one_bit_activation_is_one_threshold_declared_uint2_for_finn():
    act = LQAct(bits=1, extra_bits=2)
    assert act.integer_levels() == [0, 1] and act.thresholds().shape == (1, 1)
    assert act.count_bits() == 2  # FINN's MVAU has no 0/1 (BINARY) input


def test_activation_qem_runs_after_the_step_on_the_last_training_batch():
    act = LQAct(bits=2, extra_bits=2).train()
    x = (torch.randn(256, 8, generator=torch.Generator().manual_seed(4)) * 3).abs()
    before = quantization_error(x.reshape(1, -1), act.basis, act.codes)
    for _ in range(10):
        act(x)
        act.hwq_after_step()
    assert quantization_error(x.reshape(1, -1), act.basis, act.codes) < before
    act.eval()(x)
    basis = act.basis.clone()
    act.hwq_after_step()  # no training batch: nothing to update
    assert torch.equal(act.basis, basis)


@pytest.mark.parametrize("name,shape", [("tfc", (1, 8, 8)), ("cnv", (3, 32, 32)), ("resnet20", (3, 16, 16)),
                                        ("mobilenet_tiny", (1, 8, 8))])
def test_family_builds_and_trains_every_model(name, shape):
    from hwq.models import ModelSpec, build_model
    from hwq.train.hooks import ModelHooks

    model = build_model(ModelSpec(name, 2, 2, quant="lqnet", image_shape=shape)).train()
    hooks = ModelHooks(model)
    assert "hwq_after_step" in hooks.names()
    model(torch.rand(4, *shape)).sum().backward()
    bases = [m.basis.clone() for m in model.modules() if isinstance(m, (LQAct, LQWeightTensorQuant))]
    hooks("hwq_after_step")
    after = [m.basis for m in model.modules() if isinstance(m, (LQAct, LQWeightTensorQuant))]
    assert bases and all(not torch.equal(a, b) for a, b in zip(after, bases))


def test_family_range_and_options_are_checked():
    from hwq.errors import ConfigError

    with pytest.raises(ConfigError, match="wbits"):
        get_family("lqnet").check_bits(5, 2)
    with pytest.raises(ConfigError, match="model_options.lqnet_extra_bits"):
        get_family("lqnet", {"lqnet_extra_bits": 9}).act(2, 4)


def test_digits_tfc_w2a2_with_method_lqnet_exports_and_builds_with_finn_bit_exactly(tmp_path):
    from hwq.dataflow import BuildConfig, run_build
    from hwq.export import run_export
    from hwq.train import TrainConfig, run_train

    run = tmp_path / "lqnet"
    metrics = run_train(TrainConfig(method="lqnet", wbits=2, abits=2, epochs=2, lr=0.01, threads=1), run,
                        progress=False)
    assert metrics["config"]["method"] == "lqnet" and metrics["config"]["quant"] == "lqnet"
    assert metrics["test_acc"] > 0.5
    report = run_export(run)
    assert report["verification"]["passed"]
    assert "MultiThreshold" in report["ops"]
    manifest = run_build(run, BuildConfig(board="pynq-z2", verify_samples=40), progress=False)
    assert manifest["status"] == "done" and manifest["bit_exact"]["passed"] and manifest["bit_exact"]["n"] == 40
    assert manifest["bit_exact"]["layerwise"]  # each MultiThreshold count against its MVAU's output
    kinds = [layer["op_type"] for layer in manifest["estimates"]["layers"]]
    assert sum(kind.startswith("MVAU") for kind in kinds) == 4


def test_a_per_class_classifier_basis_stops_the_finn_build_in_one_line_naming_the_node(tmp_path):
    from hwq.dataflow import BuildConfig, run_build
    from hwq.dataflow.errors import MappingError
    from hwq.export import run_export
    from hwq.train import TrainConfig, run_train

    run = tmp_path / "lqnet-per-class"
    run_train(TrainConfig(method="lqnet", wbits=2, abits=2, epochs=1, lr=0.01, threads=1,
                          model_options={"lqnet_classifier_per_channel": True}), run, progress=False)
    assert run_export(run)["verification"]["passed"]
    with pytest.raises(MappingError) as error:
        run_build(run, BuildConfig(board="pynq-z2", verify_samples=20, codegen=False), progress=False)
    message = str(error.value)
    assert "\n" not in message and "node" in message


def test_a_resumed_run_equals_an_uninterrupted_one(tmp_path, train_then_stop):
    """The bases are buffers in the checkpoint and QEM keeps no state between steps: resuming gives the same bits."""
    from hwq.train import TrainConfig, run_train
    from hwq.train.checkpoint import load_checkpoint

    config = TrainConfig(method="lqnet", wbits=2, abits=2, epochs=2, threads=1, train_subset=300)
    run_train(config, tmp_path / "straight", progress=False)
    train_then_stop(tmp_path / "resumed", config, stop_after=1)
    run_train(config, tmp_path / "resumed", resume=True, progress=False)
    straight, resumed = (load_checkpoint(tmp_path / name / "model.pt") for name in ("straight", "resumed"))
    assert any(key.endswith("basis") for key in straight)
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)
