# SPDX-License-Identifier: BSD-3-Clause
"""Nothing lost: overwrite only on success, resume rules, Ctrl-C and SIGTERM, a full disk, a read-only folder."""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import time

import pytest
import torch

from hwq.cli import main
from hwq.errors import CheckpointError, DataError, Interrupted
from hwq.models.fc import FC
from hwq.train import TrainConfig, run_train
from hwq.train.checkpoint import load_checkpoint

#: One thread: the runs below are tiny, and a busy machine makes more threads wait on each other.
QUICK = {"threads": 1, "train_subset": 300}


def _snapshot(run) -> dict[str, bytes]:
    """Every file under ``run`` (relative path -> bytes)."""
    return {str(p.relative_to(run)): p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()}


def _staging_left(run) -> list[str]:
    return [p.name for p in run.parent.iterdir() if p.name.startswith(f".{run.name}.")]


@pytest.fixture
def finished_run(tmp_path):
    """A finished 1-epoch run with what later stages would have added: an export, a build, a user's note."""
    run = tmp_path / "run"
    run_train(TrainConfig(epochs=1, **QUICK), run, progress=False)
    (run / "model.onnx").write_bytes(b"an export of these weights")
    (run / "export.json").write_text('{"verification": {"passed": true}}')
    (run / "build-pynq-z2").mkdir()
    (run / "build-pynq-z2" / "manifest.json").write_text("{}")
    (run / "notes.txt").write_text("seed 0 baseline")
    return run


@pytest.fixture
def interrupt_at_epoch(monkeypatch):
    """``interrupt_at_epoch(k)``: Ctrl-C (a KeyboardInterrupt) at the start of epoch ``k`` (0-based), once."""

    def arm(k: int) -> None:
        fired = []

        def on_epoch_start(self, epoch, epochs):
            if epoch == k and not fired:
                fired.append(epoch)
                raise KeyboardInterrupt

        monkeypatch.setattr(FC, "hwq_on_epoch_start", on_epoch_start, raising=False)

    return arm


# --- overwrite -------------------------------------------------------------------------------------------------
def test_overwrite_replaces_the_run_and_its_stale_outputs(finished_run):
    old_weights = load_checkpoint(finished_run / "model.pt")
    mode = finished_run.stat().st_mode
    run_train(TrainConfig(epochs=1, seed=1, **QUICK), finished_run, overwrite=True, progress=False)
    new_weights = load_checkpoint(finished_run / "model.pt")
    assert not all(torch.equal(old_weights[k], new_weights[k]) for k in old_weights)
    # the old weights' export and build are gone; a file no stage writes moved into the new run
    assert not (finished_run / "model.onnx").exists() and not (finished_run / "export.json").exists()
    assert not (finished_run / "build-pynq-z2").exists()
    assert (finished_run / "notes.txt").read_text() == "seed 0 baseline"
    log = (finished_run / "train.log").read_text()
    assert log.index("# start") < log.index("# overwrite")  # the log is continued, not restarted
    assert json.loads((finished_run / "metrics.json").read_text())["config"]["seed"] == 1
    assert finished_run.stat().st_mode == mode and _staging_left(finished_run) == []


def test_a_failed_overwrite_keeps_the_previous_run_whole(finished_run, tmp_path):
    before = _snapshot(finished_run)
    missing = TrainConfig(epochs=1, dataset="mnist", data_dir=str(tmp_path / "no-data"), threads=1)
    with pytest.raises(DataError, match="data folder for mnist not found"):
        run_train(missing, finished_run, overwrite=True, progress=False)
    assert _snapshot(finished_run) == before and _staging_left(finished_run) == []


def test_an_interrupted_overwrite_keeps_the_previous_run_whole(finished_run, interrupt_at_epoch):
    before = _snapshot(finished_run)
    interrupt_at_epoch(1)
    with pytest.raises(Interrupted) as stopped:
        run_train(TrainConfig(epochs=3, seed=2, **QUICK), finished_run, overwrite=True, progress=False)
    assert stopped.value.detail == f"the overwrite was discarded; {finished_run} still holds the previous run"
    assert _snapshot(finished_run) == before and _staging_left(finished_run) == []


# --- interruption and resume -------------------------------------------------------------------------------------
def test_ctrl_c_keeps_the_last_epoch_and_says_how_to_resume(tmp_path, interrupt_at_epoch, capsys):
    run = tmp_path / "run"
    interrupt_at_epoch(2)
    assert main(["train", "--epochs", "4", "--threads", "1", "--train-subset", "300", "--out", str(run),
                 "--no-progress"]) == 130
    err = capsys.readouterr().err.strip()
    assert err == (f"hwq train: interrupted (SIGINT); {run}/checkpoint.pt keeps epoch 2 of 4; "
                   f"resume with: hwq train --out {run} --resume")
    assert load_checkpoint(run / "checkpoint.pt")["epoch"] == 2 and not (run / "model.pt").exists()
    assert json.loads((run / "metrics.json").read_text())["complete"] is False
    assert main(["train", "--out", str(run), "--resume", "--no-progress"]) == 0
    history = json.loads((run / "metrics.json").read_text())["history"]
    assert [h["epoch"] for h in history] == [1, 2, 3, 4]


