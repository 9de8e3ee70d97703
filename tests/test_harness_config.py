# SPDX-License-Identifier: BSD-3-Clause
"""Every input of ``hwq measure`` and ``hwq emulate`` is checked at the edge: one line naming the flag and what
was expected, exit status 2, before a port is opened or a file is written. The Python API gives the same error
(the check lives in ``MeasureConfig`` and ``FaultConfig``). Every option's ``--help`` shows its default.
"""

from __future__ import annotations

import os

import pytest

from hwq.cli import build_parser, main
from hwq.device import FaultConfig
from hwq.errors import ConfigError
from hwq.harness.measure import MeasureConfig


@pytest.mark.parametrize("flags, expected", [
    (["--samples", "-5"], "--samples -5: expected an integer >= 1 (or none: the whole test split)"),
    (["--samples", "0"], "--samples 0: expected an integer >= 1"),
    (["--baud", "0"], "--baud 0: expected an integer >= 1"),
    (["--timeout", "0"], "--timeout 0.0: expected a number of seconds > 0"),
    (["--timeout", "nan"], "--timeout nan: expected a number of seconds > 0"),
    (["--windows", "0"], "--windows 0: expected an integer >= 1"),
    (["--latency-windows", "0"], "--latency-windows 0: expected an integer >= 1"),
    (["--min-window-s", "-1"], "--min-window-s -1.0: expected a number of seconds >= 0.001"),
    (["--min-window-s", "1e-9"], "--min-window-s 1e-09: expected a number of seconds >= 0.001"),
    (["--warmup", "-1"], "--warmup -1: expected an integer >= 0"),
    (["--input-bytes", "0"], "--input-bytes 0: expected an integer in [1, 16777216]"),
    (["--power-voltage", "5"], "--power-voltage 5.0: expected a number of volts in [1.8, 3.3]"),
    (["--transcript-max-mb", "0"], "--transcript-max-mb 0.0: expected a number of MB > 0"),
    (["--transcript-keep", "-1"], "--transcript-keep -1: expected an integer >= 0"),
])
def test_measure_flag_out_of_range_is_one_line(tmp_path, capsys, flags, expected):
    out = tmp_path / "out"
    code = main(["measure", "--port", "/nonexistent/tty", "--input-bytes", "64", "--out", str(out), *flags])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith(f"hwq measure: error: {expected}") and err.count("\n") == 1
    assert not out.exists()                     # refused before anything was written


@pytest.mark.parametrize("flags, expected", [
    (["--drop-rate", "2"], "--drop-rate 2.0: expected a number in [0, 1]"),
    (["--garble-rate", "-0.1"], "--garble-rate -0.1: expected a number in [0, 1]"),
    (["--drop-rate", "0.6", "--garble-rate", "0.6"], "expected a sum <= 1"),
    (["--reply-delay", "-1"], "--reply-delay -1.0: expected a number of seconds >= 0"),
    (["--reset-at", "-3"], "--reset-at -3: expected an integer >= 0 (0: never)"),
    (["--seed", "-1"], "--seed -1: expected an integer >= 0"),
])
def test_emulate_flag_out_of_range_is_one_line(tmp_path, capsys, flags, expected):
    code = main(["emulate", str(tmp_path / "no-build"), *flags])        # refused before the build is read
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("hwq emulate: error: ") and expected in err and err.count("\n") == 1


def test_emulate_name_must_fit_the_reply(tmp_path, capsys):
    assert main(["emulate", str(tmp_path / "no-build"), "--name", "a]b"]) == 2
    assert "--name 'a]b': expected 1-40 printable ASCII characters" in capsys.readouterr().err


def test_python_api_shares_the_check():
    with pytest.raises(ConfigError, match=r"^--samples -5: expected an integer >= 1"):
        MeasureConfig(port="/dev/pts/9", samples=-5)
    with pytest.raises(ConfigError, match=r"^--windows True: expected an integer"):      # not a bool
        MeasureConfig(port="/dev/pts/9", windows=True)
    with pytest.raises(ConfigError, match=r"^MeasureConfig.max_n 0: expected an integer >= 1"):
        MeasureConfig(port="/dev/pts/9", max_n=0)
    with pytest.raises(ConfigError, match=r"^--drop-rate 2: expected a number in \[0, 1\]"):
        FaultConfig(drop_rate=2)
    assert MeasureConfig(port="/dev/pts/9", min_window_s=1).min_window_s == 1        # YAML's integers are fine


def _cannot_write_cases(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    yield blocker / "out"                       # a folder under a file: cannot be created
    if os.geteuid() != 0:                       # root writes into read-only folders; others cannot
        read_only = tmp_path / "read-only"
        read_only.mkdir(mode=0o555)
        yield read_only


def test_out_that_cannot_be_written_is_refused_before_measuring(tmp_path, capsys):
    for out in _cannot_write_cases(tmp_path):
        code = main(["measure", "--port", "/nonexistent/tty", "--input-bytes", "64", "--out", str(out)])
        err = capsys.readouterr().err
        assert code == 2 and err.startswith(f"hwq measure: error: --out {out}: cannot write the report there (")
        assert err.count("\n") == 1 and "/nonexistent/tty" not in err      # the port was never tried


@pytest.mark.parametrize("verb", ["measure", "emulate"])
def test_every_option_help_shows_its_default(verb):
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "verb").choices[verb]
    for action in sub._actions:
        if not action.option_strings or action.dest in ("help", "port"):      # --port is required
            continue
        assert "default" in (action.help or ""), f"hwq {verb} {action.option_strings[0]}: no default in --help"
    text = sub.format_help()
    assert "%(default)" not in text and ("(default: 5)" in text if verb == "measure" else "(default: 0.0)" in text)
