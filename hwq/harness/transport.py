# SPDX-License-Identifier: BSD-3-Clause
"""Line transport over pyserial: a device path, a pty path or a pyserial URL (``socket://host:port``, ``loop://``).

Every wait has an explicit deadline; every byte sent or received is appended to a raw transcript when one is given
(a path, or a :class:`~hwq.harness.transcript.Transcript` with its rotation settings).
A device that reboots mid-reply (its boot lines appear) raises :class:`DeviceResetError`; a vanished port raises
:class:`PortError`; garbage before a reply is skipped, and :meth:`SerialTransport.resync` re-aligns the stream.

>>> with SerialTransport("/dev/pts/3", timeout_s=5.0) as link:          # doctest: +SKIP
...     link.command("name")
['m-name-dut-[hwq-emulator]', 'm-ready']
"""

from __future__ import annotations

import time
from pathlib import Path

import serial

from hwq.harness.errors import DeviceResetError, DeviceTimeout, PortError
from hwq.harness.protocol import LineSplitter, frame_command, is_boot, is_ready
from hwq.harness.transcript import Transcript

#: The reference host waits 5 s per line and 30 s for ``infer``; hwq waits per reply, with these defaults.
DEFAULT_TIMEOUT_S = 5.0
POLL_S = 0.05


class SerialTransport:
    """Commands out, reply lines in, over one pyserial port."""

    def __init__(self, port: str, baud: int = 115200, timeout_s: float = DEFAULT_TIMEOUT_S,
                 transcript: str | Path | Transcript | None = None) -> None:
        self.port, self.timeout_s = port, timeout_s
        self.transcript = transcript if isinstance(transcript, Transcript) else Transcript(transcript)
        try:
            self._serial = serial.serial_for_url(port, baudrate=baud, timeout=POLL_S, write_timeout=timeout_s)
        except (serial.SerialException, OSError, ValueError) as err:
            self.transcript.close()
            raise PortError(f"{port}: cannot open ({_short(err)})") from None
        self._splitter = LineSplitter()
        self._lines: list[str] = []
        self.transcript.record("note", f"open {port} at {baud} baud".encode())

    def __enter__(self) -> SerialTransport:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        try:
            self._serial.close()
        finally:
            self.transcript.record("note", b"close")
            self.transcript.close()

    # --- bytes ---------------------------------------------------------------------------------------------------
    def write(self, data: bytes) -> None:
        try:
            self._serial.write(data)
            self._serial.flush()
        except (serial.SerialException, OSError) as err:
            raise PortError(f"{self.port}: write failed, port vanished? ({_short(err)})") from None
        self.transcript.record("tx", data)

    def _read_some(self) -> bytes:
        try:
            waiting = self._serial.in_waiting
            data = self._serial.read(max(1, waiting))
        except (serial.SerialException, OSError, TypeError) as err:
            raise PortError(f"{self.port}: read failed, port vanished? ({_short(err)})") from None
        self.transcript.record("rx", data)
        return data

    def read_line(self, deadline: float) -> str | None:
        """The next complete line, or None once ``deadline`` (``time.monotonic()``) has passed."""
        while not self._lines:
            if time.monotonic() >= deadline:
                return None
            self._lines.extend(self._splitter.feed(self._read_some()))
        return self._lines.pop(0)

    # --- replies -------------------------------------------------------------------------------------------------
    def send(self, command: str) -> None:
        """Send one framed command (``command`` + ``%``)."""
        self.write(frame_command(command))

    def read_reply(self, timeout_s: float | None = None, what: str = "") -> list[str]:
        """Lines up to and including the one holding ``m-ready``; raises on timeout or on a device reboot."""
        timeout_s = self.timeout_s if timeout_s is None else timeout_s
        deadline = time.monotonic() + timeout_s
        lines: list[str] = []
        while True:
            line = self.read_line(deadline)
            if line is None:
                raise DeviceTimeout(f"{self.port}: no 'm-ready' within {timeout_s:g} s after {what!r} "
                                    f"({len(lines)} lines received)")
            if is_boot(line):
                raise DeviceResetError(f"{self.port}: device rebooted during {what!r} (got {line!r})")
            lines.append(line)
            if is_ready(line):
                return lines

    def command(self, command: str, timeout_s: float | None = None) -> list[str]:
        """Send ``command`` and return its reply's lines (see :meth:`read_reply`)."""
        self.send(command)
        return self.read_reply(timeout_s, command)

    def drain(self, quiet_s: float = 0.1, timeout_s: float = 2.0) -> int:
        """Discard incoming bytes until the line has been quiet for ``quiet_s``; returns how many were dropped."""
        deadline, dropped = time.monotonic() + timeout_s, 0
        last = time.monotonic()
        while time.monotonic() < deadline and time.monotonic() - last < quiet_s:
            data = self._read_some()
            if data:
                dropped, last = dropped + len(data), time.monotonic()
        self._lines.clear()
        self._splitter = LineSplitter()
        return dropped

    def resync(self, attempts: int = 3, timeout_s: float | None = None) -> None:
        """Re-align with the device: drop what is in flight, send an empty command, wait for ``m-ready``.

        A conformant device answers any command, even an unknown or empty one, with ``m-ready``.
        """
        timeout_s = self.timeout_s if timeout_s is None else timeout_s
        for _ in range(attempts):
            self.drain()
            self.transcript.record("note", b"resync")
            self.write(b"%")
            try:
                self.read_reply(timeout_s, "resync")
                return
            except (DeviceTimeout, DeviceResetError):
                continue
        raise DeviceTimeout(f"{self.port}: no 'm-ready' after {attempts} resync attempts")


def _short(err: Exception) -> str:
    return str(err).splitlines()[0][:120] if str(err) else type(err).__name__
