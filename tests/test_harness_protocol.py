# SPDX-License-Identifier: BSD-3-Clause
"""Property-based tests of the MLPerf Tiny framing, line splitting and reply parsers (no I/O)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hwq.harness import protocol as P
from hwq.harness.errors import DeviceError, ProtocolError

printable = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E, exclude_characters="%"), max_size=79)
line_text = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=60)


@given(printable)
def test_frame_round_trip(command):
    framed = P.frame_command(command)
    assert framed.endswith(b"%") and framed.count(b"%") == 1
    assert framed[:-1].decode("ascii") == command


@given(st.text(max_size=100))
def test_frame_rejects_or_frames(command):
    try:
        framed = P.frame_command(command)
    except ProtocolError:
        assert "%" in command or not command.isascii() or not command.isprintable() or len(command) >= 80
    else:
        assert len(framed) <= P.MAX_COMMAND_CHARS


@given(st.lists(line_text, max_size=8), st.data())
def test_splitter_any_chunking(lines, data):
    """However the bytes are cut into reads, and wherever \\r and NUL appear, the same lines come out."""
    wire = b"".join(line.encode() + b"\r\n" for line in lines)
    noisy = bytearray()
    for b in wire:
        if data.draw(st.booleans(), label="nul"):
            noisy += b"\x00"
        noisy.append(b)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(noisy)), max_size=6), label="cuts"))
    splitter, got, prev = P.LineSplitter(), [], 0
    for cut in cuts + [len(noisy)]:
        got += splitter.feed(bytes(noisy[prev:cut]))
        prev = cut
    assert got == [line.replace("\r", "") for line in lines]
    assert splitter.pending == b""


@given(st.binary(max_size=200))
def test_splitter_never_fails_on_garbage(blob):
    lines = P.LineSplitter().feed(blob)
    assert all("\r" not in line and "\x00" not in line for line in lines)
    # non-ASCII noise never turns into protocol characters
    assert sum(line.count("\ufffd") for line in lines) <= sum(b >= 0x80 for b in blob)


@given(st.integers(0, 2**40), st.integers(0, 2**40), st.integers(1, 10**9), st.integers(0, 100),
       st.lists(st.floats(-1e3, 1e3, allow_nan=False), min_size=1, max_size=12), st.lists(line_text, max_size=3))
def test_parse_infer_round_trip(t0, dt, n, w, values, noise):
    noise = [x for x in noise if not x.startswith(("m-", "e-"))]
    lines = noise + [f"m-warmup-start-{w}", "m-warmup-done", f"m-infer-start-{n}", f"m-lap-us-{t0}",
                     f"m-lap-us-{t0 + dt}", "m-infer-done", P.format_results(values), "m-ready"]
    r = P.parse_infer(lines, n, w)
    assert (r.t0_us, r.t1_us, r.n, r.warmup) == (t0, t0 + dt, n, w)
    assert r.results.values == tuple(round(v, 3) for v in values) or all(
        abs(a - b) <= 5e-4 for a, b in zip(r.results.values, values))
    assert r.results.top1 in range(len(values))


@given(st.lists(st.sampled_from(["m-infer-start-5", "m-lap-us-1", "m-lap-us-x", "m-infer-done",
                                 "m-results-[1,2]", "m-results-[a]", "garbage", "m-ready"]), max_size=10))
def test_parse_infer_returns_or_raises(lines):
    """A parser returns its dataclass or raises ProtocolError, never anything else."""
    try:
        r = P.parse_infer(lines, 5, 0)
    except ProtocolError:
        return
    assert isinstance(r, P.InferResult) and r.t1_us >= r.t0_us


@given(st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters="]"), min_size=1,
               max_size=30))
def test_parse_name_and_profile(name):
    assert P.parse_name([f"m-name-dut-[{name}]", "m-ready"]).name == name
    prof = P.parse_profile(["m-profile-[fw 1.0]", f"m-model-[{name}]", "m-ready"])
    assert prof.model == name


@given(st.binary(min_size=1, max_size=200), st.integers(1, 31))
def test_hex_chunks_reassemble(data, chunk):
    cmds = P.hex_chunks(data, chunk)
    assert all(len(P.frame_command(c)) <= P.MAX_COMMAND_CHARS for c in cmds)
    assert b"".join(bytes.fromhex(c[3:]) for c in cmds) == data


def test_error_lines_raise():
    with pytest.raises(DeviceError, match="Unknown command"):
        P.parse_name(["e-[Unknown command: nme]", "m-ready"])
    with pytest.raises(ProtocolError):
        P.parse_timestamp(["m-ready"])
    assert P.parse_timestamp(["m-lap-us-42", "m-ready"]).us == 42
    assert P.parse_load(["m-[Expecting 64 bytes]", "m-ready"]) == P.LoadProgress(64, False)
    assert P.is_boot("m-init-done") and P.is_ready("xx m-ready")
