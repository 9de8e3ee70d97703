# SPDX-License-Identifier: BSD-3-Clause
"""The emulated board: a pseudo-terminal that answers the MLPerf Tiny protocol like an accelerator would.

Everything comes from the build manifest's ``accelerator`` section (:mod:`hwq.accelerator`), so a FINN build and an
open-backend build are emulated alike. Inference is bit-exact (the HW-layer graph the section names, executed by
FINN/QONNX in Python); timestamps come from a virtual clock at the section's ``clock_mhz`` (a FINN build: the board
clock; an open build: the Fmax nextpnr measured, or the board clock without synthesis): ``infer N W`` advances it
by the cycles of W warm-ups, reads t0, advances it by ``fill + (N - 1) * II`` cycles (``latency_cycles`` and
``cycles_per_image``: FINN's estimate, or the RTL simulation's count), reads t1. So a host measures exactly the
section's ``fps`` (up to the microsecond rounding and the one pipeline fill), and ``infer 1 W`` takes ``fill``
cycles, the section's ``latency_us``: the pipeline latency of one inference (to the timer's whole microsecond).
Between commands the virtual clock also follows wall time, so ``timestamp`` moves like a real timer. By default an
``infer`` window returns as soon as it is computed (a 10 s window in milliseconds); with ``realtime`` (``hwq emulate
--realtime``) the reply waits until the window's device time has passed on the wall clock too, as a real board's
does, so a host that checks a window's wall time (MLPerf Tiny's 10 s rule) accepts it; the timestamps are the same.

Fault injection (:class:`FaultConfig`, range-checked): reply bytes dropped or replaced by line noise (non-ASCII
bytes), a delay before every reply, a reboot (boot lines, buffer lost) on the Nth command.
:meth:`Emulator.from_build_dir` refuses a build whose manifest is not done or whose gates failed, unless ``force``.

>>> emu = Emulator.from_build_dir("runs/tfc-digits/build-pynq-z2").start()               # doctest: +SKIP
>>> emu.port, emu.stop()                                                                  # doctest: +SKIP
('/dev/pts/5', None)
"""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass
from fractions import Fraction

from hwq.accelerator_model import BuildModel
from hwq.checks import check_int, check_number
from hwq.device.clock import VirtualClock
from hwq.device.dut import DutSession, Window, reply_bytes, serve_link
from hwq.device.power import PowerTimeline
from hwq.device.pty import close_quietly, open_raw_pty, read_available, write_all
from hwq.errors import ConfigError, HwqError
from hwq.power_model import PowerModel


@dataclass(frozen=True)
class FaultConfig:
    """Faults to inject; all off by default. Rates are per reply byte, in [0, 1]. Checked when made: a value out
    of range is a one-line ConfigError naming the ``hwq emulate`` flag (``--drop-rate 2: expected ...``)."""

    drop_rate: float = 0.0          # a reply byte is lost
    garble_rate: float = 0.0        # a reply byte becomes line noise (0x80-0xFF, never a protocol character)
    reply_delay_s: float = 0.0      # wait before every reply (a slow device)
    reset_at_command: int = 0       # reboot instead of answering the Nth command (1-based; 0: never)
    seed: int = 0                   # for the random faults, so a test is repeatable

    def __post_init__(self) -> None:
        check_number("--drop-rate", self.drop_rate, 0, 1)
        check_number("--garble-rate", self.garble_rate, 0, 1)
        if self.drop_rate + self.garble_rate > 1:
            raise ConfigError(f"--drop-rate {self.drop_rate} + --garble-rate {self.garble_rate}: expected a sum "
                              "<= 1 (each reply byte is dropped, garbled or sent)")
        check_number("--reply-delay", self.reply_delay_s, 0, unit="seconds")
        check_int("--reset-at", self.reset_at_command, 0, note=" (0: never)")
        check_int("--seed", self.seed, 0)


def check_device_name(name: str) -> None:
    """The name answered in ``m-name-dut-[<name>]``: printable ASCII without brackets or ``%`` (which would end a
    reply line's field early), 1 to 40 characters."""
    if not (isinstance(name, str) and 0 < len(name) <= 40 and name.isascii() and name.isprintable()
            and not set(name) & set("[]%")):
        raise ConfigError(f"--name {name!r}: expected 1-40 printable ASCII characters without '[', ']' or '%'")


