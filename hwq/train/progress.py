# SPDX-License-Identifier: BSD-3-Clause
"""Training progress on stderr: a live bar on a terminal, one plain line per epoch anywhere else.

A log file, a CI job or ``nohup`` gets the per-epoch lines (a redrawn bar there is either nothing or a wall of
control characters); ``enabled=False`` prints neither.

>>> with EpochProgress(enabled=True, epochs=2, steps_per_epoch=15, first_epoch=0) as progress:  # doctest: +SKIP
...     progress.step()
...     progress.epoch_done({"epoch": 1, "loss": 0.52, "test_acc": 0.91, "seconds": 0.4})
"""

from __future__ import annotations

import sys
from typing import Any


class EpochProgress:
    """Reports each optimizer step (the bar) and each finished epoch (the bar's status, or one line)."""

    def __init__(self, enabled: bool, epochs: int, steps_per_epoch: int, first_epoch: int) -> None:
        self.enabled, self.epochs = enabled, epochs
        self.total_steps = (epochs - first_epoch) * steps_per_epoch
        self._bar = self._task = None

    def __enter__(self) -> "EpochProgress":
        # Decided when training starts, on the stream the progress goes to.
        if self.enabled and sys.stderr.isatty():
            self._bar = _rich_bar()
            self._bar.__enter__()
            self._task = self._bar.add_task("train", total=self.total_steps, status="")
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._bar is not None:
            self._bar.__exit__(*exc)

    def step(self) -> None:
        if self._bar is not None:
            self._bar.update(self._task, advance=1)

    def epoch_done(self, record: dict[str, Any]) -> None:
        """``record`` is the epoch's history entry (``epoch`` 1-based, ``loss``, ``test_acc``, ``seconds``)."""
        if not self.enabled:
            return
        summary = (f"epoch {record['epoch']}/{self.epochs} loss {record['loss']:.4f} "
                   f"test {100 * record['test_acc']:.2f}%")
        if self._bar is not None:
            self._bar.update(self._task, status=summary)
        else:
            print(f"{summary} {record['seconds']:.1f} s", file=sys.stderr, flush=True)


def _rich_bar():
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
        TextColumn("{task.fields[status]}"), console=Console(stderr=True), transient=False,
    )
