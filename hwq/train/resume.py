# SPDX-License-Identifier: BSD-3-Clause
"""Resuming a run: which settings may change, where it stands, and what an interrupted run kept.

A resumed run continues ``checkpoint.pt`` (the last finished epoch) to ``epochs``; its ``config.yaml`` stays true
for every epoch, so only how far it goes and where it runs may change.

>>> interrupted_detail(Path("runs/x"), 30, "resume with: hwq train --out runs/x --resume")  # doctest: +SKIP
'runs/x/checkpoint.pt keeps epoch 27 of 30; resume with: hwq train --out runs/x --resume'
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hwq._io import read_json
from hwq.errors import CheckpointError, ConfigError, HwqError
from hwq.train.checkpoint import load_checkpoint
from hwq.train.config import TrainConfig
from hwq.train.rundir import CHECKPOINT_FILE, CONFIG_FILE, METRICS_FILE

#: The settings a resumed run may change: how far it goes and where it runs. Any other change (model,
#: quantizer family, bits, dataset, learning rate ...) would make a run whose config.yaml is true for no epoch.
RESUMABLE_CHANGES = ("epochs", "threads", "device", "data_dir")


def checkpoint_epoch(run_dir: str | Path) -> int | None:
    """The last finished epoch kept in ``run_dir/checkpoint.pt``, or None when there is none to read."""
    try:
        return int(load_checkpoint(Path(run_dir) / CHECKPOINT_FILE, required=("epoch",))["epoch"])
    except (HwqError, TypeError, ValueError):
        return None


def interrupted_detail(run_dir: Path, epochs: int, how_to_resume: str) -> str:
    """What an interrupted run kept, for the one-line message: its checkpoint's epoch and ``how_to_resume``."""
    done = checkpoint_epoch(run_dir)
    if done is None:
        return f"no epoch had finished, so {run_dir} holds nothing to resume"
    return f"{run_dir / CHECKPOINT_FILE} keeps epoch {done} of {epochs}; {how_to_resume}"


def resume_config(run_dir: str | Path) -> TrainConfig:
    """The settings of the run in ``run_dir`` that ``--resume`` continues (its ``config.yaml``)."""
    run_dir = Path(run_dir)
    if not (run_dir / CHECKPOINT_FILE).exists():
        raise CheckpointError(f"{run_dir / CHECKPOINT_FILE}: checkpoint not found, nothing to resume")
    return TrainConfig.from_yaml(run_dir / CONFIG_FILE)


def resume_checkpoint(config: TrainConfig, run_dir: Path) -> dict[str, Any]:
    """The checkpoint a resumed run continues from, once ``config`` is checked against the run it resumes."""
    saved = resume_config(run_dir)
    saved_settings = saved.to_dict()
    for name, value in config.to_dict().items():
        was = saved_settings[name]
        if name not in RESUMABLE_CHANGES and value != was:
            raise ConfigError(
                f"{name}: the run in {run_dir} was trained with {was!r}; a resumed run keeps its settings "
                f"(only {', '.join(RESUMABLE_CHANGES)} may change), got {value!r}"
            )
    checkpoint = load_checkpoint(run_dir / CHECKPOINT_FILE, required=("model", "optimizer", "epoch", "rng"))
    done = int(checkpoint["epoch"])
    if config.epochs < done:
        raise ConfigError(f"epochs: the run in {run_dir} has finished {done} epochs; a resumed run continues to "
                          f"more, not {config.epochs}")
    if config.epochs == done and _is_complete(run_dir):
        raise ConfigError(f"{run_dir}: training is complete ({done} epochs); to train further, resume with "
                          f"--epochs above {done}")
    return checkpoint


def _is_complete(run_dir: Path) -> bool:
    """Whether ``metrics.json`` says the training in ``run_dir`` finished (an unreadable file: it did not)."""
    try:
        metrics = read_json(run_dir / METRICS_FILE)
    except HwqError:
        return False
    return isinstance(metrics, dict) and metrics.get("complete") is True
