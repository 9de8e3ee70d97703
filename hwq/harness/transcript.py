# SPDX-License-Identifier: BSD-3-Clause
"""The raw transcript of a serial link: one line per read or write, appended across runs, rotated beyond a cap.

Each line is ``<unix time> <tx|rx|note> <bytes as a Python literal>``. When the next line would take
``transcript.log`` over ``max_bytes``, the file is compressed into ``transcript.1.log.gz`` (older parts move up
to ``transcript.2.log.gz`` ..., the oldest beyond ``keep`` is deleted) and a fresh ``transcript.log`` begins. So
the newest bytes are always in plain text and the folder never holds more than about
``max_bytes * (1 + keep / compression ratio)``.

The transcript is a record, not a result: when it cannot be written (a full disk), recording stops, the reason is
kept in :attr:`Transcript.error` for the report, and the measurement goes on.

>>> t = Transcript("measure/transcript.log", max_bytes=10**6, keep=3)       # doctest: +SKIP
>>> t.record("tx", b"name%"); t.close()                                    # doctest: +SKIP
"""

from __future__ import annotations

import gzip
import shutil
import time
from pathlib import Path

from hwq._io import write_atomic
from hwq.errors import os_error_message

DEFAULT_MAX_BYTES = 10_000_000
DEFAULT_KEEP = 5


class Transcript:
    """An append-only log of the bytes exchanged, kept under ``max_bytes`` by rotation into gzip parts."""

    def __init__(self, path: str | Path | None, max_bytes: int = DEFAULT_MAX_BYTES, keep: int = DEFAULT_KEEP) -> None:
        self.path = Path(path) if path else None
        self.max_bytes, self.keep = max_bytes, keep
        self.error: str | None = None      # why recording stopped, if it did
        self._file = None
        self._size = 0
        if self.path:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._open()

    def part(self, k: int) -> Path:
        """The k-th older part: ``transcript.<k>.log.gz`` (1 is the newest)."""
        return self.path.with_name(f"{self.path.stem}.{k}{self.path.suffix}.gz")

    def record(self, direction: str, data: bytes) -> None:
        if not self._file or not data:
            return
        line = f"{time.time():.6f} {direction} {data!r}\n"
        try:
            if self._size and self._size + len(line) > self.max_bytes:
                self._rotate()
            self._file.write(line)
            self._file.flush()
            self._size += len(line)
        except OSError as err:
            self._give_up(err)

    def close(self) -> None:
        if self._file:
            try:
                self._file.close()
            except OSError as err:
                self._give_up(err)
            self._file = None

    # --- rotation ------------------------------------------------------------------------------------------------
    def _open(self) -> None:
        self._file = self.path.open("a", encoding="ascii")
        self._size = self._file.tell()

    def _rotate(self) -> None:
        """Compress the full file into part 1 (after moving the older parts up), then start an empty one."""
        self._file.close()
        self._file = None
        if self.keep:
            self.part(self.keep).unlink(missing_ok=True)
            for k in range(self.keep - 1, 0, -1):
                if self.part(k).exists():
                    self.part(k).replace(self.part(k + 1))
            write_atomic(self.part(1), self._compress_into)
        self.path.unlink(missing_ok=True)
        self._open()

    def _compress_into(self, target: Path) -> None:
        with self.path.open("rb") as src, gzip.open(target, "wb") as dst:
            shutil.copyfileobj(src, dst)

    def _give_up(self, err: OSError) -> None:
        where = "" if err.filename else f"{self.path}: "
        self.error = f"transcript stopped: {where}{os_error_message(err)}"
        if self._file:
            try:
                self._file.close()
            except OSError:
                pass
        self._file = None
