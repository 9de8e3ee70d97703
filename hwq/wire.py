# SPDX-License-Identifier: BSD-3-Clause
"""The bytes on the wire, as both ends write and read them: the host (:mod:`hwq.harness`) and the board side
(:mod:`hwq.device`: the emulated board, the PYNQ agent, the emulated power monitor) share this one codec and
nothing else, so neither package imports the other.

* MLPerf Tiny's device protocol (``../shared/docs/PROTOCOL.md``): a command is printable ASCII ended by ``%``
  (at most 80 characters with it); a reply is ``\\r\\n``-ended lines closed by a line containing ``m-ready``;
  ``m-results-[...]`` carries the output vector; hwq's rails extension adds ``m-power-mw-[...]`` and
  ``m-power-window-[...]`` (``docs/harness.md``).
* The ST LPM01A power monitor's ``ascii_dec`` sample values (``6409-07`` = 6409e-7 A) and sampling frequencies.

Standard library only: the board agent imports this on a PYNQ board's Python. A malformed field raises
:class:`WireError` (a ``ValueError``, which the device session answers as ``e-[...]``; the host turns it into its
``ProtocolError``).

>>> frame_command("infer 10 1")
b'infer 10 1%'
>>> CommandFramer().feed(b"name%db load 64%")
['name', 'db load 64']
>>> parse_results_line(format_results([0, 1.0]))
(0.0, 1.0)
"""

from __future__ import annotations

import math
import re

# --- what both ends agree on ----------------------------------------------------------------------------------------
TERMINATOR = "%"                  # ends every host command
READY = "m-ready"                 # a reply is complete at the line that contains it
LINE_END = "\r\n"                 # the device ends each reply line with it; hosts drop \r and NUL
MAX_COMMAND_CHARS = 80            # the reference firmware's command buffer, terminator included
DB_CHUNK_BYTES = 31               # bytes per ``db <hex>`` command, as the reference host sends them
MAX_INPUT_BYTES = 1 << 24         # the largest ``db load N`` a device is asked to hold (16 MiB)
#: What a device prints when it (re)boots; a host seeing them mid-reply knows the device lost its input buffer.
BOOT_LINES = ("m-timestamp-mode-performance", "m-lap-us-0", "m-init-done")
BOOT_MARKERS = ("m-init-done", "m-timestamp-mode-")

_RESULTS = re.compile(r"^m-results-\[(.*)\]$")
_RAILS = re.compile(r"^m-power-(mw|window)-\[([^\]]*)\]$")


class WireError(ValueError):
    """A command or a reply field that does not follow the wire format (one line naming it)."""


# --- host -> device: commands ----------------------------------------------------------------------------------------
def frame_command(command: str) -> bytes:
    """The bytes to send for ``command``: printable ASCII without ``%``, then ``%``; at most 80 characters."""
    if not command.isascii() or not command.isprintable() or TERMINATOR in command:
        raise WireError(f"command {command[:40]!r}: expected printable ASCII without '%'")
    if len(command) + 1 > MAX_COMMAND_CHARS:
        raise WireError(f"command {command[:20]!r}...: {len(command) + 1} characters, at most "
                        f"{MAX_COMMAND_CHARS} allowed")
    return (command + TERMINATOR).encode("ascii")


def hex_chunks(data: bytes, chunk: int = DB_CHUNK_BYTES) -> list[str]:
    """The ``db <hex>`` commands that upload ``data``, ``chunk`` bytes each."""
    return [f"db {data[i:i + chunk].hex()}" for i in range(0, len(data), chunk)]


class CommandFramer:
    """The device's side of framing: split the host's byte stream into commands at ``%``; noise that never ends
    in one is dropped.

    >>> f = CommandFramer(); f.feed(b"na"), f.feed(b"me%infer 1%")
    ([], ['name', 'infer 1'])
    """

    def __init__(self) -> None:
        self._pending = b""

    def feed(self, data: bytes) -> list[str]:
        self._pending += data
        commands = []
        while TERMINATOR.encode() in self._pending:
            raw, _, self._pending = self._pending.partition(TERMINATOR.encode())
            commands.append(raw.decode("ascii", errors="replace").strip())
        if len(self._pending) > 4 * MAX_COMMAND_CHARS:
            self._pending = b""
        return commands


# --- device -> host: replies -----------------------------------------------------------------------------------------
def reply_bytes(lines: list[str]) -> bytes:
    """A reply as the device puts it on the wire: each line ended by CR LF, then ``m-ready``."""
    return "".join(f"{line}{LINE_END}" for line in list(lines) + [READY]).encode("ascii")


