# SPDX-License-Identifier: BSD-3-Clause
"""Emulated power: the power timeline of the emulated board and an emulated ST LPM01A.

The board's power model (:class:`hwq.power_model.PowerModel`, re-exported here) gives the power while busy or
idle, from the build's ``accelerator`` section; the emulated board keeps a :class:`PowerTimeline`
(piecewise-constant power on its virtual time line) and marks the GPIO edges around every timed window;
:class:`EmulatedLpm01a` samples that timeline on its own pty.

>>> tl = PowerTimeline(); tl.extend(1.0, 100.0); tl.extend(2.0, 300.0); tl.average_mw(0.5, 1.5)
200.0
"""

from __future__ import annotations

import os
import select
import threading

from hwq.device.pty import close_quietly, open_raw_pty, write_all
from hwq.power_model import PowerModel  # noqa: F401  (re-exported: the board's power, shared with the host)
from hwq.wire import LPM_FREQS_HZ, format_lpm_value

PROMPT = "PowerShield > "


class PowerTimeline:
    """Piecewise-constant power on a virtual time line (seconds), and GPIO edges; shared between threads."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.end_s = 0.0
        self._segments: list[tuple[float, float, float]] = []     # (start_s, end_s, mW)
        self.edges: list[float] = []

    def extend(self, until_s: float, mw: float) -> None:
        """Power ``mw`` from the current end up to ``until_s``."""
        with self.lock:
            if until_s > self.end_s:
                self._segments.append((self.end_s, until_s, mw))
                self.end_s = until_s
                if len(self._segments) > 100_000:       # no monitor reading: keep the recent past only
                    del self._segments[:50_000]

    def mark(self, t_s: float) -> None:
        with self.lock:
            self.edges.append(t_s)

    def average_mw(self, t0: float, t1: float) -> float:
        """Mean power over ``[t0, t1]`` (within what is recorded)."""
        with self.lock:
            energy = sum((min(b, t1) - max(a, t0)) * mw for a, b, mw in self._segments if b > t0 and a < t1)
        return energy / (t1 - t0) if t1 > t0 else 0.0

    def forget_before(self, t_s: float) -> None:
        with self.lock:
            self._segments = [s for s in self._segments if s[1] > t_s]


class EmulatedLpm01a:
    """An LPM01A on its own pty that samples an emulated board's power timeline (MLPerf Tiny's command subset).

    ``silent = True`` makes it stop answering and sampling (a monitor that hangs), for tests.

    >>> with EmulatedLpm01a(emulator) as mon:          # doctest: +SKIP
    ...     Lpm01a(mon.port).start()
    """

    def __init__(self, board, board_id: str = "HWQEMU0001") -> None:
        self.board, self.board_id = board, board_id
        self.silent = False
        self._master, self._slave, self.port = open_raw_pty()
        self.voltage_v, self.freq = 3.3, "100"
        self._acquiring, self._t0, self._k, self._edge = False, 0.0, 0, 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> EmulatedLpm01a:
        self._thread = threading.Thread(target=self._serve, name=f"lpm01a {self.port}", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=5)
        close_quietly(self._master, self._slave)

    def _send(self, lines: list[str]) -> None:
        write_all(self._master, "".join(f"{line}\r\n" for line in lines).encode("ascii"))

    def _serve(self) -> None:
        pending = b""
        while not self._stop.is_set():
            ready, _, _ = select.select([self._master], [], [], 0.01)
            if self.silent:
                continue
            if ready:
                try:
                    pending += os.read(self._master, 4096)
                except BlockingIOError:
                    pass
                except OSError:
                    return
                while b"\n" in pending:
                    raw, _, pending = pending.partition(b"\n")
                    self._handle(raw.decode("ascii", errors="replace").strip())
            if self._acquiring:
                self._sample()

    def _handle(self, command: str) -> None:
        words = command.split()
        verb, arg = (words[0] if words else ""), (words[1] if len(words) > 1 else "")
        if verb == "stop":
            if self._acquiring:
                self._sample()
                self._acquiring = False
            self._send([f"{PROMPT}Acquisition completed", PROMPT])
            return
        if verb == "freq" and arg not in LPM_FREQS_HZ:
            self._send([f"{PROMPT}error {command}", "Error detail: invalid frequency"])
            return
        if verb == "volt" and arg != "get":
            try:
                volts = float(arg[:-1]) / 1000 if arg.endswith("m") else float(arg)
            except ValueError:
                volts = 0.0
            if not 1.8 <= volts <= 3.3:
                self._send([f"{PROMPT}error {command}", "Error detail: voltage out of range"])
                return
            self.voltage_v = volts
        known = {"htc", "hrc", "volt", "freq", "acqtime", "acqmode", "format", "trigsrc", "trigdelay", "eventsrc",
                 "output", "pwr", "pwrend", "lcd", "status", "powershield", "version", "start", "help"}
        if verb not in known:
            self._send([f"{PROMPT}error {command}", "Error detail: unknown command"])
            return
        extra = {"powershield": f" {self.board_id}", "version": " 1.0.0", "status": " ok"}.get(verb, "")
        if verb == "freq":
            self.freq = arg
        if verb == "start":
            # acquisition starts before the ack leaves: a host that runs a window as soon as it reads the ack
            # must see that window's GPIO events (was a race under load: both edges could land before this)
            self.board.sync_idle()
            tl = self.board.timeline
            with tl.lock:
                self._t0, self._k, self._edge = tl.end_s, 0, len(tl.edges)
            self._acquiring = True
        self._send([f"{PROMPT}ack {command}{extra}"])

    def _sample(self) -> None:
        """Emit every sample (and GPIO event) the board's timeline now covers."""
        self.board.sync_idle()
        tl, period = self.board.timeline, 1.0 / LPM_FREQS_HZ[self.freq]
        out: list[str] = []
        while True:
            with tl.lock:
                edge = tl.edges[self._edge] if self._edge < len(tl.edges) else None
            if edge is not None and edge <= tl.end_s and edge - self._t0 < (self._k + 0.5) * period:
                out.append(f"event {self._edge + 1} ris")
                self._edge += 1
                continue
            a = self._t0 + self._k * period
            if a + period > tl.end_s:
                break
            amps = tl.average_mw(a, a + period) / 1e3 / self.voltage_v
            out.append(format_lpm_value(amps))
            self._k += 1
            if self._k % LPM_FREQS_HZ[self.freq] == 0:
                secs = self._k // LPM_FREQS_HZ[self.freq]
                out.append(f"TimeStamp: {secs:03d}s 000ms, buff 00%")
        if out:
            tl.forget_before(self._t0 + self._k * period - period)
            self._send(out)
