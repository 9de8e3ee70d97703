# SPDX-License-Identifier: BSD-3-Clause
"""Power sources behind one interface: ``start()``, ``window(result, lines)`` per timed window, ``stop() -> PowerTrace``.

* :class:`BoardRails`: the board agent reports its rails through hwq's protocol extension (``power%`` answers
  ``m-power-mw-[<rail>=<mW>,...]``; every ``infer`` reply carries ``m-power-window-[<rail>=<mW>,...]``, the
  average power of each rail over the timed window). Trace time is the device's clock.
* :class:`Lpm01a`: an ST X-NUCLEO-LPM01A ("PowerShield") on its own serial port, driven with the command subset
  MLPerf Tiny's runner uses (``htc``, ``volt``, ``freq``, ``acqtime``, ``format ascii_dec``, ``trigsrc sw``,
  ``eventsrc d7 fal``, ``output current``, ``start``, ``stop``, ``hrc``). Samples are currents (``6409-07`` =
  640.9 uA); power = current x supply voltage. Window edges are the ``event N ris`` lines the monitor prints when
  the device toggles its GPIO around the timed inferences (two events per window). Trace time is sample index /
  sampling frequency.

The emulated board answers the rails extension, and :class:`hwq.device.power.EmulatedLpm01a` is an emulated
monitor on its own pty; both follow the board's power model (``docs/harness.md``).

>>> trace = PowerTrace([(0.0, 100.0), (1.0, 100.0)], [(0.0, 1.0)]); trace.energy_uJ(0.0, 0.5)
50000.0
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass, field

import serial

from hwq import wire
from hwq.harness.config import LPM_VOLTAGE_RANGE_V
from hwq.harness.errors import HarnessError, PortError
from hwq.harness.protocol import host_side
from hwq.wire import LPM_FREQS_HZ, format_lpm_value  # noqa: F401  (the monitor's side, re-exported)

_LPM_VALUE = wire.LPM_VALUE
#: One LPM01A ``ascii_dec`` value: ``6409-07`` -> 6.409e-4 (A in ``output current``); ProtocolError if malformed.
parse_lpm_value = host_side(wire.parse_lpm_value)
_rails_line = host_side(wire.parse_rails_line)
_LPM_EVENT = re.compile(r"^event (\d+) (ris|fal)")
_LPM_PROMPT = "PowerShield > "


class PowerError(HarnessError):
    """A power source failed: no answer, an error reply, or samples that do not cover the windows."""


@dataclass
class PowerTrace:
    """Power samples ``(time_s, power_mW)`` in time order, and the timed windows ``(t0_s, t1_s)`` in that time base."""

    samples: list[tuple[float, float]] = field(default_factory=list)
    windows: list[tuple[float, float]] = field(default_factory=list)
    source: str = ""

    def energy_uJ(self, t0: float, t1: float) -> float:
        """Trapezoidal integral of power over ``[t0, t1]`` (mW x s = mJ; returned in uJ), interpolating the edges."""
        pts = self.samples
        gap = max((b[0] - a[0] for a, b in zip(pts, pts[1:])), default=0.0)   # edges may sit half a sample out
        if len(pts) < 2 or t0 < pts[0][0] - gap or t1 > pts[-1][0] + gap or t1 < t0:
            raise PowerError(f"{self.source}: samples cover {pts[0][0] if pts else 0:.6f}-"
                             f"{pts[-1][0] if pts else 0:.6f} s, not the window {t0:.6f}-{t1:.6f} s")
        inside = [(t0, self.power_at(t0))] + [p for p in pts if t0 < p[0] < t1] + [(t1, self.power_at(t1))]
        return 1e3 * sum((b[0] - a[0]) * (a[1] + b[1]) / 2 for a, b in zip(inside, inside[1:]))

    def power_at(self, t: float) -> float:
        """Power at ``t`` (mW), linearly interpolated between samples."""
        pts = self.samples
        for (ta, pa), (tb, pb) in zip(pts, pts[1:]):
            if ta <= t <= tb:
                return pa if tb == ta else pa + (pb - pa) * (t - ta) / (tb - ta)
        return pts[0][1] if t < pts[0][0] else pts[-1][1]


class PowerSource:
    """One way of measuring power: :meth:`start`, then :meth:`window` after every timed ``infer``, then :meth:`stop`."""

    name = "power"

    def start(self) -> None:
        """Begin acquiring (before the first timed window)."""

    def window(self, result, lines: list[str]) -> None:
        """Register the timed window of ``result`` (an :class:`InferResult`) whose reply lines were ``lines``."""

    def stop(self) -> PowerTrace:
        """End acquisition; the trace holds one window per :meth:`window` call, in order."""
        raise NotImplementedError

    def trace_so_far(self) -> PowerTrace:
        """What has been acquired until now, without stopping: for a run interrupted mid-way (its last window may
        be missing or not yet covered by samples)."""
        raise NotImplementedError


# --- the board's own rails (protocol extension) ----------------------------------------------------------------
def parse_rails(lines: list[str], kind: str = "mw") -> dict[str, float] | None:
    """The rails of the ``m-power-<kind>-[rail=mW,...]`` line in ``lines`` (None when there is none).

    >>> parse_rails(["m-power-mw-[ps=1500,pl=12.5]", "m-ready"])
    {'ps': 1500.0, 'pl': 12.5}
    """
    for line in lines:
        parsed = _rails_line(line)
        if parsed and parsed[0] == kind:
            return parsed[1]
    return None


class BoardRails(PowerSource):
    """Rails reported by the board itself (hwq extension); ``dut`` is an open :class:`hwq.harness.Device`."""

    name = "rails"

    def __init__(self, dut) -> None:
        self.dut, self.trace, self.idle_mw = dut, PowerTrace(source=f"{dut.link.port} rails"), None

    def start(self) -> None:
        rails = parse_rails(self.dut.link.command("power"))
        if rails is None:
            raise PowerError(f"{self.dut.link.port}: device does not answer 'power%' with m-power-mw-[...] "
                             "(the hwq rails extension); use an external monitor (--power lpm01a)")
        self.idle_mw = rails

    def window(self, result, lines: list[str]) -> None:
        rails = parse_rails(lines, "window")
        if rails is None:
            raise PowerError(f"{self.dut.link.port}: infer {result.n} reply has no m-power-window-[...] line")
        total, t0, t1 = sum(rails.values()), result.t0_us / 1e6, result.t1_us / 1e6
        self.trace.samples += [(t0, total), (t1, total)]
        self.trace.windows.append((t0, t1))

    def stop(self) -> PowerTrace:
        return self.trace

    def trace_so_far(self) -> PowerTrace:
        return self.trace


# --- ST LPM01A ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LpmLine:
    """One classified LPM01A output line: ``kind`` is values, event, timestamp, ack, error or message."""

    kind: str
    values: tuple[float, ...] = ()
    text: str = ""


def parse_lpm_line(line: str) -> LpmLine:
    """Classify one line of the monitor's output (prompt stripped).

    >>> parse_lpm_line("PowerShield > ack freq 1k")
    LpmLine(kind='ack', values=(), text='freq 1k')
    >>> parse_lpm_line("6409-07").values
    (0.0006409,)
    """
    text = line.replace(_LPM_PROMPT, "").strip()
    if _LPM_VALUE.fullmatch(text.replace(" ", "")[:7]) and re.fullmatch(r"(\d{4}[-+]\d{2}\s*)+", text):
        return LpmLine("values", tuple(parse_lpm_value(v.group(0)) for v in _LPM_VALUE.finditer(text)))
    if _LPM_EVENT.match(text):
        return LpmLine("event", text=text)
    if text.startswith("TimeStamp"):
        return LpmLine("timestamp", text=text)
    for kind in ("ack", "error"):
        if text.startswith(kind):
            return LpmLine(kind, text=text[len(kind):].strip())
    return LpmLine("message", text=text)


class Lpm01a(PowerSource):
    """An LPM01A on ``port``: configured as MLPerf Tiny's runner does, then sampled in ``output current`` mode.

    >>> with Lpm01a("/dev/ttyACM0", voltage_v=3.3) as mon:      # doctest: +SKIP
    ...     mon.start(); ...; trace = mon.stop()
    """

    name = "lpm01a"

    def __init__(self, port: str, baud: int = 3_686_400, voltage_v: float = 3.3, freq: str = "1k",
                 timeout_s: float = 5.0) -> None:
        if freq not in LPM_FREQS_HZ:
            raise PowerError(f"{port}: LPM01A freq {freq!r}: expected one of {', '.join(LPM_FREQS_HZ)}")
        if not LPM_VOLTAGE_RANGE_V[0] <= voltage_v <= LPM_VOLTAGE_RANGE_V[1]:
            raise PowerError(f"{port}: LPM01A voltage {voltage_v} V outside [1.8, 3.3] V")
        self.port, self.voltage_v, self.freq, self.timeout_s = port, voltage_v, freq, timeout_s
        try:
            self._serial = serial.serial_for_url(port, baudrate=baud, timeout=0.05, write_timeout=timeout_s)
        except (serial.SerialException, OSError, ValueError) as err:
            raise PortError(f"{port}: cannot open the power monitor ({str(err).splitlines()[0][:100]})") from None
        self._buf = b""
        self._lines: list[LpmLine] = []
        self._events = 0
        self._windows = 0
        self._reader: threading.Thread | None = None
        self._running = False
        self._done = threading.Event()
        self._failure: str | None = None
        self.board_id = self.version = None

    def __enter__(self) -> Lpm01a:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- line I/O (only one reader at a time: this thread before start(), the reader thread after) -------------
    def _readline(self, deadline: float) -> str | None:
        while b"\n" not in self._buf:
            if time.monotonic() >= deadline:
                return None
            try:
                self._buf += self._serial.read(max(1, self._serial.in_waiting))
            except (serial.SerialException, OSError, TypeError) as err:
                raise PortError(f"{self.port}: power monitor read failed ({str(err)[:80]})") from None
        raw, _, self._buf = self._buf.partition(b"\n")
        return raw.replace(b"\r", b"").decode("ascii", errors="replace")

    def _write(self, command: str) -> None:
        try:
            self._serial.write((command + "\n").encode("ascii"))
            self._serial.flush()
        except (serial.SerialException, OSError) as err:
            raise PortError(f"{self.port}: power monitor write failed ({str(err)[:80]})") from None

    def command(self, command: str) -> str:
        """Send one command and wait for its ``ack``; returns what follows the command in the ack line."""
        self._write(command)
        deadline = time.monotonic() + self.timeout_s
        while True:
            line = self._readline(deadline)
            if line is None:
                raise PowerError(f"{self.port}: power monitor did not acknowledge '{command}' within "
                                 f"{self.timeout_s:g} s")
            got = parse_lpm_line(line)
            if got.kind in ("ack", "error") and got.text.startswith(command.split()[0]):
                if got.kind == "error":
                    detail = self._readline(time.monotonic() + 0.5) or ""
                    raise PowerError(f"{self.port}: power monitor refused '{command}' "
                                     f"({detail.replace(_LPM_PROMPT, '').strip() or got.text})")
                return got.text[len(command):].strip()

    def configure(self) -> None:
        """Take control and set up a software-triggered, endless acquisition of currents at ``freq``."""
        self.command("htc")
        self.board_id = self.command("powershield")
        for cmd in (f"volt {int(round(self.voltage_v * 1000))}m", f"freq {self.freq}", "acqtime 0", "format ascii_dec",
                    "trigsrc sw", "eventsrc d7 fal", "output current"):
            self.command(cmd)

    # --- acquisition -------------------------------------------------------------------------------------------
    def start(self) -> None:
        self.configure()
        self.command("start")
        self._running = True
        self._reader = threading.Thread(target=self._read_loop, name=f"lpm01a {self.port}", daemon=True)
        self._reader.start()

    def _read_loop(self) -> None:
        try:
            while self._running:
                line = self._readline(time.monotonic() + 0.1)
                if line is None:
                    continue
                got = parse_lpm_line(line)
                self._lines.append(got)
                if got.kind == "event":
                    self._events += 1
                elif got.kind == "message" and "Acquisition completed" in got.text:
                    self._done.set()
                    return
        except HarnessError as err:
            self._failure = str(err)
            self._done.set()

    def window(self, result, lines: list[str]) -> None:
        """Wait (with the timeout) until the monitor has reported the two GPIO events of this window."""
        self._windows += 1
        deadline = time.monotonic() + self.timeout_s
        while self._events < 2 * self._windows:
            if self._failure or time.monotonic() > deadline:
                raise PowerError(self._failure or f"{self.port}: power monitor reported {self._events} GPIO events, "
                                 f"expected {2 * self._windows} after window {self._windows} "
                                 f"(no answer within {self.timeout_s:g} s)")
            time.sleep(0.01)

    def stop(self) -> PowerTrace:
        self._write("stop")
        if not self._done.wait(self.timeout_s):
            self._running = False
            raise PowerError(f"{self.port}: power monitor did not complete 'stop' within {self.timeout_s:g} s")
        self._running = False
        if self._reader:
            self._reader.join(timeout=self.timeout_s)
        if self._failure:
            raise PowerError(self._failure)
        return self.trace()

    def trace_so_far(self) -> PowerTrace:
        return self.trace(complete=False)

    def trace(self, complete: bool = True) -> PowerTrace:
        """The acquired lines as a trace: sample k (current x voltage) at the middle of its period, events as edges.
        ``complete``: every window the device ran must have its two events (else a PowerError)."""
        period = 1.0 / LPM_FREQS_HZ[self.freq]
        samples, edges, k = [], [], 0
        for got in list(self._lines):       # a copy: the reader thread may still be appending
            if got.kind == "values":
                for amps in got.values:
                    samples.append(((k + 0.5) * period, amps * self.voltage_v * 1e3))
                    k += 1
            elif got.kind == "event":
                edges.append(k * period)
        trace = PowerTrace(samples, list(zip(edges[0::2], edges[1::2])), source=f"{self.port} LPM01A")
        if complete and len(trace.windows) != self._windows:
            raise PowerError(f"{self.port}: power monitor reported {len(trace.windows)} windows, "
                             f"the device ran {self._windows}")
        return trace

    def close(self) -> None:
        self._running = False
        if self._reader:
            self._reader.join(timeout=1.0)
        try:
            if self._reader is None or not self._reader.is_alive():
                self._write("hrc")
        except PortError:
            pass
        self._serial.close()
