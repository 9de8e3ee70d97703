# SPDX-License-Identifier: BSD-3-Clause
"""``--method saq`` and ``--method hero``: the sam and hero objectives on hand-made models and losses."""

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from hwq.quant import get_family
from hwq.quant.ptq import quantize_weights, round_to_nearest
from hwq.train import TrainConfig, objectives
from hwq.train.objectives import make_objective

RHO = 0.3


def _quantized_model():
    """Two 2-bit uniform layers with a normalisation and a learned-scale activation quantizer between them."""
    torch.manual_seed(3)
    family = get_family("uniform")
    return nn.Sequential(family.linear(6, 5, bits=2), nn.BatchNorm1d(5), family.act(2, 5), family.linear(5, 3, bits=2))


def _batch():
    generator = torch.Generator().manual_seed(4)
    return torch.randn(8, 6, generator=generator), torch.randint(0, 3, (8,), generator=generator)


def _run(model, name, options):
    """One call of the objective ``name`` on ``model``; returns it and the perturbation it applied."""
    x, y = _batch()

    def closure():
        logits = model(x)
        return F.cross_entropy(logits, y), logits

    objective = make_objective(name, options)
    objective.attach(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    objective.gradients(closure, optimizer)
    return objective


@pytest.fixture
def seen_eps(monkeypatch):
    """The perturbations the objectives hand to :func:`hwq.train.perturb.perturbed`."""
    seen = []
    original = objectives.perturbed

    def spy(eps, layers):
        seen.append(eps)
        return original(eps, layers)

    monkeypatch.setattr(objectives, "perturbed", spy)
    return seen


@pytest.mark.parametrize("point", ["quantized", "latent"])
def test_sam_perturbation_has_norm_rho_over_the_perturbed_tensors(seen_eps, point):
    model = _quantized_model()
    _run(model, "sam", {"rho": RHO, "sam_point": point})
    (eps,) = seen_eps
    norm = math.sqrt(sum(float(e.square().sum()) for e in eps.values()))
    assert norm == pytest.approx(RHO, rel=1e-5)
    first, bn, act, last = model
    weight_scales = {p for m in (first, last) for p in m.weight_quant.parameters()}
    params = {t for t in eps if isinstance(t, nn.Parameter)}
    if point == "quantized":  # SAQ: Q(w) + eps for the layers, BN and the activation scale themselves
        assert {t for t in eps if not isinstance(t, nn.Parameter)} == {first, last}
        assert params == {bn.weight, bn.bias, *act.parameters()} and not params & weight_scales
        assert eps[first].shape == first.weight.shape
    else:  # every trained parameter itself
        assert params == set(model.parameters())


@pytest.mark.parametrize("name,options", [("sam", {"rho": RHO, "sam_point": "quantized"}),
                                          ("sam", {"rho": RHO, "sam_point": "latent"}),
                                          ("hero", {"rho": RHO, "hero_lambda": 2.0})])
def test_weights_are_restored_bit_exactly(name, options):
    model = _quantized_model()
    model(_batch()[0])  # Brevitas sets the weight scales from their statistics in the first training pass
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    _run(model, name, options)
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())
    assert all(p.grad is not None for p in model.parameters())


def _manual_forward(model, q_first, q_last, x):
    first, bn, act, last = model
    return F.linear(act(bn(F.linear(x, q_first))), q_last)


def test_saq_gradient_is_the_gradient_at_q_of_w_plus_eps():
    """By hand: eps from the gradients of Q(w), BN and the activation scale; then the gradient of
    L(Q(w) + eps) with BN and the activation scale moved by theirs."""
    model = _quantized_model()
    manual = copy.deepcopy(model)
    _run(model, "sam", {"rho": RHO, "sam_point": "quantized"})

    x, y = _batch()
    first, bn, act, last = manual
    q_first, q_last = first.quant_weight().value, last.quant_weight().value
    q_first.retain_grad(), q_last.retain_grad()
    F.cross_entropy(_manual_forward(manual, q_first, q_last, x), y).backward()
    direct = [bn.weight, bn.bias, *act.parameters()]
    grads = [q_first.grad, q_last.grad] + [p.grad for p in direct]
    scale = RHO / torch.sqrt(sum(g.square().sum() for g in grads))
    manual.zero_grad(set_to_none=True)
    with torch.no_grad():
        for p, g in zip(direct, grads[2:]):
            p.add_(g * scale)
    q_first, q_last = first.quant_weight().value, last.quant_weight().value
    loss = F.cross_entropy(_manual_forward(manual, q_first + grads[0] * scale, q_last + grads[1] * scale, x), y)
    loss.backward()
    for (name, got), want in zip(model.named_parameters(), manual.parameters()):
        assert torch.allclose(got.grad, want.grad, rtol=1e-5, atol=1e-7), name
    assert float(first.weight.grad.abs().sum()) > 0


# --- HERO on a hand-made loss: L(w) = 1/2 w^T A w + b^T w + c * sum(w^4) ---------------------------------------
class Loss(nn.Module):
    def __init__(self, quartic: float):
        super().__init__()
        generator = torch.Generator().manual_seed(5)
        m = torch.randn(6, 6, generator=generator, dtype=torch.float64)
        self.register_buffer("a", m @ m.T + torch.eye(6, dtype=torch.float64))  # a known Hessian (quartic = 0)
        self.register_buffer("b", torch.randn(6, generator=generator, dtype=torch.float64))
        self.w = nn.Parameter(torch.randn(2, 3, generator=generator, dtype=torch.float64))
        self.quartic = quartic

    def forward(self, w=None):
        v = (self.w if w is None else w).reshape(-1)
        return 0.5 * v @ self.a @ v + self.b @ v + self.quartic * v.pow(4).sum()

    def grad(self, w):
        w = w.detach().clone().requires_grad_(True)
        return torch.autograd.grad(self(w), w, create_graph=True)[0]