class EmulatedAccelerator:
    """The build's HW graph as an :class:`hwq.device.dut.Accelerator`: bit-exact scores, virtual-clock timing,
    power from the board's power model on a :class:`PowerTimeline` (which an emulated monitor samples); all from
    the build's ``accelerator`` section (``model.accelerator``)."""

    def __init__(self, model: BuildModel, realtime: bool = False, wait=time.sleep) -> None:
        self.model = model
        #: pace each ``infer`` window to last its device time on the wall clock (``hwq emulate --realtime``);
        #: ``wait(seconds)`` does the waiting (the emulator's stop event, so that stopping cuts a long window short)
        self.realtime, self._wait = realtime, wait
        self.input_bytes = model.input_bytes
        self.clock = VirtualClock(model.clock_mhz)
        try:                                # rails extension and emulated monitors need the board's power model
            self.power: PowerModel | None = PowerModel.from_accelerator(model.accelerator)
        except HwqError:
            self.power = None
        self.timeline = PowerTimeline()     # total power on the virtual time line (for an emulated LPM01A)
        self._epoch_s = 0.0                 # virtual seconds before the last reboot (the timeline never goes back)
        self._cache: dict[bytes, list[float]] = {}
        self._wall = time.monotonic()

    def reboot(self) -> None:
        """The timer restarts at 0; the power timeline goes on."""
        self._epoch_s = self.timeline.end_s
        self.clock = VirtualClock(self.model.clock_mhz)

    def now_s(self) -> float:
        """Virtual seconds since the emulator started (across reboots)."""
        return self._epoch_s + self.clock.cycles / (self.model.clock_mhz * 1e6)

    def _run(self, cycles: int, busy: bool) -> None:
        self.clock.advance(cycles)
        if self.power:
            self.timeline.extend(self.now_s(), self.power.total_mw(busy))

    def sync_idle(self) -> None:
        """Let the virtual clock catch up with wall time, idle."""
        now = time.monotonic()
        self._run(int((now - self._wall) * self.model.clock_mhz * 1e6), busy=False)
        self._wall = now

    # --- Accelerator -------------------------------------------------------------------------------------------
    def profile(self) -> tuple[str, str]:
        spec = self.model.accelerator
        return f"hwq emulator {spec.board} {spec.clock_mhz:g}MHz", spec.model_id

    def timestamp_us(self) -> int:
        return self.clock.us()

    def infer(self, data: bytes, n: int, warmup: int) -> Window:
        started = time.monotonic()
        warm_cycles, cycles, scores, extra = self.compute(data, n, warmup)
        begin_s = self.now_s()
        self._run(warm_cycles, busy=True)
        t0 = self.clock.us()
        self.timeline.mark(self.now_s())              # the GPIO edge an external monitor sees
        self._run(cycles, busy=True)
        t1 = self.clock.us()
        self.timeline.mark(self.now_s())
        if self.realtime:   # reply when a real board would: the warm-ups and the window have passed on the wall
            self._wait(max(0.0, self.now_s() - begin_s - (time.monotonic() - started)))
            self._wall = time.monotonic()   # that wall time is the window's, not idle time to add again
        return Window(t0, t1, scores, self.rails_mw(True), extra)

    def compute(self, data: bytes, n: int, warmup: int) -> tuple[Fraction, Fraction, list[float], list[str] | None]:
        """What ``infer n warmup`` on ``data`` does: (cycles of the warm-ups, cycles of the window, the output
        vector, extension lines for the reply). Here: the HW graph's class, the section's cycle counts."""
        if data not in self._cache:         # same input, same output: compute once per distinct input
            if len(self._cache) > 64:
                self._cache.clear()
            self._cache[data] = self.model.scores(data)
        return self.model.window_cycles(warmup), self.model.window_cycles(n), self._cache[data], None

    def rails_mw(self, busy: bool = False) -> dict[str, float] | None:
        return self.power.rails_mw(busy) if self.power else None

    def close(self) -> None:
        """Release what the accelerator holds (nothing here; the RTL board's Verilator process)."""


