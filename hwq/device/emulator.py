# SPDX-License-Identifier: BSD-3-Clause
"""The emulated board: a pseudo-terminal that answers the MLPerf Tiny protocol like an accelerator would.

Inference is bit-exact (the build's HW-layer graph, executed by FINN/QONNX in Python); timestamps come from a
virtual clock at the board clock: ``infer N W`` advances it by the cycles of W warm-ups, reads t0, advances it by
``fill + (N - 1) * II`` cycles (manifest: ``critical_path_cycles`` and ``max_cycles``), reads t1. So a host
measures exactly the manifest's ``estimated_fps`` (up to the microsecond rounding and the one pipeline fill).
Between commands the virtual clock also follows wall time, so ``timestamp`` moves like a real timer.

Fault injection (:class:`FaultConfig`): reply bytes dropped or replaced by line noise (non-ASCII bytes), a delay
before every reply, a reboot (boot lines, buffer lost) on the Nth command.

>>> emu = Emulator(BuildModel.from_build_dir("runs/tfc-digits/build-pynq-z2")).start()   # doctest: +SKIP
>>> emu.port, emu.stop()                                                                  # doctest: +SKIP
('/dev/pts/5', None)
"""

from __future__ import annotations

import os
import random
import select
import threading
import time
from dataclasses import dataclass

from hwq.device.model import BuildModel, VirtualClock
from hwq.device.power import PowerModel, PowerTimeline
from hwq.device.pty import close_quietly, open_raw_pty, write_all
from hwq.errors import HwqError
from hwq.harness.protocol import MAX_COMMAND_CHARS, TERMINATOR, format_results

HELP = ("hwq emulated board (MLPerf Tiny protocol)\r\n"
        "name | profile | timestamp | db load N | db HEX | db print [N] [offset] | infer N [W] | results | power | help")


@dataclass(frozen=True)
class FaultConfig:
    """Faults to inject; all off by default. Rates are per reply byte, in [0, 1]."""

    drop_rate: float = 0.0          # a reply byte is lost
    garble_rate: float = 0.0        # a reply byte becomes line noise (0x80-0xFF, never a protocol character)
    reply_delay_s: float = 0.0      # wait before every reply (a slow device)
    reset_at_command: int = 0       # reboot instead of answering the Nth command (1-based; 0: never)
    seed: int = 0                   # for the random faults, so a test is repeatable