def test_sigterm_ends_training_with_143_and_an_intact_checkpoint(tmp_path):
    """A real ``hwq train`` process, stopped with SIGTERM once its first checkpoint exists."""
    run = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-m", "hwq", "train", "--epochs", "100000", "--threads", "1", "--train-subset", "100",
         "--out", str(run), "--no-progress"], stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        while not (run / "checkpoint.pt").exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    done = load_checkpoint(run / "checkpoint.pt")["epoch"]
    assert proc.returncode == 143
    assert err.strip().splitlines() == [f"hwq train: interrupted (SIGTERM); {run}/checkpoint.pt keeps epoch "
                                        f"{done} of 100000; resume with: hwq train --out {run} --resume"]
    assert main(["train", "--out", str(run), "--resume", "--epochs", str(done + 1), "--no-progress"]) == 0
    assert json.loads((run / "metrics.json").read_text())["epochs"] == done + 1


def test_resume_refuses_what_it_cannot_honour(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--epochs", "2", "--threads", "1", "--train-subset", "300", "--out", str(run),
                 "--no-progress"]) == 0
    capsys.readouterr()
    before = _snapshot(run)
    for flags, message in [
        ([], f"{run}: training is complete (2 epochs); to train further, resume with --epochs above 2"),
        (["--epochs", "1"], f"epochs: the run in {run} has finished 2 epochs; a resumed run continues to more, "
                            "not 1"),
        (["--epochs", "4", "--model", "sfc"], f"model: the run in {run} was trained with 'tfc'; a resumed run "
                                              "keeps its settings"),
        (["--epochs", "4", "--wbits", "2"], "wbits: the run in"),
        (["--epochs", "4", "--dataset", "mnist"], "dataset: the run in"),
        (["--epochs", "4", "--config", str(run / "config.yaml")], "--config: a resumed run keeps the settings"),
        (["--epochs", "4", "--overwrite"], "--resume continues the run in --out, --overwrite replaces it"),
    ]:
        assert main(["train", "--out", str(run), "--resume", "--no-progress", *flags]) == 2, flags
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and message in err, (flags, err)
    assert _snapshot(run) == before  # metrics.json and config.yaml still say 2 epochs
    with pytest.raises(CheckpointError, match="checkpoint not found, nothing to resume"):
        run_train(TrainConfig(epochs=2), tmp_path / "empty", resume=True)


def test_resume_may_change_epochs_threads_device_and_data_dir(tmp_path):
    run = tmp_path / "run"
    run_train(TrainConfig(epochs=1, **QUICK), run, progress=False)
    metrics = run_train(TrainConfig(epochs=2, device="cpu", data_dir=str(tmp_path), **QUICK), run, resume=True,
                        progress=False)
    assert metrics["complete"] and [h["epoch"] for h in metrics["history"]] == [1, 2]


def test_training_a_finished_run_further_drops_its_stale_outputs(finished_run):
    run_train(TrainConfig(epochs=2, **QUICK), finished_run, resume=True, progress=False)
    assert not (finished_run / "model.onnx").exists() and not (finished_run / "build-pynq-z2").exists()
    assert (finished_run / "notes.txt").is_file()


def test_a_new_run_in_a_folder_without_one_keeps_its_files(tmp_path):
    folder = tmp_path / "project"
    (folder / "build-release").mkdir(parents=True)  # not hwq's: the folder held no training run
    run_train(TrainConfig(epochs=1, **QUICK), folder, progress=False)
    assert (folder / "build-release").is_dir() and (folder / "model.pt").is_file()


# --- the file system ---------------------------------------------------------------------------------------------
def _limit_file_size(limit: int):
    return lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))


def test_a_full_disk_is_one_line_and_keeps_the_previous_run(finished_run):
    """Writes beyond 64 kB fail (EFBIG, as a full disk fails with ENOSPC): the checkpoint cannot be written."""
    before = _snapshot(finished_run)
    proc = subprocess.run(
        [sys.executable, "-m", "hwq", "train", "--epochs", "1", "--seed", "3", "--threads", "1", "--train-subset",
         "300", "--out", str(finished_run), "--overwrite", "--no-progress"],
        capture_output=True, text=True, preexec_fn=_limit_file_size(64_000), timeout=300)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("hwq train: error: ") and lines[0].endswith(
        "/checkpoint.pt: file too large"), proc.stderr
    assert _snapshot(finished_run) == before and _staging_left(finished_run) == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_out_is_one_line(tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        assert main(["train", "--epochs", "1", "--threads", "1", "--out", str(locked / "run"), "--no-progress"]) == 2
    finally:
        locked.chmod(0o700)
    err = capsys.readouterr().err.strip()
    assert err == f"hwq train: error: {locked / 'run'}: permission denied"
