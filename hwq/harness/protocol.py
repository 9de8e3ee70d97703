# SPDX-License-Identifier: BSD-3-Clause
"""The host's reading of the MLPerf Tiny device protocol: typed reply parsers (no I/O here).

The codec both ends share (framing, line splitting, limits, the ``m-results`` and ``m-power-`` formats) is
:mod:`hwq.wire`; its names are re-exported here.

Host to device: an ASCII command ended by ``%`` (at most 80 characters). Device to host: ``\\r\\n`` lines; a
reply ends with a line containing ``m-ready``; ``e-[...]`` lines are errors. Hosts drop ``\\r`` and NUL bytes.
Every parser takes the reply's lines and returns one dataclass or raises :class:`ProtocolError` /
:class:`DeviceError`; lines a parser does not know are ignored (that is how extensions stay compatible).

>>> frame_command("infer 10 1")
b'infer 10 1%'
>>> splitter = LineSplitter()
>>> splitter.feed(b"m-name-dut-[hwq]\\r\\nm-re") + splitter.feed(b"ady\\r\\n")
['m-name-dut-[hwq]', 'm-ready']
>>> parse_name(['m-name-dut-[hwq]', 'm-ready']).name
'hwq'
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

from hwq import wire
from hwq.classes import top_class
from hwq.harness.errors import DeviceError, ProtocolError
# The codec both ends share (hwq.wire), re-exported under the names the host has always used.
from hwq.wire import (BOOT_MARKERS, DB_CHUNK_BYTES, MAX_COMMAND_CHARS, READY, TERMINATOR, LineSplitter,  # noqa: F401
                      format_results, hex_chunks, is_boot, is_ready)

_LAP = re.compile(r"^m-lap-us-(\d+)$")
_ERROR = re.compile(r"^e-\[(.*)\]$")
_NAME = re.compile(r"^m-name-dut-\[([^\]]+)\]$")
_PROFILE = re.compile(r"^m-(profile|model)-\[([^\]]+)\]$")
_EXPECT = re.compile(r"^m-\[Expecting (\d+) bytes\]$")


def host_side(codec):
    """``codec`` (a :mod:`hwq.wire` function) with its :class:`~hwq.wire.WireError` raised as the host's
    :class:`ProtocolError`, same message."""
    @functools.wraps(codec)
    def call(*args, **kwargs):
        try:
            return codec(*args, **kwargs)
        except wire.WireError as err:
            raise ProtocolError(str(err)) from None
    return call


#: The bytes to send for a command (``frame_command("infer 10 1") == b"infer 10 1%"``); ProtocolError if invalid.
frame_command = host_side(wire.frame_command)
#: The numbers of ``m-results-[a,b,...]``'s bracket; ProtocolError if they are not numbers.
parse_values = host_side(wire.parse_values)
_results_line = host_side(wire.parse_results_line)


def errors_in(lines: list[str]) -> list[str]:
    """The messages of the ``e-[...]`` lines of a reply."""
    return [m.group(1) for m in (_ERROR.match(line) for line in lines) if m]


def check_errors(lines: list[str], command: str = "") -> None:
    """Raise :class:`DeviceError` if the reply holds an ``e-[...]`` line."""
    errs = errors_in(lines)
    if errs:
        raise DeviceError(f"device answered {command!r} with error: {errs[0]}")


def parse_lap(line: str) -> int:
    """The microseconds of an ``m-lap-us-<t>`` line."""
    m = _LAP.match(line)
    if not m:
        raise ProtocolError(f"expected 'm-lap-us-<microseconds>', got {line[:60]!r}")
    return int(m.group(1))


@dataclass(frozen=True)
class NameReply:
    """``name%``: the device's name."""
    name: str


@dataclass(frozen=True)
class ProfileReply:
    """``profile%``: the firmware string and the model id."""
    profile: str
    model: str


@dataclass(frozen=True)
class Timestamp:
    """``timestamp%``: the device clock in microseconds."""
    us: int


@dataclass(frozen=True)
class LoadProgress:
    """``db load N%`` / ``db <hex>%``: bytes expected, and whether the buffer is full (``m-load-done``)."""
    expecting: int | None
    done: bool


