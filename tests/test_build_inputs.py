# SPDX-License-Identifier: BSD-3-Clause
"""Every input of `hwq build` checked at the edge, cheap checks first: the export's verification record, the
resource fit before the bit-exactness gate, the numeric flags, and a default in every --help line."""

from __future__ import annotations

import argparse
import json
import shutil

import pytest

from hwq.cli import build_parser, main
from hwq.dataflow import STEPS, BuildConfig, run_build
from hwq.dataflow.build import UnverifiedModelError
from hwq.dataflow.errors import FoldingError
from hwq.errors import ConfigError


@pytest.fixture
def run(exported_tfc_w1a1, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(exported_tfc_w1a1, copy, ignore=shutil.ignore_patterns("build-*"))
    return copy


def _edit_export(run, change):
    report = json.loads((run / "export.json").read_text())
    change(report)
    (run / "export.json").write_text(json.dumps(report))


# --- no stage consumes a failed artifact -------------------------------------------------------------------------
def test_missing_export_record_is_refused(run):
    (run / "export.json").unlink()
    with pytest.raises(UnverifiedModelError) as err:
        run_build(run, BuildConfig(), progress=False)
    assert str(err.value) == (f"{run / 'export.json'}: not found, so {run / 'model.onnx'} was never verified "
                              f"(run 'hwq export {run}'); --force builds it anyway")
    assert not (run / "build-pynq-z2").exists() and not list(run.glob("build-*"))


def test_failed_export_verification_is_refused(run, capsys):
    _edit_export(run, lambda r: r["verification"].update(passed=False, max_abs_diff=0.35, argmax_match=0.972))
    assert main(["build", str(run), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"hwq build: error: {run / 'export.json'}: the export verification failed (max_abs_diff 0.35, "
                   f"argmax_match 0.972), so {run / 'model.onnx'} does not compute what the trained model computes; "
                   "--force builds it anyway")


def test_model_changed_after_export_is_refused(run):
    _edit_export(run, lambda r: r["outputs"].update(onnx_sha256="0" * 64))
    with pytest.raises(UnverifiedModelError, match=r"model\.onnx: its SHA-256 is not the one .*export\.json "
                                                   r"verified"):
        run_build(run, BuildConfig(), progress=False)


def test_force_builds_and_is_recorded(run, capsys):
    _edit_export(run, lambda r: r["verification"].update(passed=False, max_abs_diff=0.35))
    manifest = run_build(run, BuildConfig(force=True, verify_samples=5), progress=False, steps=STEPS[:1])
    assert manifest["status"] == "done" and manifest["config"]["force"] is True
    check = manifest["source"]["export_check"]
    assert check["status"] == "overridden (--force)" and "export verification failed" in check["problem"]
    assert "warning: building an unverified model (--force)" in capsys.readouterr().err


# --- cheap checks first: resource fit before the bit-exactness gate ----------------------------------------------
def test_a_model_that_does_not_fit_stops_before_the_gate(run):
    with pytest.raises(FoldingError) as err:
        run_build(run, BuildConfig(target_fps=1e9, verify_samples=100), progress=False)
    message = str(err.value)
    assert "needs " in message and " LUT, may use 42,560 (80 % of 53,200): over by " in message
    manifest = json.loads((run / "build-pynq-z2.failed" / "manifest.json").read_text())
    names = [s["name"] for s in manifest["steps"]]
    assert names[-1] == "fold" and "verify_bit_exact" not in names and "bit_exact" not in manifest
    assert names.index("fold") < [n for n, _ in STEPS].index("verify_bit_exact")


# --- numeric flags and the other inputs ------------------------------------------------------------------------
@pytest.mark.parametrize("flags, message", [
    (["--target-fps", "nan"], "target_fps (--target-fps): expected a finite number > 0, got nan"),
    (["--target-fps", "-5"], "target_fps (--target-fps): expected a finite number > 0, got -5.0"),
    (["--target-fps", "inf"], "target_fps (--target-fps): expected a finite number > 0, got inf"),
    (["--verify-samples", "0"], "verify_samples (--verify-samples): expected an integer >= 1, got 0"),
    (["--verify-samples", "361"], "verify_samples (--verify-samples) 361: the digits test split has 360 images"),
    (["--backend", "open", "--tree-levels-per-stage", "-1"],
     "tree_levels_per_stage (--tree-levels-per-stage): expected an integer >= 0 and <= 32, got -1"),
    (["--backend", "open", "--verify-samples", "0"],
     "verify_samples (--verify-samples): expected an integer >= 1, got 0"),
    (["--simulator", "verilator"], "--simulator: only for --backend open"),
    (["--no-synth"], "--no-synth: only for --backend open"),
    (["--folding", "no-such-folding.json"], "folding_file (--folding) no-such-folding.json: file not found"),
    (["--board", "icebreaker"], "board 'icebreaker' is built by the open backend (shell: open): add --backend open"),
])
def test_bad_flags_are_one_line_errors(run, capsys, flags, message):
    assert main(["build", str(run), "--no-progress", *flags]) == 2
    err = capsys.readouterr().err
    assert err == f"hwq build: error: {message}\n"
    assert not list(run.glob("build-*"))


def test_config_dataclasses_check_their_ranges():
    from hwq.rtl.build import OpenBuildConfig

    with pytest.raises(ConfigError, match=r"^p_stall: expected a finite number >= 0 and < 1, got 1\.0$"):
        OpenBuildConfig(p_stall=1.0)
    with pytest.raises(ConfigError, match=r"^fit_fraction: expected a finite number > 0 and <= 1, got 1\.5$"):
        BuildConfig(fit_fraction=1.5)
    with pytest.raises(ConfigError, match=r"^verify_samples \(--verify-samples\): expected an integer >= 1, "
                                          r"got True$"):
        BuildConfig(verify_samples=True)
    with pytest.raises(ConfigError, match=r"^board: expected str, got 7$"):
        BuildConfig(board=7)  # e.g. a recipe's `build: {board: 7}`


def test_every_build_flag_shows_its_default():
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    build = sub.choices["build"]
    for action in build._actions:
        if action.option_strings and action.dest != "help":
            assert "default" in (action.help or ""), action.option_strings
