# SPDX-License-Identifier: BSD-3-Clause
"""Quantization-robust FedAvg (``hwq fedavg``): clients on data shards as Ray tasks, one global once-QAT model
whose members ``hwq export RUN --bits b`` exports (docs/mixed_precision.md)."""

from hwq.fed.config import FedConfig
from hwq.fed.run import run_fedavg

__all__ = ["FedConfig", "run_fedavg"]
