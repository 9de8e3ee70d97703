# SPDX-License-Identifier: BSD-3-Clause
"""The thread count of a training run: chosen, set for the run only, recorded, and what the bits depend on."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from hwq.errors import ConfigError
from hwq.train import TrainConfig, run_train
from hwq.train.checkpoint import load_checkpoint
from hwq.train.threads import available_cores, resolve_threads, torch_threads

#: Two epochs on 300 digits: enough optimizer steps for a reduction order to show in the weights.
TINY = {"epochs": 2, "train_subset": 300}


def _weights(run) -> dict[str, torch.Tensor]:
    return load_checkpoint(run / "model.pt")


def _without_timings(metrics: dict) -> dict:
    """``metrics.json`` without what a clock measured (the run's and each epoch's seconds, also in its steps)."""
    out = {k: v for k, v in metrics.items() if k != "seconds"}
    out["history"] = [{k: v for k, v in h.items() if k != "seconds"} for h in metrics["history"]]
    out["steps"] = [{k: v for k, v in s.items() if k != "seconds"} for s in metrics["steps"]]
    return out


@pytest.mark.parametrize("threads", sorted({1, available_cores()}))
def test_same_settings_and_threads_give_the_same_bits(tmp_path, threads):
    config = TrainConfig(threads=threads, **TINY)
    first = run_train(config, tmp_path / "a", progress=False)
    second = run_train(config, tmp_path / "b", progress=False)
    a, b = _weights(tmp_path / "a"), _weights(tmp_path / "b")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert _without_timings(first) == _without_timings(second)
    assert first["threads"] == threads and first["config"]["threads"] == threads


def test_the_setting_not_the_environment_decides(tmp_path):
    """OMP_NUM_THREADS in the environment changes nothing once the run names its thread count."""
    run_train(TrainConfig(threads=1, **TINY), tmp_path / "here", progress=False)
    script = ("import sys; from hwq.train import TrainConfig, run_train; "
              f"run_train(TrainConfig(threads=1, **{TINY!r}), sys.argv[1], progress=False)")
    env = {**os.environ, "OMP_NUM_THREADS": "3", "MKL_NUM_THREADS": "3"}
    subprocess.run([sys.executable, "-c", script, str(tmp_path / "there")], env=env, check=True, timeout=300)
    here, there = _weights(tmp_path / "here"), _weights(tmp_path / "there")
    assert all(torch.equal(here[k], there[k]) for k in here)


def test_default_is_the_available_cores_and_is_recorded(tmp_path):
    metrics = run_train(TrainConfig(epochs=1, train_subset=100), tmp_path / "run", progress=False)
    assert metrics["threads"] == available_cores() == metrics["config"]["threads"]
    assert TrainConfig.from_yaml(tmp_path / "run" / "config.yaml").threads == available_cores()
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["threads"] == available_cores()


def test_the_callers_thread_setting_is_restored(tmp_path):
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(3)  # any count torch accepts, whatever the machine
        with torch_threads(1):
            assert torch.get_num_threads() == 1
        assert torch.get_num_threads() == 3
        run_train(TrainConfig(epochs=1, train_subset=100, threads=1), tmp_path / "run", progress=False)
        assert torch.get_num_threads() == 3
        with pytest.raises(RuntimeError), torch_threads(1):
            raise RuntimeError("a failing run")
        assert torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(before)


def test_thread_counts_are_checked():
    for bad in (0, -1, 1.5, True, "2"):
        with pytest.raises(ConfigError, match="threads: expected a positive integer or null"):
            TrainConfig(threads=bad)
    assert resolve_threads(None) == available_cores()
    with pytest.raises(ConfigError, match=rf"threads: {available_cores() + 1} is more than the {available_cores()} "):
        resolve_threads(available_cores() + 1)