def _hero(loss_model, lam):
    def closure():
        value = loss_model()
        return value, value.reshape(1, 1)

    objective = make_objective("hero", {"rho": RHO, "hero_lambda": lam})
    objective.attach(loss_model)
    objective.gradients(closure, torch.optim.SGD(loss_model.parameters(), lr=0.1))
    return loss_model.w.grad


def test_hero_gradient_matches_the_formula_on_a_quadratic():
    """grad = A w' + b + (2 lambda / n) A (A w' + b - g0), w' = w + rho g0 / ||g0||, g0 = A w + b: the penalty's
    gradient is (2 lambda / n) A^2 delta, so the top eigen-directions of the Hessian A are pushed hardest."""
    model, lam = Loss(quartic=0.0), 0.7
    w = model.w.detach().reshape(-1).clone()
    got = _hero(model, lam).reshape(-1)
    a, b, n = model.a, model.b, w.numel()
    g0 = a @ w + b
    delta = RHO * g0 / g0.norm()
    want = a @ (w + delta) + b + 2 * lam / n * a @ (a @ delta)
    assert torch.allclose(got, want, rtol=1e-10, atol=1e-12)
    assert torch.equal(model.w.detach().reshape(-1), w)  # restored


def test_hero_penalty_gradient_equals_a_finite_difference():
    """Non-quadratic loss (the Hessian changes with w): grad - grad L(w') is the gradient of
    R(v) = lambda * mean((grad L(v) - g0)^2) at v = w', checked by central differences."""
    model, lam = Loss(quartic=0.3), 1.5
    w = model.w.detach().clone()
    got = _hero(model, lam)
    g0 = model.grad(w).detach()
    w_eps = w + RHO * g0 / g0.norm()
    penalty_grad = got - model.grad(w_eps).detach()

    def penalty(v):
        return lam * (model.grad(v) - g0).square().mean()

    h = 1e-6
    numeric = torch.zeros_like(w)
    for i in range(w.numel()):
        step = torch.zeros_like(w).reshape(-1)
        step[i] = h
        step = step.reshape(w.shape)
        numeric.reshape(-1)[i] = (penalty(w_eps + step) - penalty(w_eps - step)) / (2 * h)
    assert torch.allclose(penalty_grad, numeric, rtol=1e-6, atol=1e-9)
    assert float(penalty_grad.abs().max()) > 1e-3


# --- the methods' configuration -------------------------------------------------------------------------------
def test_hero_defaults_to_float_and_takes_any_quant_saq_uniform():
    assert (TrainConfig(method="hero").quant, TrainConfig(method="saq").quant) == ("float", "uniform")
    config = TrainConfig(method="hero", quant="uniform", wbits=2, abits=2, method_options={"hero_lambda": 2})
    assert (config.method, config.quant) == ("hero", "uniform")
    assert config.replace(quant="lsq").method == "hero"  # a new family alone keeps an objective-only method
    assert TrainConfig(method="saq", quant="lsq", wbits=2, abits=2).method == "saq"


def test_ptq_rounds_each_weight_tensor_to_the_nearest_level():
    w = torch.tensor([[0.7, -0.2, 0.05], [0.35, -0.7, 0.0]])
    q = round_to_nearest(w, bits=3)  # levels -3..3, step 0.7 / 3
    step = 0.7 / 3
    assert torch.allclose(q, torch.round(w / step) * step)
    assert len(set(round(float(v) / step) for v in q.reshape(-1))) <= 7
    model = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    rounded = quantize_weights(model, 2)
    assert torch.equal(rounded[0].bias, model[0].bias) and torch.equal(rounded[1].weight, model[1].weight)
    assert torch.equal(rounded[0].weight, round_to_nearest(model[0].weight.detach(), 2))


class Hyperbola(nn.Module):
    """L(w) = (w1 * w2 - 1)^2: every point of the hyperbola w1 w2 = 1 is a minimum; the Hessian's top eigenvalue
    there, 2 (w1^2 + w2^2), is smallest (4) at w1 = w2 = 1."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.tensor([[3.0, 0.4]], dtype=torch.float64))

    def forward(self, w=None):
        w = self.w if w is None else w.reshape(1, 2)
        return (w[0, 0] * w[0, 1] - 1) ** 2


def _descend(name, options, steps=1500):
    model = Hyperbola()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.02)
    objective = make_objective(name, options)
    objective.attach(model)

    def closure():
        value = model()
        return value, value.reshape(1, 1)

    for _ in range(steps):
        objective.gradients(closure, optimizer)
        optimizer.step()
    w = model.w.detach().reshape(-1)
    top = float(torch.linalg.eigvalsh(torch.autograd.functional.hessian(model, w)).max())
    return float(model().detach()), top


def test_hero_descends_to_a_minimum_with_a_smaller_top_hessian_eigenvalue_than_plain_descent():
    plain_loss, plain_top = _descend("plain", {})
    hero_loss, hero_top = _descend("hero", {"rho": 0.05, "hero_lambda": 1.0})
    assert plain_loss < 1e-6 and hero_loss < 1e-4  # both at a minimum
    assert plain_top > 15 and hero_top < 4.1  # plain stays near (3, 1/3); HERO reaches the flattest minimum
