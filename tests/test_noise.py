# SPDX-License-Identifier: BSD-3-Clause
"""``--method noise``: the decaying error-aware noise and the learned gradient scale on hand-made tensors, and a
digits run that exports and builds with FINN bit-exactly."""

import math

import pytest
import torch

from hwq.quant import get_family
from hwq.quant.noise import NoisyRound, noise_std_at


def _rounds(module):
    return [m for m in module.modules() if isinstance(m, NoisyRound)]


def _round(**options):
    settings = {"noise_std": 1.0, "noise_decay": 5.0, "noise_grad_scale": True, "noise_grad_scale_lr_scale": 0.1}
    return NoisyRound(**{**settings, **options})


@pytest.mark.parametrize("bits", [2, 3, 5, 8])
def test_every_weight_and_activation_quantizer_has_its_own_noisy_round(bits):
    family = get_family("noise")
    layer, act = family.linear(8, 4, bits=bits), family.act(bits, channels=4)
    assert len(_rounds(layer)) == 1 and len(_rounds(act)) == 1
    layer.eval(), act.eval()
    assert int(layer.quant_weight().bit_width) == bits and int(act.act_quant.bit_width()) == bits
    assert _rounds(family.linear(8, 4, bits=1)) == [] and _rounds(family.act(1, channels=4)) == []  # sign at 1 bit


@pytest.mark.parametrize("progress", [0.0, 0.3, 1.0])
def test_noise_std_decays_exponentially_and_is_the_quantization_error_times_a_gaussian(progress):
    rnd = _round(noise_std=0.8, noise_decay=4.0)
    rnd.hwq_on_step(progress)
    assert rnd.noise_std() == pytest.approx(0.8 * math.exp(-4.0 * progress))
    assert noise_std_at(progress, 0.8, 4.0) == pytest.approx(0.8 * math.exp(-4.0 * progress))
    y = torch.linspace(-3.0, 3.0, 200_000)
    error = torch.round(y) - y
    torch.manual_seed(5)
    out = rnd(y).detach()
    torch.manual_seed(5)
    xi = torch.randn_like(y)
    # The noise is the quantization error times std(p) * xi: exactly, element by element ...
    assert torch.allclose(out - torch.round(y), rnd.noise_std() * xi * error, atol=1e-6)
    # ... so its measured std relative to the error is std(p); on the grid (error 0) there is none.
    big = error.abs() > 0.1
    assert float(((out - torch.round(y))[big] / error[big]).std()) == pytest.approx(rnd.noise_std(), rel=0.02)
    on_grid = torch.tensor([-2.0, 0.0, 1.0])
    assert torch.equal(rnd(on_grid), on_grid)


def test_eval_mode_is_the_plain_round():
    rnd = _round()
    rnd.hwq_on_step(0.0)  # the largest noise
    rnd.eval()
    y = torch.randn(1000) * 3
    assert torch.equal(rnd(y), torch.round(y))
    family = get_family("noise")
    layer, uniform = family.linear(16, 5, bits=2), get_family("uniform").linear(16, 5, bits=2)
    layer.quant_weight(), uniform.quant_weight()  # the scales start from the weights' statistics
    uniform.load_state_dict({k: v for k, v in layer.state_dict().items() if k in uniform.state_dict()})
    layer.eval(), uniform.eval()
    x = torch.randn(7, 16)
    assert torch.equal(layer(x), uniform(x))  # the deployed quantizer is uniform's


def test_gradient_scale_is_learned_receives_the_task_gradient_and_moves_under_a_step():
    rnd = _round(noise_std=0.0)
    y = torch.tensor([0.2, 1.7, -0.6], requires_grad=True)
    weights = torch.tensor([1.0, -2.0, 3.0])
    (rnd(y) * weights).sum().backward()
    g = float(rnd.grad_scale())
    assert g == 1.0  # starts as the straight-through estimator
    # d/dy = g * upstream, and d/d(log g) = g * sum(upstream * y)
    assert torch.allclose(y.grad, g * weights)
    assert float(rnd.log_grad_scale.grad) == pytest.approx(g * float((weights * y.detach()).sum()))
    assert rnd.log_grad_scale.hwq_lr_scale == 0.1
    optimizer = torch.optim.SGD([rnd.log_grad_scale], lr=0.1)
    optimizer.step()
    assert float(rnd.grad_scale()) != 1.0
    with torch.no_grad():
        rnd.log_grad_scale.fill_(math.log(2.0))
    y.grad = None
    (rnd(y) * weights).sum().backward()
    assert torch.allclose(y.grad, 2.0 * weights)
    fixed = _round(noise_grad_scale=False)
    assert not fixed.log_grad_scale.requires_grad


def test_progress_reaches_the_quantizers_through_the_step_hook():
    from hwq.train.hooks import ModelHooks

    family = get_family("noise", {"noise_decay": 2.0})
    model = torch.nn.Sequential(family.linear(4, 3, bits=4), family.act(4, channels=3))
    hooks = ModelHooks(model)
    assert "hwq_on_step" in hooks.names()
    hooks("hwq_on_step", 0.5)
    assert [r.noise_std() for r in _rounds(model)] == pytest.approx([math.exp(-1.0)] * 2)


def test_digits_tfc_w2a2_with_method_noise_records_its_options_exports_and_builds_bit_exactly(tmp_path):
    from hwq.dataflow import BuildConfig, run_build
    from hwq.export import run_export
    from hwq.train import TrainConfig, run_train

    config = TrainConfig(method="noise", wbits=2, abits=2, epochs=2, lr=0.01, threads=1,
                         model_options={"noise_decay": 3.0})
    run = tmp_path / "noise"
    metrics = run_train(config, run, progress=False)
    assert metrics["config"]["method"] == "noise" and metrics["config"]["quant"] == "noise"
    assert metrics["model_spec"]["options"] == {"noise_std": 1.0, "noise_decay": 3.0, "noise_grad_scale": True,
                                                "noise_grad_scale_lr_scale": 0.1}
    assert "noise_decay: 3.0" in (run / "config.yaml").read_text()
    assert metrics["test_acc"] > 0.5
    scales = {k: v for k, v in torch.load(run / "model.pt").items() if k.endswith("log_grad_scale")}
    assert len(scales) == 7 and all(float(v) != 0.0 for v in scales.values())  # 4 weight, 3 activation quantizers
    assert run_export(run)["verification"]["passed"]
    manifest = run_build(run, BuildConfig(board="pynq-z2", verify_samples=10), progress=False)
    assert manifest["status"] == "done" and manifest["bit_exact"]["passed"]
