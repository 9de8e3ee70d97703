# SPDX-License-Identifier: BSD-3-Clause
"""Progress of a build on stderr: one line per finished step with its seconds, on a terminal and off it.

On a terminal a transient bar (rich) also shows the running step and its elapsed time. Off a terminal (a CI log,
``2> build.txt``) there is no bar, so a step that runs longer than :data:`HEARTBEAT_S` prints a line with its
elapsed time every :data:`HEARTBEAT_S` seconds (Yosys on a CNV runs for half an hour). ``show=False``
(``--no-progress``) prints no step lines; warnings are printed always.

>>> with StepProgress("pynq-z2", total=2) as progress:      # doctest: +SKIP
...     with progress.step("streamline"):
...         model = streamline(model)
  streamline                      0.94 s
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from typing import Iterator, TextIO

#: Seconds between the "still running" lines of a long step when stderr is not a terminal.
HEARTBEAT_S = 60.0


class StepProgress:
    """Step lines (and, on a terminal, a bar) for one build; use as a context manager around the steps."""

    def __init__(self, title: str, total: int | None = None, show: bool = True, stream: TextIO | None = None,
                 heartbeat_s: float = HEARTBEAT_S) -> None:
        self.title, self.total, self.show, self.heartbeat_s = title, total, show, heartbeat_s
        self.stream = stream if stream is not None else sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._bar = None
        self._task = None
        self._lock = threading.Lock()

    def __enter__(self) -> "StepProgress":
        if self.show and self.tty:
            from rich.console import Console
            from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

            console = Console(file=self.stream)
            columns = [SpinnerColumn(), TextColumn("[bold]{task.description}")]
            if self.total:
                columns += [BarColumn(), TextColumn("{task.completed}/{task.total}")]
            self._bar = Progress(*columns, TimeElapsedColumn(), console=console, transient=True)
            self._bar.__enter__()
            self._task = self._bar.add_task(self.title, total=self.total)
        return self

    def __exit__(self, *exc) -> None:
        if self._bar is not None:
            self._bar.__exit__(*exc)
            self._bar = None

    def print(self, line: str, always: bool = False) -> None:
        """A line on stderr (above the bar on a terminal); dropped with ``show=False`` unless ``always``."""
        if not (self.show or always):
            return
        with self._lock:
            if self._bar is not None:
                self._bar.console.print(line, soft_wrap=True, highlight=False, markup=False)
            else:
                print(line, file=self.stream, flush=True)

    def warn(self, message: str) -> None:
        """A warning: printed also with ``show=False``."""
        self.print(f"warning: {message}", always=True)

    @contextlib.contextmanager
    def step(self, name: str) -> Iterator[dict]:
        """Time one step; afterwards print ``  name  seconds``. Yields a dict that receives ``seconds``."""
        record: dict = {}
        if self._bar is not None:
            self._bar.update(self._task, description=f"{self.title}: {name}")
        stop = threading.Event()
        started = time.perf_counter()
        beat = None
        if self.show and self._bar is None and self.heartbeat_s > 0:
            beat = threading.Thread(target=self._heartbeat, args=(name, started, stop), daemon=True)
            beat.start()
        try:
            yield record
        finally:
            stop.set()
            if beat is not None:
                beat.join()
            record["seconds"] = round(time.perf_counter() - started, 3)
        self.print(f"  {name:<28} {record['seconds']:7.2f} s")
        if self._bar is not None and self.total:
            self._bar.advance(self._task)

    def _heartbeat(self, name: str, started: float, stop: threading.Event) -> None:
        while not stop.wait(self.heartbeat_s):
            self.print(f"  {name:<28} running, {time.perf_counter() - started:7.0f} s so far")


def quiet() -> StepProgress:
    """A progress that prints nothing but warnings (for callers that pass none)."""
    return StepProgress("", show=False)
