# SPDX-License-Identifier: BSD-3-Clause
"""Emulated power: the board's power model, the power timeline of the emulated board, an emulated ST LPM01A.

Power model (coefficients under ``power_model:`` in ``boards/<board>.yaml``; LUT and BRAM18 counts from the build
manifest's ``estimates.total``, clock ``f`` in MHz)::

    dynamic_mW = f * (mw_per_mhz_per_klut * LUT / 1000 + mw_per_mhz_per_bram18 * BRAM18)
    pl_mW      = pl_static_mw + activity * dynamic_mW      (activity 1 while inferring, idle_activity otherwise)
    ps_mW      = ps_mw                                     (processing system, memory, board: constant)
    total_mW   = ps_mW + pl_mW

The emulated board keeps a :class:`PowerTimeline` (piecewise-constant power on its virtual time line) and marks
the GPIO edges around every timed window; :class:`EmulatedLpm01a` samples that timeline on its own pty.

>>> m = PowerModel(ps_mw=1000, pl_static_mw=100, mw_per_mhz_per_klut=0.02, mw_per_mhz_per_bram18=0.005,
...                idle_activity=0.1, clock_mhz=100, lut=10000, bram18=20)
>>> m.total_mw(busy=True), round(m.total_mw(busy=False), 3)
(1130.0, 1103.0)
"""

from __future__ import annotations

import os
import select
import threading
from dataclasses import dataclass

from hwq.boards.board import POWER_MODEL_KEYS
from hwq.device.pty import close_quietly, open_raw_pty, write_all
from hwq.errors import HwqError
from hwq.harness.power import LPM_FREQS_HZ, format_lpm_value

PROMPT = "PowerShield > "


@dataclass(frozen=True)
class PowerModel:
    """The emulated board's power (mW) while busy or idle, split into rails ``ps`` and ``pl``."""

    ps_mw: float                    # processing system, DDR, regulators, board: constant (mW)
    pl_static_mw: float             # programmable logic static (leakage) power (mW)
    mw_per_mhz_per_klut: float      # dynamic power per MHz per 1000 LUTs at full activity (mW)
    mw_per_mhz_per_bram18: float    # dynamic power per MHz per 18 Kb BRAM at full activity (mW)
    idle_activity: float            # fraction of the dynamic power drawn while clocked but idle (0..1)
    clock_mhz: float
    lut: float
    bram18: float

    @classmethod
    def from_manifest(cls, manifest: dict) -> PowerModel:
        """Coefficients of the build's board (``power_model`` in its YAML), resources and clock of the build."""
        board = manifest.get("board", {})
        coeffs = board.get("power_model")
        if coeffs is None:
            from hwq.boards import load_board

            coeffs = getattr(load_board(board.get("name", "?")), "power_model", None)
        if not coeffs:
            raise HwqError(f"boards/{board.get('name', '?')}.yaml: no power_model (needed for emulated power)")
        total = manifest.get("estimates", {}).get("total", {})
        return cls(**{k: float(coeffs[k]) for k in POWER_MODEL_KEYS}, clock_mhz=float(total.get("clock_mhz", 0)),
                   lut=float(total.get("LUT", 0)), bram18=float(total.get("BRAM_18K", 0)))

    @property
    def dynamic_mw(self) -> float:
        return self.clock_mhz * (self.mw_per_mhz_per_klut * self.lut / 1000 + self.mw_per_mhz_per_bram18 * self.bram18)

    def rails_mw(self, busy: bool) -> dict[str, float]:
        activity = 1.0 if busy else self.idle_activity
        return {"ps": self.ps_mw, "pl": self.pl_static_mw + activity * self.dynamic_mw}

    def total_mw(self, busy: bool) -> float:
        return sum(self.rails_mw(busy).values())


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
        self._send([f"{PROMPT}ack {command}{extra}"])
        if verb == "start":
            self.board.sync_idle()
            tl = self.board.timeline
            self._t0, self._k, self._edge = tl.end_s, 0, len(tl.edges)
            self._acquiring = True

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
