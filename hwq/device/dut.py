# SPDX-License-Identifier: BSD-3-Clause
"""The device side of the MLPerf Tiny protocol, apart from what computes: one session serves any accelerator.

:class:`DutSession` keeps the protocol state of a device (the ``db`` input buffer, the last results) and turns
each command into reply lines; an :class:`Accelerator` does the inference and keeps the time. The emulated board
(:mod:`hwq.device.emulator`: the build's HW graph on a virtual clock) and the PYNQ on-board agent
(:mod:`hwq.device.pynq_agent`: a FINN overlay on a real clock) are two accelerators behind the same session, so
both answer exactly the same protocol. :func:`serve_link` runs a session on any byte link.

Only the standard library and :mod:`hwq.wire` (the codec the host shares) are imported here: this module also runs
on a board.

>>> class Echo:                     # the smallest accelerator: one input byte, the class is that byte mod 2
...     name, input_bytes = "echo", 1
...     def profile(self): return ("echo firmware", "echo01")
...     def timestamp_us(self): return 0
...     def infer(self, data, n, warmup): return Window(0, n, [1.0 - data[0] % 2, float(data[0] % 2)])
...     def rails_mw(self, busy=False): return None
>>> s = DutSession(Echo())
>>> s.handle("db load 1"), s.handle("db 03"), s.handle("infer 5 0")[-1]
(['m-[Expecting 1 bytes]'], ['m-load-done'], 'm-results-[0.000,1.000]')
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Callable, Protocol

from hwq.wire import (BOOT_LINES, MAX_COMMAND_CHARS, MAX_INPUT_BYTES, CommandFramer, format_results,  # noqa: F401
                      format_rails, format_rails_line, reply_bytes)

HELP = ("{name} (MLPerf Tiny protocol)\r\n"
        "name | profile | timestamp | db load N | db HEX | db print [N] [offset] | infer N [W] | results | power | help")


@dataclass(frozen=True)
class Window:
    """What an accelerator reports for ``infer N W``: the timer around the N timed inferences, the output vector
    of the last one, and, where the board senses power, the average power of each rail over the window (mW)."""

    t0_us: int
    t1_us: int
    scores: list[float]
    rails_mw: dict[str, float] | None = None
    extra: list[str] | None = None      # extension lines after the results (the RTL board's ``m-rtl-[...]``)


class Accelerator(Protocol):
    """What a :class:`DutSession` needs from the thing that infers."""

    input_bytes: int            # size of one input, in the accelerator's layout

    def profile(self) -> tuple[str, str]:
        """(firmware string, model id) for ``profile%``."""

    def timestamp_us(self) -> int:
        """The device's microsecond timer."""

    def infer(self, data: bytes, n: int, warmup: int) -> Window:
        """Run ``warmup`` untimed then ``n`` timed inferences on ``data``; raise :class:`AcceleratorError`."""

    def rails_mw(self, busy: bool = False) -> dict[str, float] | None:
        """Instantaneous power per rail (mW), or None where the board has no power sensing."""


class AcceleratorError(Exception):
    """The accelerator failed on a command (a DMA that does not finish, a wrong input); answered as ``e-[...]``."""


class DutSession:
    """Protocol state of one device and the reply lines of each command (``m-ready`` is the link's to add)."""

    def __init__(self, accelerator: Accelerator, name: str = "hwq") -> None:
        self.accelerator, self.name = accelerator, name
        self.reboot()

    def reboot(self) -> list[str]:
        """Forget the input buffer and results, as a power cycle does; the boot lines a device prints."""
        self._buffer, self._expect, self._results = bytearray(), 0, []
        return list(BOOT_LINES)

    def handle(self, command: str) -> list[str]:
        """The reply lines for one command (without its ``%``); errors become ``e-[...]`` lines."""
        if len(command) + 1 > MAX_COMMAND_CHARS:
            return [f"e-[Command too long: {len(command) + 1} characters]"]
        words = command.split()
        verb = words[0] if words else ""
        handler: Callable[[list[str]], list[str]] | None = {
            "": lambda w: [], "name": self._name, "profile": self._profile, "timestamp": self._timestamp,
            "db": self._db, "infer": self._infer, "results": self._results_cmd, "power": self._power,
            "help": lambda w: [HELP.format(name=self.name)]}.get(verb)
        if handler is None:
            return [f"e-[Unknown command: {command[:40]}]"]
        try:
            return handler(words[1:])
        except (ValueError, IndexError, AcceleratorError) as err:
            return [f"e-[{verb}: {err}]"]

    # --- commands --------------------------------------------------------------------------------------------------
    def _name(self, args) -> list[str]:
        return [f"m-name-dut-[{self.name}]"]

    def _profile(self, args) -> list[str]:
        firmware, model_id = self.accelerator.profile()
        return [f"m-profile-[{firmware}]", f"m-model-[{model_id}]"]

    def _timestamp(self, args) -> list[str]:
        return [f"m-lap-us-{self.accelerator.timestamp_us()}"]

    def _db(self, args) -> list[str]:
        if not args:
            raise ValueError("expected 'load N', 'print' or hex bytes")
        if args[0] == "load":
            n = int(args[1])
            if not 0 < n <= MAX_INPUT_BYTES:
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
        if len(self._buffer) != self.accelerator.input_bytes:
            raise ValueError(f"input has {len(self._buffer)} bytes, the accelerator takes "
                             f"{self.accelerator.input_bytes}")
        window = self.accelerator.infer(bytes(self._buffer), n, w)
        self._results = list(window.scores)
        power = [] if window.rails_mw is None else [format_rails_line("window", window.rails_mw)]
        return [f"m-warmup-start-{w}", "m-warmup-done", f"m-infer-start-{n}", f"m-lap-us-{window.t0_us}",
                f"m-lap-us-{window.t1_us}", "m-infer-done", format_results(self._results)] + power + \
            list(window.extra or [])

    def _results_cmd(self, args) -> list[str]:
        return [format_results(self._results)]

    def _power(self, args) -> list[str]:
        rails = self.accelerator.rails_mw(False)
        if rails is None:
            raise ValueError("this board reports no power rails")
        return [format_rails_line("mw", rails)]


def serve_link(read: Callable[[], bytes | None], handle: Callable[[str], None], stop: threading.Event,
               flush: Callable[[], None] | None = None) -> None:
    """Feed every command arriving on a link to ``handle`` until ``stop`` is set or ``read`` returns None (the
    link closed). ``read`` waits a short while and returns what arrived (possibly nothing); ``flush``, if given,
    is called after the commands of each read (a link that holds its replies writes them then)."""
    framer = CommandFramer()
    while not stop.is_set():
        data = read()
        if data is None:
            return
        for command in framer.feed(data):
            handle(command)
        if flush is not None:
            flush()
