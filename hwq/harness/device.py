# SPDX-License-Identifier: BSD-3-Clause
"""A device under test with typed verbs over a :class:`SerialTransport`.

Each verb sends one command (``load`` several), parses the reply into a dataclass, and on a timeout, a garbled
reply or an error line re-synchronises and retries (``retries`` times). A device reboot re-synchronises and then
raises :class:`DeviceResetError`: the device has lost its input buffer, so the caller decides what to redo.

>>> with Device.open("/dev/pts/3") as dut:                                   # doctest: +SKIP
...     dut.name(), dut.load(bytes(64)), dut.infer(1000, 10).throughput_per_s
('hwq-emulator', LoadProgress(expecting=64, done=True), 12500000.0)
"""

from __future__ import annotations

from collections import deque
from pathlib import Path
from typing import Callable, Iterable, Iterator, TypeVar

from hwq.harness import protocol as P
from hwq.harness.errors import DeviceError, DeviceResetError, DeviceTimeout, ProtocolError
from hwq.harness.transcript import Transcript
from hwq.harness.transport import DEFAULT_TIMEOUT_S, SerialTransport
from hwq.wire import frame_command

T = TypeVar("T")
#: The reference host allows 30 s for ``infer``; a window is sized to last about 10 s of device time.
INFER_TIMEOUT_S = 30.0
#: Reply bytes a pipelined run lets the device owe at most: half a pty's 4 KiB buffer (serial drivers hold as much),
#: so that the device never blocks writing replies the host has not read yet while the host blocks writing commands.
IN_FLIGHT_REPLY_BYTES = 2048


