# SPDX-License-Identifier: BSD-3-Clause
"""``--method ssql``: SSQL's loss, its random bit-widths and precision views on hand-made tensors, and a digits TFC
W2A2 (1 pretraining + 1 fine-tuning epoch) that exports and builds bit-exactly without the head."""

import pytest
import torch

from hwq.errors import ConfigError
from hwq.models import ModelSpec, build_model
from hwq.train import TrainConfig
from hwq.train.objectives import SsqlObjective, make_objective
from hwq.train.optimizers import make_optimizer_named
from hwq.train.ssql import fake_quant_weight, precision_view, ssql_loss


def _tfc(wbits=2, abits=2):
    torch.manual_seed(0)
    return build_model(ModelSpec(name="tfc", wbits=wbits, abits=abits, quant="uniform", image_shape=(1, 8, 8),
                                 num_classes=10))


def _attached(config: TrainConfig):
    model = _tfc(config.wbits, config.abits)
    optimizer = make_optimizer_named("adam", model, config.lr, 0.0, config.method_options)
    objective = make_objective("ssql", config.method_options)
    objective.attach(model, config)
    return model, optimizer, objective


def test_loss_is_minus_one_for_identical_views_and_larger_otherwise():
    torch.manual_seed(0)
    z = [torch.randn(8, 16), torch.randn(8, 16)]
    # every prediction equal to the projection of the other view: the minimum, -1
    assert float(ssql_loss([z[1], z[0]], [z[1], z[0]], z)) == pytest.approx(-1.0)
    worse = ssql_loss([z[1], z[0]], [torch.randn(8, 16), torch.randn(8, 16)], z)
    assert -1.0 + 0.1 < float(worse) <= 1.0
    opposite = ssql_loss([-z[1], -z[0]], [-z[1], -z[0]], z)
    assert float(opposite) == pytest.approx(1.0)


def test_loss_gradient_does_not_reach_the_targets():
    p = [torch.randn(4, 6, requires_grad=True) for _ in range(4)]
    z = [torch.randn(4, 6, requires_grad=True) for _ in range(2)]
    ssql_loss(p[:2], p[2:], z).backward()
    assert all(t.grad is None for t in z) and all(q.grad.abs().sum() > 0 for q in p)


def test_random_bit_widths_change_across_steps_within_the_set_and_are_seeded():
    options = {"ssql_wbits": [2, 3, 4], "ssql_abits": [4, 6], "ssql_pretrain_epochs": 1}
    images = torch.rand(20, 1, 8, 8)

    def bits_of(seed):
        config = TrainConfig(method="ssql", wbits=2, abits=2, epochs=2, seed=seed, method_options=options)
        model, optimizer, objective = _attached(config)
        drawn = []
        for step in range(12):
            objective.on_batch(images, torch.zeros(20, dtype=torch.long), (step + 1) / 24)
            objective.gradients(lambda: None, optimizer)
            drawn.append(objective.last_bits)
        return drawn

    drawn = bits_of(0)
    assert {w for w, _ in drawn} <= {2, 3, 4} and {a for _, a in drawn} <= {4, 6}
    assert len(set(drawn)) > 2  # it changes from step to step
    assert bits_of(0) == drawn and bits_of(1) != drawn


def test_precision_views_quantize_weights_and_activations_to_the_drawn_bits():
    model = _tfc().eval()  # no dropout: its zeros would add a level
    layers = [m for m in model.modules() if hasattr(m, "weight_quant")]
    seen = {}
    hook = layers[1].register_forward_pre_hook(lambda m, args: seen.__setitem__("x", args[0].detach().clone()))
    x = torch.rand(16, 1, 8, 8)
    with precision_view(model, (2, 3)):
        model(x)
        w2 = layers[1].quant_weight()
    assert len(torch.unique(w2)) <= 3  # a symmetric 2-bit weight grid: -s, 0, s
    assert len(torch.unique(seen["x"])) <= 2 ** 3  # the layer's input came from a 3-bit activation view
    with precision_view(model, None):
        assert torch.equal(layers[1].quant_weight(), layers[1].weight)  # full precision: the latent weights
        model(x)
    assert len(torch.unique(seen["x"])) > 2 ** 3
    model(x)  # outside a view: the model's own 2-bit quantizers again, no hook left behind
    assert len(torch.unique(seen["x"])) <= 4
    assert len(torch.unique(layers[1].quant_weight().value)) <= 3
    hook.remove()