class Emulator:
    """Serve the protocol for one build on a fresh pty; :meth:`start` runs it in a thread, :meth:`serve` here."""

    def __init__(self, model: BuildModel, name: str = "hwq-emulator", faults: FaultConfig = FaultConfig()) -> None:
        self.model, self.dut_name, self.faults = model, name, faults
        self.clock = VirtualClock(model.clock_mhz)
        try:                                # rails extension and emulated monitors need the board's power model
            self.power: PowerModel | None = PowerModel.from_manifest(model.manifest)
        except HwqError:
            self.power = None
        self.timeline = PowerTimeline()     # total power on the virtual time line (for an emulated LPM01A)
        self._epoch_s = 0.0                 # virtual seconds before the last reboot (the timeline never goes back)
        self._lock = threading.RLock()
        self._rng = random.Random(faults.seed)
        self._master, self._slave, self.port = open_raw_pty()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._buffer = bytearray()
        self._expect = 0
        self._results: list[float] = []
        self._cache: dict[bytes, list[float]] = {}
        self.commands = 0
        self._wall = time.monotonic()
        self._boot()

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

    def __enter__(self) -> Emulator:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def serve(self) -> None:
        """Answer commands until :meth:`stop` (or the pty closes)."""
        pending = b""
        while not self._stop.is_set():
            ready, _, _ = select.select([self._master], [], [], 0.1)
            if not ready:
                continue
            try:
                pending += os.read(self._master, 4096)
            except BlockingIOError:
                continue
            except OSError:
                return
            while TERMINATOR.encode() in pending:
                raw, _, pending = pending.partition(TERMINATOR.encode())
                self._handle(raw.decode("ascii", errors="replace").strip())
            if len(pending) > 4 * MAX_COMMAND_CHARS:      # noise without a terminator: drop it
                pending = b""

    # --- output ----------------------------------------------------------------------------------------------------
    def _boot(self) -> None:
        self._buffer, self._expect, self._results = bytearray(), 0, []
        self._epoch_s = self.timeline.end_s
        self.clock = VirtualClock(self.model.clock_mhz)
        self._send(["m-timestamp-mode-performance", "m-lap-us-0", "m-init-done"], faults=False)

    def _send(self, lines: list[str], faults: bool = True) -> None:
        data = "".join(f"{line}\r\n" for line in lines + ["m-ready"]).encode("ascii")
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
        write_all(self._master, data)

    # --- power -----------------------------------------------------------------------------------------------------
    def now_s(self) -> float:
        """Virtual seconds since the emulator started (across reboots)."""
        return self._epoch_s + self.clock.cycles / (self.model.clock_mhz * 1e6)

    def _run(self, cycles: int, busy: bool) -> None:
        self.clock.advance(cycles)
        if self.power:
            self.timeline.extend(self.now_s(), self.power.total_mw(busy))

    def sync_idle(self) -> None:
        """Let the virtual clock catch up with wall time, idle (called per command, and by an emulated monitor)."""
        with self._lock:
            now = time.monotonic()
            self._run(int((now - self._wall) * self.model.clock_mhz * 1e6), busy=False)
            self._wall = now

    def _power(self, args) -> list[str]:
        if not self.power:
            raise ValueError("no power_model for this board")
        return ["m-power-mw-[" + ",".join(f"{k}={v:.3f}" for k, v in self.power.rails_mw(False).items()) + "]"]

    # --- commands --------------------------------------------------------------------------------------------------
    def _handle(self, command: str) -> None:
        with self._lock:
            self._handle_locked(command)

    def _handle_locked(self, command: str) -> None:
        self.sync_idle()
        self.commands += 1
        if self.faults.reset_at_command and self.commands == self.faults.reset_at_command:
            self._boot()
            return
        if len(command) + 1 > MAX_COMMAND_CHARS:
            self._send([f"e-[Command too long: {len(command) + 1} characters]"])
            return
        words = command.split()
        verb = words[0] if words else ""
        handler = {"": lambda w: [], "name": self._name, "profile": self._profile, "timestamp": self._timestamp,
                   "db": self._db, "infer": self._infer, "results": self._results_cmd,
                   "power": self._power, "help": lambda w: [HELP]}.get(verb)
        if handler is None:
            self._send([f"e-[Unknown command: {command[:40]}]"])
            return
        try:
            self._send(handler(words[1:]))
        except (ValueError, IndexError) as err:
            self._send([f"e-[{verb}: {err}]"])

    def _name(self, args) -> list[str]:
        return [f"m-name-dut-[{self.dut_name}]"]

    def _profile(self, args) -> list[str]:
        source = self.model.manifest.get("source", {})
        model_id = os.path.basename(str(source.get("run", "hwq"))) or "hwq"
        return [f"m-profile-[hwq emulator {self.model.manifest.get('board', {}).get('name', '?')} "
                f"{self.model.clock_mhz:g}MHz]", f"m-model-[{model_id}]"]

    def _timestamp(self, args) -> list[str]:
        return [f"m-lap-us-{self.clock.us()}"]

    def _db(self, args) -> list[str]:
        if not args:
            raise ValueError("expected 'load N', 'print' or hex bytes")
        if args[0] == "load":
            n = int(args[1])
            if not 0 < n <= 1 << 24:
                raise ValueError(f"cannot allocate {n} bytes")
            self._buffer, self._expect = bytearray(), n
            return [f"m-[Expecting {n} bytes]"]
        if args[0] == "print":
            n = int(args[1]) if len(args) > 1 else 16
            off = int(args[2]) if len(args) > 2 else 0
            chunk = bytes(self._buffer[off:off + n])
            return ["m-buffer-" + "-".join(f"{b:02x}" for b in chunk[i:i + 16]) for i in range(0, len(chunk), 16)]
        data = bytes.fromhex(args[0])
        if not self._expect:
            raise ValueError("no buffer: send 'db load N' first")
        if len(self._buffer) + len(data) > self._expect:
            raise ValueError(f"{len(self._buffer) + len(data)} bytes exceed the {self._expect} expected")
        self._buffer += data
        return ["m-load-done"] if len(self._buffer) == self._expect else []

    def _infer(self, args) -> list[str]:
        n = int(args[0]) if args else 1
        w = int(args[1]) if len(args) > 1 else 0
        if n < 1 or w < 0:
            raise ValueError(f"need N >= 1 and W >= 0, got {n} {w}")
        if not self._expect or len(self._buffer) != self._expect:
            raise ValueError(f"input not loaded ({len(self._buffer)} of {self._expect} bytes)")
        if len(self._buffer) != self.model.input_bytes:
            raise ValueError(f"input has {len(self._buffer)} bytes, the accelerator takes {self.model.input_bytes}")
        key = bytes(self._buffer)
        if key not in self._cache:          # same input, same output: compute once per distinct input
            if len(self._cache) > 64:
                self._cache.clear()
            self._cache[key] = self.model.scores(key)
        self._results = self._cache[key]
        self._run(self.model.window_cycles(w), busy=True)
        t0 = self.clock.us()
        self.timeline.mark(self.now_s())              # the GPIO edge an external monitor sees
        self._run(self.model.window_cycles(n), busy=True)
        t1 = self.clock.us()
        self.timeline.mark(self.now_s())
        power = (["m-power-window-[" + ",".join(f"{k}={v:.3f}" for k, v in self.power.rails_mw(True).items()) + "]"]
                 if self.power else [])
        return [f"m-warmup-start-{w}", "m-warmup-done", f"m-infer-start-{n}", f"m-lap-us-{t0}", f"m-lap-us-{t1}",
                "m-infer-done", format_results(self._results)] + power

    def _results_cmd(self, args) -> list[str]:
        return [format_results(self._results)]