class LineSplitter:
    """The host's side of framing: turn a byte stream into text lines (drop ``\\r`` and NUL, split on ``\\n``,
    keep the unfinished tail). Bytes that are not ASCII (line noise) become U+FFFD, so they can never look like a
    protocol line.

    >>> s = LineSplitter(); s.feed(b"m-name-dut-[hwq]\\r\\nm-re") + s.feed(b"ady\\r\\n")
    ['m-name-dut-[hwq]', 'm-ready']
    """

    def __init__(self) -> None:
        self._tail = b""

    def feed(self, data: bytes) -> list[str]:
        """Add ``data``; return the lines completed by it (without their line ends)."""
        buf = self._tail + data.replace(b"\r", b"").replace(b"\x00", b"")
        *lines, self._tail = buf.split(b"\n")
        return [line.decode("ascii", errors="replace") for line in lines]

    @property
    def pending(self) -> bytes:
        """Bytes received after the last complete line."""
        return self._tail


def is_ready(line: str) -> bool:
    """True for the line that ends a reply (it *contains* ``m-ready``, as the reference host checks)."""
    return READY in line


def is_boot(line: str) -> bool:
    """True for a line a device prints only when it (re)boots."""
    return line.startswith(BOOT_MARKERS)


def format_results(values) -> str:
    """The ``m-results-[...]`` line: three decimals per value, as the reference firmware prints."""
    return "m-results-[" + ",".join(f"{float(v):.3f}" for v in values) + "]"


def parse_values(text: str) -> tuple[float, ...]:
    """The numbers inside ``m-results-[a,b,...]``'s brackets (an empty bracket is an empty vector)."""
    if not text.strip():
        return ()
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError:
        raise WireError(f"m-results: not a list of numbers: {text[:60]!r}") from None


def parse_results_line(line: str) -> tuple[float, ...] | None:
    """The vector of an ``m-results-[...]`` line; None for any other line."""
    m = _RESULTS.match(line)
    return parse_values(m.group(1)) if m else None


def format_rails(rails: dict[str, float]) -> str:
    """``ps=1500.000,pl=12.500``: the body of the ``m-power-`` lines (mW, three decimals)."""
    return ",".join(f"{name}={mw:.3f}" for name, mw in rails.items())


def format_rails_line(kind: str, rails: dict[str, float]) -> str:
    """``m-power-mw-[...]`` (``kind`` ``mw``: instantaneous) or ``m-power-window-[...]`` (the timed window's mean)."""
    if kind not in ("mw", "window"):
        raise WireError(f"m-power-{kind}: expected kind 'mw' or 'window'")
    return f"m-power-{kind}-[{format_rails(rails)}]"


def parse_rails_line(line: str) -> tuple[str, dict[str, float]] | None:
    """``(kind, {rail: mW})`` of an ``m-power-mw-`` or ``m-power-window-`` line; None for any other line.

    >>> parse_rails_line("m-power-mw-[ps=1500,pl=12.5]")
    ('mw', {'ps': 1500.0, 'pl': 12.5})
    """
    m = _RAILS.match(line)
    if not m:
        return None
    kind, rails = m.group(1), {}
    for item in filter(None, m.group(2).split(",")):
        name, sep, value = (part.strip() for part in item.partition("="))
        try:
            rails[name] = float(value)
        except ValueError:
            raise WireError(f"m-power-{kind}: bad rail entry {item!r}") from None
        if not sep or not name:
            raise WireError(f"m-power-{kind}: bad rail entry {item!r}")
    return kind, rails


# --- the LPM01A power monitor's values -----------------------------------------------------------------------------
#: The LPM01A's sampling frequencies (its ``freq`` command), in Hz.
LPM_FREQS_HZ = {"100k": 100_000, "50k": 50_000, "20k": 20_000, "10k": 10_000, "5k": 5000, "2k": 2000,
                "1k": 1000, "500": 500, "200": 200, "100": 100, "50": 50, "20": 20, "10": 10, "5": 5, "2": 2, "1": 1}
#: One ``ascii_dec`` value: 4-digit mantissa, signed 2-digit power of ten (``6409-07`` = 6409e-7).
LPM_VALUE = re.compile(r"(\d{4})([-+])(\d{2})")


def parse_lpm_value(text: str) -> float:
    """One ``ascii_dec`` value: ``6409-07`` -> 6.409e-4 (A in ``output current``).

    >>> parse_lpm_value("6409-07")
    0.0006409
    """
    m = LPM_VALUE.fullmatch(text.strip())
    if not m:
        raise WireError(f"LPM01A: not an ascii_dec value: {text[:20]!r}")
    return float(f"{m.group(1)}e{m.group(2)}{m.group(3)}")


def format_lpm_value(value: float) -> str:
    """The monitor's side of :func:`parse_lpm_value`: 4-digit mantissa and power of ten (``0000+00`` for zero)."""
    if value <= 0:
        return "0000+00"
    exp = math.floor(math.log10(value)) - 3
    mant = round(value / 10.0 ** exp)
    if mant >= 10000:
        mant, exp = round(mant / 10), exp + 1
    return f"{mant:04d}{'-' if exp < 0 else '+'}{abs(exp):02d}"