class Emulator:
    """Serve the protocol for one build on a fresh pty; :meth:`start` runs it in a thread, :meth:`serve` here."""

    def __init__(self, model: BuildModel, name: str = "hwq-emulator", faults: FaultConfig = FaultConfig(),
                 realtime: bool = False, rtl: bool = False) -> None:
        check_device_name(name)
        self.model, self.dut_name, self.faults = model, name, faults
        self._stop = threading.Event()
        if rtl:     # the generated circuit itself (hwq.device.rtl_board), else the HW graph on the build's cycles
            from hwq.device.rtl_board import rtl_accelerator

            self.accelerator: EmulatedAccelerator = rtl_accelerator(model, realtime, wait=self._stop.wait)
        else:
            self.accelerator = EmulatedAccelerator(model, realtime, wait=self._stop.wait)
        self.session = DutSession(self.accelerator, name)
        self._lock = threading.RLock()
        self._rng = random.Random(faults.seed)
        self._master, self._slave, self.port = open_raw_pty()
        self._thread: threading.Thread | None = None
        self.commands = 0
        self.forced_problems: tuple[str, ...] = ()    # what --force overrode (from_build_dir)
        self._pending = bytearray()                  # replies not yet written (see _flush)
        self._boot()
        self._flush()

    @classmethod
    def from_build_dir(cls, build_dir: str, force: bool = False, **settings) -> Emulator:
        """An emulator of the build in ``build_dir``; a build whose manifest is not done or whose gates failed is
        refused (one-line HwqError naming the manifest) unless ``force``. ``settings``: ``name``, ``faults``,
        ``realtime``, ``rtl``."""
        from hwq.build_check import check_build

        if "name" in settings:
            check_device_name(settings["name"])         # a bad flag before the build is even read
        inputs = check_build(build_dir, force, use="emulate")
        emulator = cls(BuildModel.from_build_dir(build_dir), **settings)
        emulator.forced_problems = inputs.problems
        return emulator

    @property
    def timeline(self) -> PowerTimeline:
        return self.accelerator.timeline

    @property
    def power(self) -> PowerModel | None:
        return self.accelerator.power

    def now_s(self) -> float:
        return self.accelerator.now_s()

    def sync_idle(self) -> None:
        """Let the virtual clock catch up with wall time, idle (called per command, and by an emulated monitor)."""
        with self._lock:
            self.accelerator.sync_idle()

    # --- life cycle ------------------------------------------------------------------------------------------------
    def start(self) -> Emulator:
        self._thread = threading.Thread(target=self.serve, name=f"emulator {self.port}", daemon=True)
        self._thread.start()
        return self

    def request_stop(self) -> None:
        """Ask :meth:`serve` to return (safe from a signal handler)."""
        self._stop.set()

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=5)
        close_quietly(self._master, self._slave)
        self.accelerator.close()

    def __enter__(self) -> Emulator:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def serve(self) -> None:
        """Answer commands until :meth:`stop` (or the pty closes)."""
        serve_link(self._read, self._handle, self._stop, self._flush)

    def _read(self) -> bytes | None:
        """What arrived (after a short wait), the virtual clock caught up with the wall once for all of it: the
        commands of one read arrived together (one catch-up per command cost the board a third of its time on
        an MNIST image's 28 commands)."""
        data = read_available(self._master, 0.1)
        if data:
            self.sync_idle()
        return data

    # --- output ----------------------------------------------------------------------------------------------------
    def _boot(self) -> None:
        self.accelerator.reboot()
        self._send(self.session.reboot(), faults=False)

    def _send(self, lines: list[str], faults: bool = True) -> None:
        data = reply_bytes(lines)
        if faults and (self.faults.drop_rate or self.faults.garble_rate):
            out = bytearray()
            for b in data:
                r = self._rng.random()
                if r < self.faults.drop_rate:
                    continue
                out.append(self._rng.randrange(0x80, 0x100) if r < self.faults.drop_rate + self.faults.garble_rate
                           else b)
            data = bytes(out)
        if faults and self.faults.reply_delay_s:
            time.sleep(self.faults.reply_delay_s)
        self._pending += data

    def _flush(self) -> None:
        """Write the replies to the commands of one read at once: a host that sent several commands together
        reads their replies in one go (one write and one wake-up instead of one per command), in order."""
        with self._lock:
            data, self._pending = bytes(self._pending), bytearray()
        if data:
            write_all(self._master, data)

    def _handle(self, command: str) -> None:
        with self._lock:
            self.commands += 1
            if self.faults.reset_at_command and self.commands == self.faults.reset_at_command:
                self._boot()
                return
            self._send(self.session.handle(command))
