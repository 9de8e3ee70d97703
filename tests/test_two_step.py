# SPDX-License-Identifier: BSD-3-Clause
"""The two-step binary training recipe (``--recipe two-step``): the switch, weight decay and schedule per step,
distillation, the mean-|w| weight scale folding away at export and in FINN, and resume across the switch."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from hwq.errors import ConfigError
from hwq.models import ModelSpec, build_model
from hwq.train import TrainConfig, run_train
from hwq.train import loop
from hwq.train.checkpoint import load_checkpoint
from hwq.train.config import Recipe, Schedule
from hwq.train.recipe import TwoStepPlan, binary_weight_proxies

#: Few epochs, one thread: the same bits on every machine, a few seconds each.
QUICK = dict(model="tfc", dataset="digits", epochs=4, threads=1, recipe="two-step")


def _weights(run):
    return load_checkpoint(run / "model.pt")


def _quant_layers(model):
    return [m for m in model.modules() if hasattr(m, "weight_quant") and hasattr(m, "quant_weight")]


# --- the plan and the switch -----------------------------------------------------------------------------------
def test_the_switch_turns_binary_weights_on_at_the_first_epoch_of_step_2():
    model = build_model(ModelSpec("tfc", 1, 1, image_shape=(1, 8, 8), options={"weight_scale": "mean_abs"}))
    optimizer = torch.optim.Adam(model.parameters())
    plan = TwoStepPlan(step1_epochs=3, epochs=5, weight_decay=(1e-5, 0.0))
    layers = _quant_layers(model)
    assert len(binary_weight_proxies(model)) == len(layers) == 4
    x = torch.rand(5, 64)
    for epoch in range(5):
        plan.start_epoch(model, optimizer, epoch)
        real = epoch < 3
        assert [p.is_quant_enabled for p in binary_weight_proxies(model)] == [not real] * 4
        first = layers[0]
        weight = first.quant_weight()
        weight = getattr(weight, "value", weight)
        if real:  # the float latent weights act as they are
            assert torch.equal(weight, first.weight)
            assert torch.allclose(first(x), F.linear(x, first.weight))
        else:     # sign(w) times mean |w| of each output channel
            scale = first.weight.detach().abs().mean(dim=1, keepdim=True)
            assert torch.allclose(weight, torch.sign(first.weight.detach()) * scale)
            assert len(torch.unique(weight[0].abs())) == 1


def test_a_k_bit_layer_stays_quantized_in_step_1():
    model = build_model(ModelSpec("tfc", 2, 1, image_shape=(1, 8, 8)))
    assert binary_weight_proxies(model) == []  # 2-bit weights are not the recipe's to turn off


def test_the_classifier_keeps_one_scale_and_hidden_layers_one_per_channel():
    model = build_model(ModelSpec("tfc", 1, 1, image_shape=(1, 8, 8), options={"weight_scale": "mean_abs"}))
    scales = [tuple(layer.quant_weight().scale.shape) for layer in _quant_layers(model)]
    assert scales == [(64, 1), (64, 1), (64, 1), (1,)]
    const = build_model(ModelSpec("tfc", 1, 1, image_shape=(1, 8, 8)))
    assert all(float(layer.quant_weight().scale) == 1.0 for layer in _quant_layers(const))


def test_linear_schedule_values():
    plain = TrainConfig(epochs=4, schedule="linear")
    assert [loop.lr_factor(plain, e) for e in range(4)] == [1.0, 0.75, 0.5, 0.25]
    two = TrainConfig(epochs=5, recipe="two-step", step1_epochs=2)
    assert two.schedule_used() is Schedule.LINEAR and TrainConfig().schedule_used() is Schedule.COSINE
    plan = TwoStepPlan.for_run(two)
    assert [loop.lr_factor(two, e, plan) for e in range(5)] == pytest.approx([1.0, 0.5, 1.0, 2 / 3, 1 / 3])
    cosine = TrainConfig(epochs=4, recipe="two-step", schedule="cosine")
    assert [loop.lr_factor(cosine, e, TwoStepPlan.for_run(cosine)) for e in range(4)] == pytest.approx(
        [1.0, 0.5, 1.0, 0.5])


# --- a run -----------------------------------------------------------------------------------------------------
def test_a_run_switches_at_the_boundary_with_each_steps_weight_decay_and_records_it(tmp_path, monkeypatch):
    seen = []  # (epoch's evaluation) -> are the binary weights on?
    evaluate = loop.evaluate

    def spy(model, *args, **kwargs):
        seen.append([p.is_quant_enabled for p in binary_weight_proxies(model)])
        return evaluate(model, *args, **kwargs)

    monkeypatch.setattr(loop, "evaluate", spy)
    metrics = run_train(TrainConfig(**{**QUICK, "epochs": 5}, step1_epochs=2, lr=0.01), tmp_path / "run",
                        progress=False)
    assert seen == [[False] * 4] * 2 + [[True] * 4] * 3
    history = metrics["history"]
    assert [h["step"] for h in history] == [1, 1, 2, 2, 2]
    assert [h["weight_decay"] for h in history] == [1e-5, 1e-5, 0.0, 0.0, 0.0]
    assert [h["lr"] for h in history] == pytest.approx([0.01, 0.005, 0.01, 0.01 * 2 / 3, 0.01 / 3])
    assert metrics["recipe"] == {"name": "two-step", "step1_epochs": 2, "steps": [
        {"step": 1, "epochs": [1, 2], "weights": "real", "weight_decay": 1e-5},
        {"step": 2, "epochs": [3, 5], "weights": "binary", "weight_decay": 0.0}]}
    saved = TrainConfig.from_yaml(tmp_path / "run" / "config.yaml")
    assert saved.recipe is Recipe.TWO_STEP and saved.schedule is Schedule.LINEAR
    assert saved.model_options == {"weight_scale": "mean_abs"}
    assert load_checkpoint(tmp_path / "run" / "checkpoint.pt")["recipe"]["step"] == 2


def test_distillation_from_a_teacher_is_the_loss_of_every_step(tmp_path, monkeypatch):
    teacher = tmp_path / "fp"
    run_train(TrainConfig(model="tfc", dataset="digits", quant="float", epochs=2, threads=1), teacher,
              progress=False)
    calls = []
    distill = loop.distillation_loss

    def counting(student, teacher_logits, temperature):
        calls.append(tuple(student.shape))
        assert not teacher_logits.requires_grad
        return distill(student, teacher_logits, temperature)

    monkeypatch.setattr(loop, "distillation_loss", counting)
    with_teacher = run_train(TrainConfig(**QUICK, teacher=str(teacher)), tmp_path / "kd", progress=False)
    steps_per_epoch = -(-with_teacher["dataset"]["n_train"] // 100)
    assert len(calls) == 4 * steps_per_epoch
    run_train(TrainConfig(**QUICK), tmp_path / "labels", progress=False)
    assert len(calls) == 4 * steps_per_epoch  # no teacher: no distillation term
    a, b = _weights(tmp_path / "kd"), _weights(tmp_path / "labels")
    assert not all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("stop_after", [2, 3])  # at the switch (step 1's last epoch), and inside step 2
def test_resume_across_the_switch_equals_an_uninterrupted_run(tmp_path, stop_after, train_then_stop):
    config = TrainConfig(**QUICK)
    run_train(config, tmp_path / "straight", progress=False)
    interrupted = tmp_path / "interrupted"
    train_then_stop(interrupted, config, stop_after)
    checkpoint = load_checkpoint(interrupted / "checkpoint.pt")
    assert checkpoint["epoch"] == stop_after and checkpoint["recipe"]["step"] == (1 if stop_after == 2 else 2)
    run_train(config, interrupted, resume=True, progress=False)
    straight, resumed = _weights(tmp_path / "straight"), _weights(interrupted)
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)
    a = json.loads((tmp_path / "straight" / "metrics.json").read_text())["history"]
    b = json.loads((interrupted / "metrics.json").read_text())["history"]
    assert [(h["step"], h["test_acc"], h["loss"]) for h in a] == [(h["step"], h["test_acc"], h["loss"]) for h in b]


def test_a_resume_with_more_epochs_keeps_the_switch(tmp_path):
    run = tmp_path / "run"
    run_train(TrainConfig(**QUICK), run, progress=False)
    metrics = run_train(TrainConfig(**{**QUICK, "epochs": 6}), run, resume=True, progress=False)
    assert metrics["recipe"]["step1_epochs"] == 2 and [h["step"] for h in metrics["history"]] == [1, 1, 2, 2, 2, 2]


@pytest.mark.parametrize("settings, message", [
    (dict(recipe="twostep"), "recipe: 'twostep' is not one of plain, two-step"),
    (dict(recipe="two-step", epochs=1), "epochs: the two-step recipe needs at least 2"),
    (dict(recipe="two-step", epochs=4, step1_epochs=4), r"step1_epochs: expected an integer in \[1, epochs - 1\]"),
    (dict(step1_epochs=2), "step1_epochs: only --recipe two-step has steps"),
    (dict(recipe="two-step", quant="float"), "recipe: two-step switches binary weights on .* --quant float"),
    (dict(recipe="two-step", wbits=2, abits=2), r"recipe: two-step trains binary weights \(--wbits 1\)"),
    (dict(recipe="two-step", weight_decay=1e-4), "weight_decay: the two-step recipe sets it per step"),
    (dict(recipe="two-step", step2_weight_decay=-1.0), "step2_weight_decay: expected >= 0"),
    (dict(model_options={"weight_scale": "max"}), "model_options.weight_scale: expected one of const, mean_abs"),
])
def test_bad_recipe_settings_are_one_line_errors(settings, message):
    with pytest.raises(ConfigError, match=message) as err:
        TrainConfig(**settings)
    assert "\n" not in str(err.value)


def test_cli_trains_with_the_recipe(tmp_path, capsys):
    from hwq.cli import main

    out = tmp_path / "run"
    assert main(["train", "--recipe", "two-step", "--epochs", "3", "--step1-epochs", "1", "--threads", "1",
                 "--out", str(out), "--no-progress"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert [h["step"] for h in metrics["history"]] == [1, 2, 2] and metrics["config"]["schedule"] == "linear"


# --- export and FINN: the per-channel scale folds away ---------------------------------------------------------
def test_a_two_step_tfc_exports_and_builds_bit_exactly(tmp_path):
    """Export verifies and both FINN gates pass; the QONNX graph has the per-channel scales, FINN's none."""
    from qonnx.core.modelwrapper import ModelWrapper

    from hwq.dataflow import BuildConfig, run_build
    from hwq.export import run_export

    run = tmp_path / "run"
    run_train(TrainConfig(**QUICK), run, progress=False)
    run_export(run)
    exported = json.loads((run / "export.json").read_text())
    verification = exported["verification"]
    assert verification["passed"] and verification["argmax_match"] == 1.0 and verification["n"] == 360
    qonnx = ModelWrapper(str(run / "model.onnx"))
    scales = [qonnx.get_initializer(n.input[1]) for n in qonnx.graph.node if n.op_type == "BipolarQuant"]
    per_channel = [s for s in scales if s is not None and s.size > 1]
    assert len(per_channel) == 3 and all(np.all(s > 0) and len(np.unique(s)) > 1 for s in per_channel)
    manifest = run_build(run, BuildConfig(board="pynq-z2", verify_samples=40), progress=False)
    assert manifest["status"] == "done"
    assert manifest["bit_exact"]["passed"] and manifest["bit_exact"]["n"] == 40
    assert manifest["integer_range"]["passed"]
    kinds = [layer["op_type"] for layer in manifest["estimates"]["layers"]]
    assert sum(kind.startswith("MVAU") for kind in kinds) == 4
