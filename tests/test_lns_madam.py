# SPDX-License-Identifier: BSD-3-Clause
"""``--method lns-madam``: Madam's multiplicative update and the LNS grid on hand-made tensors."""

import math

import pytest
import torch
from torch import nn

from hwq.errors import ConfigError
from hwq.train import TrainConfig
from hwq.train.madam import Madam, lns_levels
from hwq.train.optimizers import SplitOptimizer, make_optimizer_named

LR = 0.05


def _weight():
    return nn.Parameter(torch.tensor([[0.5, -0.25, 0.4], [-0.6, 0.3, -0.45]]))


def _step(optimizer, p, grad):
    p.grad = grad.clone()
    optimizer.step()


def test_first_madam_step_scales_each_magnitude_by_exp_minus_or_plus_lr():
    """On the first step the normalised gradient is sign(g) (the bias-corrected second moment is g^2), so
    w <- w * exp(-lr * sign(w) * sign(g)): |w| shrinks by exp(-lr) where g pushes it to zero, else grows."""
    p = _weight()
    w = p.detach().clone()
    g = torch.tensor([[1.0, 2.0, -0.5], [3.0, -1.0, 0.25]])
    _step(Madam([p], lr=LR), p, g)
    factor = torch.exp(-LR * torch.sign(w) * torch.sign(g))
    assert torch.allclose(p.detach(), w * factor, rtol=1e-6, atol=0)
    ratio = (p.detach() / w).reshape(-1).tolist()
    assert all(r == pytest.approx(math.exp(-LR)) or r == pytest.approx(math.exp(LR)) for r in ratio)


def test_later_steps_follow_the_running_second_moment():
    p = _weight()
    w = p.detach().clone()
    optimizer = Madam([p], lr=LR)
    g1, g2 = torch.full_like(w, 2.0), torch.full_like(w, -1.0)
    _step(optimizer, p, g1)
    after_one = p.detach().clone()
    _step(optimizer, p, g2)
    v = (0.999 * 0.001 * g1.square() + 0.001 * g2.square()) / (1 - 0.999 ** 2)
    want = after_one * torch.exp(-LR * torch.sign(w) * g2 / v.sqrt())
    assert torch.allclose(p.detach(), want, rtol=1e-6)


@pytest.mark.parametrize("lns_bits", [None, 3, 8])
def test_signs_never_flip(lns_bits):
    torch.manual_seed(0)
    p = nn.Parameter(torch.randn(40, 30))
    signs = torch.sign(p.detach())
    optimizer = Madam([p], lr=0.5, lns_bits=lns_bits, lns_gamma=2)
    for _ in range(200):
        _step(optimizer, p, torch.randn(40, 30) * 10)
        assert torch.equal(torch.sign(p.detach()), signs)


@pytest.mark.parametrize("bits,gamma", [(4, 2), (8, 8), (2, 1)])
def test_lns_weights_stay_on_the_grid_with_the_configured_bits(bits, gamma):
    torch.manual_seed(1)
    p = nn.Parameter(torch.randn(20, 10) * 0.1)
    optimizer = Madam([p], lr=0.3, lns_bits=bits, lns_gamma=gamma)
    for _ in range(30):
        _step(optimizer, p, torch.randn(20, 10))
        state = optimizer.state[p]
        top, k = state["top"], state["exponent"]
        assert torch.equal(k, k.round()) and int(k.min()) >= 0 and int(k.max()) <= lns_levels(bits)
        grid = torch.sign(p.detach()) * top * torch.exp2(-k / gamma)
        assert torch.equal(p.detach(), grid)
        magnitudes = {float(v) for v in p.detach().abs().reshape(-1)}
        assert len(magnitudes) <= 2 ** (bits - 1)  # one sign bit, bits - 1 of exponent


def test_lns_step_is_the_rounded_madam_step_in_exponent_units():
    """Once on the grid, a step moves the exponent by round(gamma * lr * sign(w) * g* / ln 2): |w| changes by
    exactly 2^(-dk / gamma)."""
    gamma, lr = 4, 0.4
    p = _weight()
    optimizer = Madam([p], lr=lr, lns_bits=6, lns_gamma=gamma)
    _step(optimizer, p, torch.ones(2, 3))  # onto the grid
    k_before, on_grid = optimizer.state[p]["exponent"].clone(), p.detach().clone()
    g = torch.tensor([[1.0, -1.0, 1.0], [-1.0, -1.0, 1.0]])
    _step(optimizer, p, g)
    state = optimizer.state[p]
    v = (0.999 * 0.001 + 0.001) / (1 - 0.999 ** 2)  # g^2 = 1 both steps
    dk = torch.round(gamma * lr * torch.sign(on_grid) * g / math.sqrt(v) / math.log(2))
    want_k = (k_before + dk).clamp(0, lns_levels(6))
    assert torch.equal(state["exponent"], want_k) and bool((dk != 0).all())
    assert torch.allclose(p.detach(), on_grid * torch.exp2(-(want_k - k_before) / gamma), rtol=1e-6, atol=0)


def test_madam_optimizer_splits_weights_from_the_other_parameters():
    model = nn.Sequential(nn.Linear(4, 3, bias=False), nn.BatchNorm1d(3))
    options = {"lns_bits": 8, "lns_gamma": 8, "madam_lr_scale": 10.0}
    optimizer = make_optimizer_named("madam", model, 0.01, 0.0, options)
    assert isinstance(optimizer, SplitOptimizer)
    adam, madam = optimizer.optimizers
    assert [p for g in madam.param_groups for p in g["params"]] == [model[0].weight]
    assert {id(p) for g in adam.param_groups for p in g["params"]} == {id(model[1].weight), id(model[1].bias)}
    assert madam.param_groups[0]["lr"] == pytest.approx(0.1) and adam.param_groups[0]["lr"] == 0.01
    model(torch.randn(5, 4)).sum().backward()
    optimizer.step()
    state = optimizer.state_dict()
    again = make_optimizer_named("madam", model, 0.01, 0.0, options)
    again.load_state_dict(state)
    assert torch.equal(again.optimizers[1].state[model[0].weight]["exponent"],
                       madam.state[model[0].weight]["exponent"])


def test_lns_madam_refuses_binary_weights_and_checks_its_options():
    with pytest.raises(ConfigError, match=r"^wbits: --method lns-madam trains 2 or more weight bits, got 1"):
        TrainConfig(method="lns-madam", wbits=1, abits=1)
    with pytest.raises(ConfigError, match=r"^method_options.lns_bits: expected an integer in \[2, 8\]"):
        TrainConfig(method="lns-madam", wbits=2, abits=2, method_options={"lns_bits": 9})
    assert TrainConfig(method="lns-madam", wbits=2, abits=2).quant == "uniform"