@dataclass(frozen=True)
class Results:
    """``results%`` (or the end of ``infer``): the output vector of the last inference."""
    values: tuple[float, ...]

    @property
    def top1(self) -> int:
        """Index of the largest value, the first one on ties: the class rule of :mod:`hwq.classes`."""
        if not self.values:
            raise ProtocolError("m-results: empty vector, no top-1 class")
        return top_class(self.values)


@dataclass(frozen=True)
class InferResult:
    """``infer N W%``: N timed inferences after W warm-ups between device times t0 and t1 (microseconds)."""
    n: int
    warmup: int
    t0_us: int
    t1_us: int
    results: Results

    @property
    def elapsed_us(self) -> int:
        return self.t1_us - self.t0_us

    @property
    def throughput_per_s(self) -> float:
        if self.elapsed_us <= 0:
            raise ProtocolError(f"infer {self.n}: t1 - t0 = {self.elapsed_us} us, too short to time")
        return self.n / (self.elapsed_us / 1e6)

    @property
    def time_per_inference_us(self) -> float:
        """``(t1 - t0) / N``: the inverse of the throughput. Not the latency of one inference, which a pipelined
        accelerator takes longer for (its fill); ``infer 1`` windows time that."""
        return self.elapsed_us / self.n


def _one(lines: list[str], pattern: re.Pattern, what: str) -> re.Match:
    found = [m for m in (pattern.match(line) for line in lines) if m]
    if len(found) != 1:
        raise ProtocolError(f"expected one {what} line, got {len(found)} in {len(lines)} lines")
    return found[0]


def parse_name(lines: list[str]) -> NameReply:
    check_errors(lines, "name")
    return NameReply(_one(lines, _NAME, "'m-name-dut-[...]'").group(1))


def parse_profile(lines: list[str]) -> ProfileReply:
    check_errors(lines, "profile")
    found = {m.group(1): m.group(2) for m in (_PROFILE.match(line) for line in lines) if m}
    if "profile" not in found or "model" not in found:
        raise ProtocolError("expected 'm-profile-[...]' and 'm-model-[...]' lines in the profile reply")
    return ProfileReply(found["profile"], found["model"])


def parse_timestamp(lines: list[str]) -> Timestamp:
    check_errors(lines, "timestamp")
    laps = [parse_lap(line) for line in lines if _LAP.match(line)]
    if len(laps) != 1:
        raise ProtocolError(f"expected one 'm-lap-us-' line in the timestamp reply, got {len(laps)}")
    return Timestamp(laps[0])


def parse_load(lines: list[str]) -> LoadProgress:
    check_errors(lines, "db")
    expect = [int(m.group(1)) for m in (_EXPECT.match(line) for line in lines) if m]
    return LoadProgress(expect[0] if expect else None, any(line == "m-load-done" for line in lines))


def parse_results(lines: list[str]) -> Results:
    check_errors(lines, "results")
    found = [v for v in map(_results_line, lines) if v is not None]
    if len(found) != 1:
        raise ProtocolError(f"expected one 'm-results-[...]' line, got {len(found)} in {len(lines)} lines")
    return Results(found[0])


def parse_infer(lines: list[str], n: int, warmup: int) -> InferResult:
    """Parse the reply of ``infer n warmup``: two laps (t0, t1) after ``m-infer-start``, then results."""
    check_errors(lines, f"infer {n} {warmup}")
    try:
        start = lines.index(f"m-infer-start-{n}")
    except ValueError:
        raise ProtocolError(f"infer {n} {warmup}: no 'm-infer-start-{n}' line") from None
    laps = [parse_lap(line) for line in lines[start:] if _LAP.match(line)]
    if len(laps) != 2:
        raise ProtocolError(f"infer {n} {warmup}: expected 2 'm-lap-us-' lines after m-infer-start, got {len(laps)}")
    if "m-infer-done" not in lines[start:]:
        raise ProtocolError(f"infer {n} {warmup}: no 'm-infer-done' line")
    if laps[1] < laps[0]:
        raise ProtocolError(f"infer {n} {warmup}: t1 {laps[1]} us before t0 {laps[0]} us")
    return InferResult(n, warmup, laps[0], laps[1], parse_results(lines[start:]))
