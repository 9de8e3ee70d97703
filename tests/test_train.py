# SPDX-License-Identifier: BSD-3-Clause
"""Training: accuracy on digits, determinism, resume, safe checkpoints, configs and the CLI."""

from __future__ import annotations

import json

import pytest
import torch

from hwq.cli import main
from hwq.errors import CheckpointError, ConfigError
from hwq.train import TrainConfig, load_trained_model, run_train
from hwq.train.checkpoint import load_checkpoint
from hwq.train.loop import distillation_loss


def test_tfc_w1a1_learns_digits(digits_tfc_w1a1):
    metrics = json.loads((digits_tfc_w1a1 / "metrics.json").read_text())
    assert metrics["test_acc"] >= 0.85
    assert 0.0 <= metrics["test_acc"] <= 1.0
    assert metrics["epochs"] == 20 and metrics["complete"] is True
    assert metrics["config"]["wbits"] == 1 and metrics["config"]["model"] == "tfc"
    assert len(metrics["history"]) == 20
    # the accuracy in the file is the accuracy of the saved weights
    model, config, _ = load_trained_model(digits_tfc_w1a1)
    from hwq.data import load_dataset
    from hwq.train import evaluate

    ds = load_dataset("digits")
    assert evaluate(model, ds.test_x, ds.test_y) == pytest.approx(metrics["test_acc"])


def test_binary_latent_weights_stay_clipped(digits_tfc_w1a1):
    model, _, _ = load_trained_model(digits_tfc_w1a1)
    for layer in model.modules():
        if getattr(layer, "latent_clip", None):
            assert float(layer.weight.abs().max()) <= 1.0


def _weights(run_dir) -> dict[str, torch.Tensor]:
    return load_checkpoint(run_dir / "model.pt")


def test_training_is_deterministic_on_cpu(tmp_path):
    config = TrainConfig(epochs=2, wbits=2, abits=2)
    run_train(config, tmp_path / "a", progress=False)
    run_train(config, tmp_path / "b", progress=False)
    a, b = _weights(tmp_path / "a"), _weights(tmp_path / "b")
    assert all(torch.equal(a[k], b[k]) for k in a)
    c = TrainConfig(epochs=2, wbits=2, abits=2, seed=1)
    run_train(c, tmp_path / "c", progress=False)
    assert not all(torch.equal(a[k], _weights(tmp_path / "c")[k]) for k in a)


@pytest.mark.parametrize("bits", [1, 2])
def test_resume_equals_an_uninterrupted_run(tmp_path, train_then_stop, bits):
    """W2A2 too: Brevitas replaces its learned scales' Parameter objects when a state dict is loaded, so the
    optimizer must be made after the checkpoint's weights are in (before the fix the resumed scales froze)."""
    config = TrainConfig(epochs=3, wbits=bits, abits=bits, threads=1)
    run_train(config, tmp_path / "straight", progress=False)
    interrupted = tmp_path / "interrupted"
    train_then_stop(interrupted, config, stop_after=1)
    assert load_checkpoint(interrupted / "checkpoint.pt")["epoch"] == 1
    run_train(config, interrupted, resume=True, progress=False)
    straight, resumed = _weights(tmp_path / "straight"), _weights(interrupted)
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)
    history = json.loads((interrupted / "metrics.json").read_text())["history"]
    assert [h["epoch"] for h in history] == [1, 2, 3]
    assert "# resume" in (interrupted / "train.log").read_text()


def test_existing_run_is_not_overwritten(tmp_path):
    run_train(TrainConfig(epochs=1), tmp_path, progress=False)
    before = (tmp_path / "model.pt").read_bytes()
    with pytest.raises(CheckpointError, match="already holds a training run; pass --resume .* or --overwrite"):
        run_train(TrainConfig(epochs=1, seed=5), tmp_path, progress=False)
    assert (tmp_path / "model.pt").read_bytes() == before


def test_corrupt_checkpoint_is_a_clear_error(tmp_path, digits_tfc_w1a1):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(digits_tfc_w1a1, run)
    (run / "model.pt").write_bytes(b"\x00garbage" * 10)
    with pytest.raises(CheckpointError, match=r"model\.pt: not a readable hwq checkpoint"):
        load_trained_model(run)
    truncated = (digits_tfc_w1a1 / "model.pt").read_bytes()[:200]
    (run / "model.pt").write_bytes(truncated)
    with pytest.raises(CheckpointError, match=r"model\.pt: not a readable hwq checkpoint"):
        load_trained_model(run)


def test_checkpoint_with_code_is_refused(tmp_path):
    # weights_only loading: a pickle that would construct an arbitrary object is rejected, not executed
    torch.save({"model": torch.nn.Linear(2, 2)}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match=r"evil\.pt: not a readable hwq checkpoint"):
        load_checkpoint(tmp_path / "evil.pt")


