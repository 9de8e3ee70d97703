# SPDX-License-Identifier: BSD-3-Clause
"""The pseudo-terminal an emulated device (board or power monitor) serves on: the stand-in for a UART."""

from __future__ import annotations

import fcntl
import os
import select
import time
import tty


def open_raw_pty() -> tuple[int, int, str]:
    """A raw pty pair: ``(master, slave, slave_path)``; the device writes the non-blocking master, a host opens
    ``slave_path`` with pyserial like any serial port.

    >>> master, slave, path = open_raw_pty()   # doctest: +SKIP
    >>> path                                  # doctest: +SKIP
    '/dev/pts/4'
    """
    master, slave = os.openpty()
    tty.setraw(slave)
    tty.setraw(master)
    fcntl.fcntl(master, fcntl.F_SETFL, fcntl.fcntl(master, fcntl.F_GETFL) | os.O_NONBLOCK)
    return master, slave, os.ttyname(slave)


def write_all(master: int, data: bytes, timeout_s: float = 5.0) -> None:
    """Write ``data`` to the pty; what nobody reads within ``timeout_s`` is lost, as on a UART."""
    deadline = time.monotonic() + timeout_s
    while data and time.monotonic() < deadline:
        try:
            data = data[os.write(master, data):]
        except BlockingIOError:
            select.select([], [master], [], 0.05)
        except OSError:  # the pty closed under us
            return


def close_quietly(*fds: int) -> None:
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass


def read_available(master: int, timeout_s: float = 0.1) -> bytes | None:
    """What arrived on the pty within ``timeout_s`` (``b""`` if nothing), or None once the pty is closed."""
    ready, _, _ = select.select([master], [], [], timeout_s)
    if not ready:
        return b""
    try:
        return os.read(master, 4096)
    except BlockingIOError:
        return b""
    except OSError:
        return None


class PtyLink:
    """A device's end of a fresh raw pty as a link (``read``/``write``): hosts open :attr:`path` with pyserial."""

    def __init__(self) -> None:
        self._master, self._slave, self.path = open_raw_pty()

    def read(self) -> bytes | None:
        return read_available(self._master, 0.1)

    def write(self, data: bytes) -> None:
        write_all(self._master, data)

    def close(self) -> None:
        close_quietly(self._master, self._slave)