class Device:
    """Typed MLPerf Tiny verbs: ``name``, ``profile``, ``timestamp``, ``load``, ``infer``, ``results``."""

    def __init__(self, transport: SerialTransport, retries: int = 2) -> None:
        self.link, self.retries = transport, retries
        self.recoveries: list[str] = []    # one line per recovered fault, for the report
        self.last_reply: list[str] = []    # lines of the last reply (extension lines such as m-power-window-)

    @classmethod
    def open(cls, port: str, baud: int = 115200, timeout_s: float = DEFAULT_TIMEOUT_S,
             transcript: str | Path | Transcript | None = None, retries: int = 2) -> Device:
        """Open ``port`` (path or pyserial URL) and re-synchronise with whatever is on the other end."""
        dev = cls(SerialTransport(port, baud, timeout_s, transcript), retries)
        try:
            dev.link.resync()
        except BaseException:           # no answer, or Ctrl-C while waiting: do not leak the open port
            dev.close()
            raise
        return dev

    def __enter__(self) -> Device:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.link.close()

    def _exchange(self, command: str, parse: Callable[[list[str]], T], timeout_s: float | None = None) -> T:
        for attempt in range(self.retries + 1):
            try:
                self.last_reply = self.link.command(command, timeout_s)
                return parse(self.last_reply)
            except DeviceResetError as err:
                self.recoveries.append(f"{command}: {err}")
                self.link.resync()
                raise
            except (DeviceTimeout, ProtocolError, DeviceError) as err:
                if attempt == self.retries:
                    raise
                self.recoveries.append(f"{command}: {err} (retried)")
                self.link.resync()
        raise AssertionError("unreachable")

    def name(self) -> str:
        return self._exchange("name", P.parse_name).name

    def profile(self) -> P.ProfileReply:
        return self._exchange("profile", P.parse_profile)

    def timestamp(self) -> int:
        return self._exchange("timestamp", P.parse_timestamp).us

    def results(self) -> P.Results:
        return self._exchange("results", P.parse_results)

    def load(self, data: bytes, chunk: int = P.DB_CHUNK_BYTES) -> P.LoadProgress:
        """Upload ``data`` with ``db load N`` and ``db <hex>`` commands of ``chunk`` bytes; checks ``m-load-done``.

        A fault in the middle restarts the whole upload (``db load`` resets the device's buffer).
        """
        if not data:
            raise ProtocolError("load: no bytes to send")
        for attempt in range(self.retries + 1):
            try:
                return self._load_once(data, chunk)
            except (DeviceTimeout, ProtocolError, DeviceError) as err:
                if attempt == self.retries:
                    raise
                self.recoveries.append(f"load {len(data)} bytes: {err} (restarted)")
                self.link.resync()
        raise AssertionError("unreachable")

    def _load_once(self, data: bytes, chunk: int) -> P.LoadProgress:
        progress = None
        for i, cmd in enumerate(_load_commands(data, chunk)):
            progress = self._check_load_reply(data, chunk, i, self.link.command(cmd))
        return progress

    def _check_load_reply(self, data: bytes, chunk: int, i: int, reply: list[str]) -> P.LoadProgress:
        """Reply ``i`` of an upload: ``db load N`` (i = 0) answers expecting N; each ``db <hex>`` chunk answers
        ``m-load-done`` after the last chunk only."""
        progress = P.parse_load(reply)
        if i == 0:
            if progress.expecting != len(data):
                raise ProtocolError(f"{self.link.port}: 'db load {len(data)}' answered expecting "
                                    f"{progress.expecting}")
            return progress
        last = i - 1 == (len(data) - 1) // chunk
        if progress.done != last:
            raise ProtocolError(f"{self.link.port}: m-load-done {'missing' if last else 'early'} "
                                f"after {min(len(data), i * chunk)} of {len(data)} bytes")
        return P.LoadProgress(len(data), progress.done)

    def load_and_infer(self, data: bytes, n: int = 1, warmup: int = 0, chunk: int = P.DB_CHUNK_BYTES,
                       timeout_s: float = INFER_TIMEOUT_S) -> P.InferResult:
        """:meth:`load` then :meth:`infer`, pipelined: every command is sent at once and the replies are read after
        (one input of :meth:`load_and_infer_each`)."""
        return next(self.load_and_infer_each([data], n, warmup, chunk, timeout_s))

    def load_and_infer_each(self, inputs: Iterable[bytes], n: int = 1, warmup: int = 0,
                            chunk: int = P.DB_CHUNK_BYTES, timeout_s: float = INFER_TIMEOUT_S,
                            in_flight_reply_bytes: int = IN_FLIGHT_REPLY_BYTES) -> Iterator[P.InferResult]:
        """:meth:`load` then :meth:`infer` for each input in turn, pipelined: an input's commands go out in one
        write, and the next inputs' are sent before the replies to the earlier ones are read, so that host and
        device work at the same time. Each reply is checked as :meth:`load` and :meth:`infer` check it; the
        results come in input order.

        How many inputs are in flight: one until a reply has been read, then as many as keep their replies (at
        the largest size seen so far) within ``in_flight_reply_bytes``. That bound, not the commands' size, is
        what keeps the link from locking up: the device always has room to write its replies (so it goes on
        reading commands) while the host is still writing.

        For a device whose input buffer holds what is in flight (``hwq emulate``, the PYNQ agent; a
        microcontroller's UART may drop what arrives while it is busy). A fault re-synchronises (dropping every
        reply in flight) and repeats each input in flight command by command (``load``, ``infer``, with their
        retries), then goes on pipelined; a reboot re-synchronises and raises :class:`DeviceResetError` after the
        results already yielded (the caller goes on from the first input not answered)."""
        if n < 1 or warmup < 0:
            raise ProtocolError(f"infer {n} {warmup}: need n >= 1 and warmup >= 0")
        source = iter(inputs)
        upcoming = next(source, None)
        flight: deque[tuple[bytes, list[str]]] = deque()       # inputs sent, replies not read yet
        reply_bytes = 0                                         # the largest reply of one input so far
        while flight or upcoming is not None:
            while upcoming is not None and (not flight or reply_bytes and
                                            (len(flight) + 1) * reply_bytes <= in_flight_reply_bytes):
                commands = _load_commands(upcoming, chunk) + [f"infer {n} {warmup}"]
                self.link.write(b"".join(frame_command(cmd) for cmd in commands))
                flight.append((upcoming, commands))
                upcoming = next(source, None)
            data, commands = flight.popleft()
            try:
                result, size = self._read_pipelined(data, chunk, commands, n, warmup, timeout_s)
            except DeviceResetError as err:
                self.recoveries.append(f"pipelined load + infer: {err}")
                self.link.resync()
                raise
            except (DeviceTimeout, ProtocolError, DeviceError) as err:
                self.recoveries.append(f"pipelined load + infer: {err} (repeated command by command)")
                self.link.resync()                   # the replies of every input in flight are dropped with it
                redo = [data] + [item[0] for item in flight]
                flight.clear()
                for again in redo:
                    self.load(again, chunk)
                    yield self.infer(n, warmup, timeout_s)
                continue
            reply_bytes = max(reply_bytes, size)
            yield result

    def _read_pipelined(self, data: bytes, chunk: int, commands: list[str], n: int, warmup: int,
                        timeout_s: float) -> tuple[P.InferResult, int]:
        """The replies to one input's commands, checked: the infer result and the replies' size on the wire."""
        replies = [self.link.read_reply(timeout_s if cmd.startswith("infer") else None, cmd) for cmd in commands]
        for i, reply in enumerate(replies[:-1]):
            self._check_load_reply(data, chunk, i, reply)
        self.last_reply = replies[-1]
        size = sum(len(line) + 2 for reply in replies for line in reply)       # each line ends in \r\n
        return P.parse_infer(replies[-1], n, warmup), size

    def infer(self, n: int, warmup: int = 0, timeout_s: float = INFER_TIMEOUT_S) -> P.InferResult:
        """Run ``warmup`` untimed and ``n`` timed inferences on the loaded input."""
        if n < 1 or warmup < 0:
            raise ProtocolError(f"infer {n} {warmup}: need n >= 1 and warmup >= 0")
        return self._exchange(f"infer {n} {warmup}", lambda lines: P.parse_infer(lines, n, warmup), timeout_s)


def _load_commands(data: bytes, chunk: int) -> list[str]:
    """``db load N`` and the ``db <hex>`` commands of ``data`` in ``chunk``-byte pieces."""
    return [f"db load {len(data)}"] + P.hex_chunks(data, chunk)
