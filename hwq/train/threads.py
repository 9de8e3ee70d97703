# SPDX-License-Identifier: BSD-3-Clause
"""How many CPU threads torch uses during a run: chosen once, set for the run only, and recorded.

The thread count is part of what makes a CPU run reproducible: torch splits a reduction (a matrix product's
sums, a batch norm's mean) over its threads, and a different split adds the same numbers in a different order,
so the weights differ in their last bits and, after a few epochs of binary training, in accuracy. Leaving the
count to torch's default makes it depend on the machine and its environment (``OMP_NUM_THREADS``), and on a
loaded machine a default above the cores this process may use makes the threads wait on each other.

>>> with torch_threads(1):
...     torch.get_num_threads()
1
"""

from __future__ import annotations

import contextlib
import os
from typing import Iterator

import torch

from hwq.errors import ConfigError


def available_cores() -> int:
    """The CPU cores this process may run on (its affinity mask, which ``taskset`` and containers narrow)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1  # no affinity mask on this platform (macOS): all cores


def resolve_threads(requested: int | None) -> int:
    """The thread count a run uses: ``requested``, or every available core when None; never more than those."""
    cores = available_cores()
    if requested is None:
        return cores
    if requested > cores:
        raise ConfigError(
            f"threads: {requested} is more than the {cores} CPU core(s) this process may use; pass --threads "
            f"{cores} or fewer (a different thread count may change the trained bits)"
        )
    return requested


@contextlib.contextmanager
def torch_threads(count: int) -> Iterator[None]:
    """Run the body with ``torch.set_num_threads(count)`` and restore the caller's setting afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)