def test_fake_quant_weight_grid():
    w = torch.tensor([-1.0, -0.4, 0.1, 0.26, 0.5, 1.0], requires_grad=True)
    q = fake_quant_weight(w, 3)  # step 1/3, levels -3..3
    assert torch.allclose(q, torch.tensor([-3.0, -1.0, 0.0, 1.0, 2.0, 3.0]) / 3)
    q.sum().backward()
    assert torch.equal(w.grad, torch.ones(6))  # straight through


def test_pretraining_must_leave_epochs_to_fine_tune():
    with pytest.raises(ConfigError, match=r"^method_options.ssql_pretrain_epochs: expected a fraction"):
        _attached(TrainConfig(method="ssql", wbits=2, abits=2, epochs=3, method_options={"ssql_pretrain_epochs": 3}))
    with pytest.raises(ConfigError, match=r"^method_options.ssql_wbits: expected a list of numbers, each in"):
        TrainConfig(method="ssql", wbits=2, abits=2, method_options={"ssql_wbits": [1, 2]})
    objective = _attached(TrainConfig(method="ssql", wbits=2, abits=2, epochs=10))[2]
    assert isinstance(objective, SsqlObjective)
    assert objective.pretraining(0.3) and not objective.pretraining(0.31)


def test_digits_tfc_w2a2_with_method_ssql_exports_and_builds_bit_exactly_without_the_head(tmp_path):
    from hwq.dataflow import BuildConfig, run_build
    from hwq.export import run_export
    from hwq.train import run_train

    run = tmp_path / "ssql"
    config = TrainConfig(method="ssql", wbits=2, abits=2, epochs=2, lr=0.01, threads=1,
                         method_options={"ssql_pretrain_epochs": 1})
    metrics = run_train(config, run, progress=False)
    assert metrics["config"]["method"] == "ssql" and metrics["config"]["quant"] == "uniform"
    assert metrics["history"][0]["loss"] < 0 < metrics["history"][1]["loss"]  # SimSiam's loss, then cross-entropy
    assert metrics["test_acc"] > 0.5
    weights = torch.load(run / "model.pt", weights_only=True)
    fresh = _tfc()
    fresh(torch.rand(2, 1, 8, 8))  # Brevitas adds the learned weight scales at the first forward pass
    assert set(weights) == set(fresh.state_dict())  # no head in the deployed model
    export = run_export(run)
    assert export["verification"]["passed"]
    manifest = run_build(run, BuildConfig(board="pynq-z2", out_dir=str(tmp_path / "build"), verify_samples=20),
                         progress=False)
    assert manifest["status"] == "done"
    assert manifest["bit_exact"]["passed"] and manifest["bit_exact"]["n"] == 20
    assert manifest["integer_range"]["passed"]


def test_a_run_resumed_after_pretraining_equals_an_uninterrupted_one(tmp_path, train_then_stop):
    """Stopped after the pretraining epoch (the head is not needed after it): the same bits as a straight run.
    W1A1, as tests/test_methods_build.py explains (a uniform W2A2 run does not resume bit-exactly)."""
    from hwq.train import run_train
    from hwq.train.checkpoint import load_checkpoint

    config = TrainConfig(method="ssql", wbits=1, abits=1, epochs=2, threads=1, train_subset=300,
                         method_options={"ssql_pretrain_epochs": 1})
    run_train(config, tmp_path / "straight", progress=False)
    train_then_stop(tmp_path / "resumed", config, stop_after=1)
    run_train(config, tmp_path / "resumed", resume=True, progress=False)
    straight, resumed = (load_checkpoint(tmp_path / name / "model.pt") for name in ("straight", "resumed"))
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)
