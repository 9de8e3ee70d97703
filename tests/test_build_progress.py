# SPDX-License-Identifier: BSD-3-Clause
"""Build progress off a terminal: a line per finished step with its seconds, "still running" lines for a long
step (Yosys, nextpnr), nothing but warnings with --no-progress."""

from __future__ import annotations

import io
import re
import threading

from hwq.dataflow.progress import StepProgress


class _Recorder(io.StringIO):
    """A non-terminal stream that signals each line written (so the test waits on events, not on the clock)."""

    def __init__(self) -> None:
        super().__init__()
        self.wrote = threading.Event()

    def write(self, text: str) -> int:
        n = super().write(text)
        self.wrote.set()
        return n


def test_step_lines_with_seconds_and_heartbeat_off_a_terminal():
    stream = _Recorder()
    with StepProgress("pynq-z2", total=2, stream=stream, heartbeat_s=0.01) as progress:
        assert not progress.tty
        with progress.step("yosys synth_ecp5") as timing:
            assert stream.wrote.wait(30)            # a long step: a "running" line came while it ran
        with progress.step("nextpnr-ecp5 place and route"):
            pass
        progress.warn("--target-fps 3e+06 not met")
    lines = stream.getvalue().splitlines()
    assert re.fullmatch(r"  yosys synth_ecp5 +running, +\d+ s so far", lines[0])
    finished = [line for line in lines if "running" not in line]
    assert re.fullmatch(r"  yosys synth_ecp5 +\d+\.\d\d s", finished[0]) and timing["seconds"] >= 0
    assert re.fullmatch(r"  nextpnr-ecp5 place and route +\d+\.\d\d s", finished[1])
    assert finished[2] == "warning: --target-fps 3e+06 not met"


def test_no_progress_prints_only_warnings():
    stream = io.StringIO()
    with StepProgress("pynq-z2", stream=stream, show=False, heartbeat_s=0.01) as progress:
        with progress.step("streamline"):
            pass
        progress.warn("building an unverified model (--force)")
    assert stream.getvalue() == "warning: building an unverified model (--force)\n"