def test_config_yaml_round_trip_and_errors(tmp_path):
    config = TrainConfig(model="sfc", wbits=2, abits=2, epochs=7, lr=0.01)
    path = tmp_path / "c.yaml"
    path.write_text(config.to_yaml())
    assert TrainConfig.from_yaml(path) == config
    path.write_text("train:\n  model: lfc\n  epochs: 3\n")
    assert TrainConfig.from_yaml(path).model == "lfc"
    path.write_text("modle: tfc\n")
    with pytest.raises(ConfigError, match=r"c\.yaml: unknown field\(s\) modle"):
        TrainConfig.from_yaml(path)
    with pytest.raises(ConfigError, match="schedule: 'step' is not one of cosine, constant, linear"):
        TrainConfig(schedule="step")
    with pytest.raises(ConfigError, match="epochs: expected an integer"):
        TrainConfig(epochs="3")


def test_train_subset_trains_on_fewer_images_and_is_recorded(tmp_path):
    metrics = run_train(TrainConfig(epochs=1, train_subset=300), tmp_path / "sub", progress=False)
    assert metrics["dataset"]["n_train"] == 300 and metrics["dataset"]["n_test"] == 360
    assert TrainConfig.from_yaml(tmp_path / "sub" / "config.yaml").train_subset == 300
    for bad in (0, 2.5, True):
        with pytest.raises(ConfigError, match="train_subset: expected a positive integer or null"):
            TrainConfig(train_subset=bad)


def test_test_subset_scores_on_fewer_images_and_is_recorded(tmp_path):
    metrics = run_train(TrainConfig(epochs=1, train_subset=200, test_subset=100), tmp_path / "sub", progress=False)
    assert metrics["dataset"]["n_test"] == 100 and metrics["dataset"]["n_train"] == 200
    # an accuracy on 100 images is a multiple of 1 %
    assert abs(metrics["test_acc"] * 100 - round(metrics["test_acc"] * 100)) < 1e-9
    assert TrainConfig.from_yaml(tmp_path / "sub" / "config.yaml").test_subset == 100
    for bad in (0, 2.5, True):
        with pytest.raises(ConfigError, match="test_subset: expected a positive integer or null"):
            TrainConfig(test_subset=bad)


def test_train_help_names_every_registered_model_and_family():
    from hwq.cli import build_parser
    from hwq.models.registry import MODELS
    from hwq.quant import FAMILIES

    train = build_parser()._subparsers._group_actions[0].choices["train"]
    helps = {a.dest: a.help.split(" (default: ")[0] for a in train._actions}
    assert set(helps["model"].split(", ")) == set(MODELS)
    assert set(helps["quant"].split(": ")[1].split(", ")) == set(FAMILIES)


def test_distillation_loss():
    logits = torch.tensor([[2.0, 0.5, -1.0], [0.0, 1.0, 0.0]])
    assert float(distillation_loss(logits, logits, 2.0)) == pytest.approx(0.0, abs=1e-6)
    student = logits.clone().requires_grad_(True)
    teacher = torch.tensor([[0.0, 3.0, 0.0], [0.0, 1.0, 0.0]])
    loss = distillation_loss(student, teacher, 1.0)
    assert float(loss) > 0
    loss.backward()
    # gradient descent moves the first student row's mass towards the teacher's class 1
    assert student.grad[0, 1] < 0 < student.grad[0, 0]


def test_cli_train_and_errors(tmp_path, capsys):
    out = tmp_path / "cli"
    assert main(["train", "--epochs", "1", "--out", str(out), "--no-progress"]) == 0
    assert "test accuracy" in capsys.readouterr().out
    assert (out / "metrics.json").is_file() and (out / "config.yaml").is_file()
    cfg = tmp_path / "c.yaml"
    cfg.write_text("model: tfc\nwbits: 2\nabits: 2\nepochs: 1\n")
    assert main(["train", "--config", str(cfg), "--abits", "3", "--out", str(tmp_path / "y"), "--no-progress"]) == 0
    assert TrainConfig.from_yaml(tmp_path / "y" / "config.yaml").abits == 3
    for argv, message in [
        (["train", "--model", "nope", "--out", str(tmp_path / "x")], "unknown model 'nope'"),
        (["train", "--wbits", "9", "--out", str(tmp_path / "x")], "--wbits 9 is not supported"),
        (["train", "--dataset", "mnist", "--data-dir", str(tmp_path / "none"), "--out", str(tmp_path / "x")],
         "none/mnist: data folder for mnist not found"),
        (["export", str(tmp_path / "missing")], "missing: run directory not found"),
    ]:
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1


def test_hooks_are_found_once_and_clip_the_latent_weights():
    from hwq.models import ModelSpec, build_model
    from hwq.train.hooks import ModelHooks

    plain = build_model(ModelSpec("tfc", 1, 1, image_shape=(1, 8, 8)))
    hooks = ModelHooks(plain)
    assert hooks.names() == []                              # nothing to call per step
    with torch.no_grad():
        for p in plain.parameters():
            p.mul_(10.0)
    hooks.clip_latent_weights()
    binary = [m for m in plain.modules() if getattr(m, "latent_clip", None) is not None]
    assert binary and all(float(m.weight.abs().max()) <= m.latent_clip for m in binary)
    bitat = ModelHooks(build_model(ModelSpec("tfc", 1, 1, quant="bitat", image_shape=(1, 8, 8),
                                             options={"bitat_aggregate": False})))
    assert set(bitat.names()) == {"hwq_on_epoch_start", "hwq_on_step", "hwq_extra_loss", "hwq_after_step"}
