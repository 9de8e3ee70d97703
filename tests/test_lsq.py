# SPDX-License-Identifier: BSD-3-Clause
"""``--method lsq``: LSQ's step-size init and gradient scale on hand-made tensors, and a digits run's export."""

import math

import pytest
import torch

from hwq.quant import get_family
from hwq.quant.lsq import LsqStepScaling


def _steps(module):
    return [m for m in module.modules() if isinstance(m, LsqStepScaling)]


def test_weight_step_starts_at_twice_mean_abs_over_sqrt_qp():
    torch.manual_seed(0)
    layer = get_family("lsq").linear(16, 4, bits=3)  # Qp = 3 (narrow signed 3-bit grid)
    with torch.no_grad():
        layer.weight.copy_(torch.arange(64, dtype=torch.float32).reshape(4, 16) / 64 - 0.5)
    scale = layer.quant_weight().scale
    expected = 2 * layer.weight.abs().mean() / math.sqrt(3)
    assert torch.allclose(scale, expected) and _steps(layer)[0].initialised


def test_activation_step_starts_from_the_first_batch_with_qp_of_its_grid():
    act = get_family("lsq").act(2, channels=5)  # signed full-range 2-bit grid: [-2, 1], Qp = 1
    x = torch.tensor([[0.5, -1.0, 2.0, 0.0, -0.5]] * 2)
    act(x)
    (step,) = _steps(act)
    assert step.qp == 1 and torch.allclose(step.value, 2 * x.abs().mean() / math.sqrt(1))
    act(10 * x)  # later batches do not re-initialise
    assert torch.allclose(step.value, 2 * x.abs().mean())


@pytest.mark.parametrize("bits,qp", [(2, 1), (4, 7)])
def test_step_gradient_is_the_unscaled_gradient_times_g(bits, qp):
    """g = 1 / sqrt(N * Qp), N = the layer's weight count: compare with the same step without the scale."""
    torch.manual_seed(1)
    layer = get_family("lsq").linear(12, 5, bits=bits)
    x = torch.randn(7, 12)
    layer(x).square().sum().backward()
    (step,) = _steps(layer)
    scaled_grad = step.value.grad.clone()

    unscaled = step.value.detach().clone().requires_grad_(True)  # the same quantizer, gradient unscaled
    w = layer.weight.detach()
    q = w / unscaled
    q = torch.clamp(q + (torch.round(q) - q).detach(), -qp, qp)  # Brevitas' order: round (STE), then clip
    (x @ (q * unscaled).t()).square().sum().backward()
    g = 1 / math.sqrt(w.numel() * qp)
    assert torch.allclose(scaled_grad, unscaled.grad * g, rtol=1e-5, atol=1e-8)
    assert unscaled.grad.abs() > 0


def test_a_step_pushed_below_zero_quantizes_with_its_magnitude():
    """The scale is |value| (floored): a raw step Adam pushed negative would flip the integer scores' sign."""
    layer = get_family("lsq").linear(8, 3, bits=2)
    layer.quant_weight()
    (step,) = _steps(layer)
    with torch.no_grad():
        step.value.fill_(0.25)
    positive = layer.quant_weight()
    with torch.no_grad():
        step.value.fill_(-0.25)
    negative = layer.quant_weight()
    assert torch.equal(negative.scale, positive.scale) and torch.equal(negative.value, positive.value)
    with torch.no_grad():
        step.value.zero_()
    assert float(layer.quant_weight().scale) > 0 and torch.isfinite(layer.quant_weight().value).all()


def test_loaded_model_keeps_its_learned_step():
    family = get_family("lsq")
    layer = family.linear(8, 3, bits=2)
    layer.quant_weight()
    with torch.no_grad():
        _steps(layer)[0].value.fill_(0.123)
    fresh = family.linear(8, 3, bits=2)
    fresh.load_state_dict(layer.state_dict())
    assert torch.allclose(fresh.quant_weight().scale, torch.tensor(0.123))


def test_digits_tfc_w2a2_with_method_lsq_exports_bit_exactly(tmp_path):
    from hwq.export import run_export
    from hwq.train import TrainConfig, run_train

    config = TrainConfig(method="lsq", wbits=2, abits=2, epochs=2, lr=0.01, threads=1)
    run = tmp_path / "lsq"
    metrics = run_train(config, run, progress=False)
    assert metrics["config"]["method"] == "lsq" and metrics["config"]["quant"] == "lsq"
    assert "method: lsq" in (run / "config.yaml").read_text()
    assert metrics["test_acc"] > 0.5
    assert run_export(run)["verification"]["passed"]
