# SPDX-License-Identifier: BSD-3-Clause
"""The settings of a federated run: the federation (clients, rounds, local epochs, members) around the
:class:`~hwq.train.config.TrainConfig` every client trains with.

>>> FedConfig(clients=2, rounds=2).train_config(TrainConfig(wbits=4, abits=4)).method_options
{'once_bits': [2], 'once_sample': 'random'}
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from hwq.errors import ConfigError
from hwq.train.config import TrainConfig

#: The method every client trains with (once-QAT: the members are slices of the global model, so they export).
FED_METHOD = "once"


@dataclass(frozen=True)
class FedConfig:
    """One federated training. The client's own settings (model, dataset, bits, lr, batch size, seed, threads)
    are the run's ``TrainConfig``; these say how the federation is arranged."""

    #: Clients, each holding one shard of the training set (IID: a seeded random split into near-equal parts).
    clients: int = 4
    #: Communication rounds: every client trains from the global weights, the server averages.
    rounds: int = 5
    #: Epochs over its own shard a client trains per round (FedAvg's E); 1 keeps client drift small.
    local_epochs: int = 1
    #: The lower bit-widths (W = A) the global model must serve besides the run's own, sliced from it (once-QAT).
    members: tuple[int, ...] = (2,)
    #: Which bit-widths a client step trains: random (one per step, the robust-FedAvg choice) or all (summed).
    sample: str = "random"
    #: Ray workers of a local Ray (None: one per core); ignored with ``address``.
    workers: int | None = None
    #: Address of an existing Ray cluster (None: start a local one and shut it down afterwards).
    address: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "members", tuple(self.members))
        for flag, value in (("--clients", self.clients), ("--rounds", self.rounds),
                            ("--local-epochs", self.local_epochs)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"{flag}: expected a positive integer, got {value!r}")
        if self.workers is not None and (not isinstance(self.workers, int) or self.workers < 1):
            raise ConfigError(f"--workers: expected a positive integer, got {self.workers!r}")
        if not self.members or any(not isinstance(b, int) or isinstance(b, bool) for b in self.members):
            raise ConfigError(f"--members: expected one or more integer bit-widths, got {list(self.members)!r}")
        if self.sample not in ("random", "all"):
            raise ConfigError(f"--sample: expected random or all, got {self.sample!r}")

    def train_config(self, base: TrainConfig) -> TrainConfig:
        """The TrainConfig a client trains with: once-QAT at ``base``'s bits with these members, its learning-rate
        schedule spanning every round's local epochs (``epochs = rounds * local_epochs``)."""
        if base.method not in (None, "uniform", FED_METHOD):
            raise ConfigError(f"--method: a federated run trains with --method once (its clients' objective); "
                              f"got {base.method}")
        top = base.wbits
        lower = sorted({b for b in self.members if b != top})
        bad = [b for b in self.members if not 2 <= b <= top]
        if bad or base.wbits != base.abits:
            raise ConfigError(f"--members: {bad[0] if bad else self.members[0]} is not a member of a "
                              f"W{base.wbits}A{base.abits} run: expected bit-widths in 2..{top} (a member is a slice "
                              f"of the run's integers, W = A)")
        if not lower:
            raise ConfigError(f"--members: expected at least one bit-width below the run's {top}")
        return base.replace(method=FED_METHOD, epochs=self.rounds * self.local_epochs,
                            method_options={**base.method_options, "once_bits": lower, "once_sample": self.sample})

    def to_dict(self) -> dict[str, Any]:
        record = dataclasses.asdict(self)
        record["members"] = list(self.members)
        return record
