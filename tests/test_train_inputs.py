# SPDX-License-Identifier: BSD-3-Clause
"""Every input of train and export checked at the edge (one line, exit 2), defaults in --help, progress lines."""

from __future__ import annotations

import dataclasses
import random
import re

import pytest

from hwq.cli import build_parser, main
from hwq.errors import CheckpointError, ConfigError
from hwq.export import ExportConfig
from hwq.train import TrainConfig, load_trained_model, run_train


def _one_line_error(capsys, argv: list[str]) -> str:
    assert main(argv) == 2, argv
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


@pytest.mark.parametrize("flags,message", [
    (["--lr", "-1"], "lr: expected a learning rate > 0, got -1.0"),
    (["--lr", "0"], "lr: expected a learning rate > 0, got 0.0"),
    (["--lr", "nan"], "lr: expected a finite number, got nan"),
    (["--lr", "inf"], "lr: expected a finite number, got inf"),
    (["--weight-decay", "-1"], "weight_decay: expected >= 0, got -1.0"),
    (["--epochs", "0"], "epochs: expected at least 1 epoch, got 0"),
    (["--batch-size", "0"], "batch_size: expected >= 1, got 0"),
    (["--dropout", "1"], "dropout: expected a fraction in [0, 1), got 1.0"),
    (["--seed", "-1"], "seed: expected an integer in [0, 2^32), got -1"),
    (["--wbits", "0"], "wbits: expected a bit-width >= 1"),
    (["--distill-temperature", "inf"], "distill_temperature: expected a finite number, got inf"),
    (["--threads", "0"], "threads: expected a positive integer or null, got 0"),
    (["--option", "width"], "--option 'width': expected KEY=VALUE"),
    (["--option", "width=[1"], "--option 'width=[1': VALUE is not valid YAML"),
])
def test_bad_train_flags_are_one_line(tmp_path, capsys, flags, message):
    out = tmp_path / "run"
    err = _one_line_error(capsys, ["train", "--out", str(out), "--no-progress", *flags])
    assert err == f"hwq train: error: {message}" or (err.startswith("hwq train: error: ") and message in err), err
    assert not out.exists()  # checked before anything is written


@pytest.mark.parametrize("yaml_text,message", [
    ("model_options: 5\n", "model_options: expected a mapping of option names to values, got 5"),
    ("lr: fast\n", "lr: expected a finite number, got 'fast'"),
    ("epochs: 0\n", "epochs: expected at least 1 epoch, got 0"),
    ("data_dir: 3\n", "data_dir: expected a path or null, got 3"),
    ("- a list\n", "expected a mapping of config file fields"),
])
def test_bad_config_files_name_the_file_and_field(tmp_path, capsys, yaml_text, message):
    config = tmp_path / "c.yaml"
    config.write_text(yaml_text)
    err = _one_line_error(capsys, ["train", "--config", str(config), "--out", str(tmp_path / "run")])
    assert f"{config}: " in err and message in err, err


def test_every_numeric_field_is_range_checked_in_the_config_itself():
    """The Python API gets the same checks as the CLI: they live in the dataclasses."""
    for name, bad in [("lr", float("nan")), ("lr", 0), ("weight_decay", -1e-9), ("epochs", 0), ("batch_size", 0),
                      ("dropout", -0.1), ("distill_weight", 1.5), ("distill_temperature", 0), ("seed", 2**32),
                      ("wbits", 0), ("abits", 0), ("threads", 0), ("train_subset", 0), ("lr", True)]:
        with pytest.raises(ConfigError, match=rf"^{name}: expected"):
            TrainConfig(**{name: bad})
    for name, bad in [("verify_samples", 0), ("verify_samples", -1), ("batch", 0), ("atol", -1.0),
                      ("atol", float("inf")), ("verify_samples", 2.5), ("force", "yes")]:
        with pytest.raises(ConfigError, match=rf"^{name}: expected"):
            ExportConfig(**{name: bad})


@pytest.mark.parametrize("value", ["0", "-1"])
def test_export_verify_samples_must_be_positive(tmp_path, capsys, value):
    err = _one_line_error(capsys, ["export", str(tmp_path), "--verify-samples", value])
    assert err == f"hwq export: error: verify_samples: expected a positive integer, got {value}"


def test_random_bytes_as_weights_are_a_clear_error(tmp_path, capsys):
    run = tmp_path / "run"
    run_train(TrainConfig(epochs=1, threads=1, train_subset=100), run, progress=False)
    rng = random.Random(0)
    # Some byte strings send torch's unpickler into an IndexError or KeyError rather than its own error.
    for _ in range(30):
        (run / "model.pt").write_bytes(bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 3000))))
        with pytest.raises(CheckpointError, match=r"model\.pt: not a readable hwq checkpoint"):
            load_trained_model(run)
    import torch

    torch.save({"features.0.weight": 3}, run / "model.pt")  # readable, but not weights
    with pytest.raises(CheckpointError, match=r"model\.pt: expected model weights"):
        load_trained_model(run)
    (run / "model.pt").write_bytes(b"\x80\x02}q\x00.")  # a pickled empty dict: weights that fit no model
    err = _one_line_error(capsys, ["export", str(run)])
    assert "model.pt: " in err


# --- --help shows every default ----------------------------------------------------------------------------------
def _subparser(verb: str):
    return build_parser()._subparsers._group_actions[0].choices[verb]


def _shown_default(help_text: str) -> str:
    found = re.search(r"\(default: ([^)]*)\)$", help_text or "")
    assert found, f"no '(default: ...)' at the end of {help_text!r}"
    return found.group(1)


def test_train_help_shows_the_config_defaults():
    defaults = TrainConfig().to_dict()
    for action in _subparser("train")._actions:
        if action.dest == "help":
            continue
        shown = _shown_default(action.help) if action.dest != "out" else None
        if action.dest in defaults and defaults[action.dest] is not None:
            assert shown.startswith(str(defaults[action.dest])), (action.dest, shown)
    assert "the cores this process may use" in _shown_default(
        next(a.help for a in _subparser("train")._actions if a.dest == "threads"))


def test_export_help_shows_the_config_defaults():
    defaults = dataclasses.asdict(ExportConfig())
    for action in _subparser("export")._actions:
        if action.dest in ("help", "run"):
            continue
        shown = _shown_default(action.help)
        if action.dest in defaults and not isinstance(defaults[action.dest], bool):
            assert shown.startswith(str(defaults[action.dest])), (action.dest, shown)


# --- progress ------------------------------------------------------------------------------------------------------
def test_progress_off_a_terminal_is_one_line_per_epoch(tmp_path, capsys):
    run_train(TrainConfig(epochs=2, threads=1, train_subset=100), tmp_path / "run", progress=True)
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 2
    for epoch, line in enumerate(lines, start=1):
        assert re.fullmatch(rf"epoch {epoch}/2 loss \d+\.\d{{4}} test \d+\.\d{{2}}% \d+\.\d s", line), line
    run_train(TrainConfig(epochs=1, threads=1, train_subset=100), tmp_path / "quiet", progress=False)
    assert capsys.readouterr().err == ""
