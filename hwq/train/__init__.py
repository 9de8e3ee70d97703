# SPDX-License-Identifier: BSD-3-Clause
"""The training stage."""

from hwq.train.config import Loss, Schedule, TrainConfig
from hwq.train.loop import evaluate, load_trained_model, run_train
from hwq.train.resume import resume_config

__all__ = ["Loss", "Schedule", "TrainConfig", "evaluate", "load_trained_model", "resume_config", "run_train"]
