# SPDX-License-Identifier: BSD-3-Clause
"""Ray for the duration of a ``with`` block, as ``hwq sweep`` and ``hwq fedavg`` use it: an existing cluster at
``address``, else a local Ray with ``num_cpus`` CPUs (no dashboard, no driver log stream: the tasks report through
their results). A Ray already initialised in this process is used as it is; only a Ray started here is shut down.

>>> with ray_session(None, 2):        # doctest: +SKIP
...     ray.get(task.remote())
"""

from __future__ import annotations

import contextlib
from typing import Iterator


@contextlib.contextmanager
def ray_session(address: str | None, num_cpus: int) -> Iterator[None]:
    import ray

    started_here = not ray.is_initialized()
    if started_here:
        options = {"address": address} if address else {"num_cpus": num_cpus}
        ray.init(**options, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        yield
    finally:
        if started_here:
            ray.shutdown()
