# SPDX-License-Identifier: BSD-3-Clause
"""Nothing measured is lost, and no failed build is measured: the report's life from ``running`` to ``done``,
``failed`` or ``interrupted`` (SIGTERM and Ctrl-C to a real ``hwq measure`` process), a plot that cannot be
written, and builds whose manifest did not pass. The emulated board serves on a real pty throughout.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys

import pytest

from hwq.cli import main, sigterm_as_interrupt
from hwq.device import BuildModel, EmulatedLpm01a, Emulator, FaultConfig
from hwq.errors import HwqError, Interrupted
from hwq.harness.errors import PortError
from hwq.harness.measure import MeasureConfig, run_measure


@pytest.fixture(scope="module")
def build_model(digits_tfc_build):
    return BuildModel.from_build_dir(digits_tfc_build)


def _report(out, mode: str = "performance") -> dict:
    return json.loads((out / f"measure-{mode}.json").read_text())


def _stale_done_report(out, mode: str = "performance") -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / f"measure-{mode}.json").write_text(json.dumps({"status": "done", "windows": [{"n": 1}] * 5}))


def _derived_build(src, dst, **changes):
    """A copy of the build ``src`` whose manifest has ``changes`` (dotted keys, e.g. ``integer_range.passed``)."""
    shutil.copytree(src, dst)
    manifest = json.loads((dst / "manifest.json").read_text())
    for dotted, value in changes.items():
        *parents, key = dotted.split(".")
        node = manifest
        for name in parents:
            node = node[name]
        node[key] = value
    (dst / "manifest.json").write_text(json.dumps(manifest))
    return dst


# --- the report's life ------------------------------------------------------------------------------------------
def test_report_says_running_from_the_start_and_failed_with_the_error(digits_tfc_build, tmp_path):
    _stale_done_report(tmp_path)
    with pytest.raises(PortError, match="/nonexistent/tty"):
        run_measure(MeasureConfig(port="/nonexistent/tty", build_dir=str(digits_tfc_build), out_dir=str(tmp_path)))
    report = _report(tmp_path)
    assert report["status"] == "failed" and "windows" not in report
    assert report["error"].startswith("/nonexistent/tty: cannot open") and "\n" not in report["error"]


def test_running_report_is_on_disk_while_measuring(build_model, digits_tfc_build, tmp_path):
    _stale_done_report(tmp_path)
    seen = []
    with Emulator(build_model) as emu:
        run_measure(MeasureConfig(port=emu.port, build_dir=str(digits_tfc_build), out_dir=str(tmp_path),
                                  min_window_s=0.05, timeout_s=2.0),
                    progress=lambda msg: seen.append(_report(tmp_path)["status"]))
    assert seen and set(seen) == {"running"}
    assert _report(tmp_path)["status"] == "done"


def test_a_plot_that_cannot_be_written_does_not_cost_the_report(build_model, digits_tfc_build, tmp_path):
    (tmp_path / "latency.png").mkdir()          # the plot's path is taken: writing it fails
    warnings = []
    with Emulator(build_model) as emu:
        run_measure(MeasureConfig(port=emu.port, build_dir=str(digits_tfc_build), out_dir=str(tmp_path),
                                  min_window_s=0.05, timeout_s=2.0), progress=warnings.append)
    report = _report(tmp_path)
    assert report["status"] == "done" and len(report["windows"]) == 5 and "plot" not in report["outputs"]
    assert len(report["output_errors"]) == 1 and report["output_errors"][0].startswith("latency.png: ")
    assert any(w.startswith("warning: latency.png: ") for w in warnings)


@pytest.fixture
def ctrl_c_raises():
    """SIGINT raises KeyboardInterrupt in this process for the test, as in a terminal: a process started in the
    background by a non-interactive shell (``cmd &``, nohup) inherits SIGINT ignored, and a Ctrl-C test would
    then see nothing (measured: both SIGINT tests failed under ``bash -c 'make test' &``)."""
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, before)


def _sigint_as_in_a_terminal() -> None:
    """In the child before exec: SIGINT at its default, so Python installs its Ctrl-C handler (see above)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.parametrize("sig, status", [(signal.SIGTERM, 143), (signal.SIGINT, 130)], ids=["SIGTERM", "SIGINT"])
def test_signal_ends_measure_with_interrupted_report(build_model, digits_tfc_build, tmp_path, sig, status):
    """A real ``hwq measure`` process, stopped by SIGTERM (kill) or SIGINT (Ctrl-C) after its second window."""
    out = tmp_path / "measure"
    _stale_done_report(out)
    windows = 200           # far more than can pass between the second window's line and the signal
    with Emulator(build_model, faults=FaultConfig(reply_delay_s=0.02)) as emu:
        proc = subprocess.Popen([sys.executable, "-m", "hwq", "measure", "--port", emu.port, "--build",
                                 str(digits_tfc_build), "--out", str(out), "--windows", str(windows),
                                 "--min-window-s", "0.05", "--latency-windows", "1", "--timeout", "5"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                preexec_fn=_sigint_as_in_a_terminal)
        try:
            lines = []
            while not (lines and lines[-1].startswith(f"window 2/{windows}:")):
                line = proc.stderr.readline()
                assert line, f"hwq measure ended before its second window: {''.join(lines)}"
                lines.append(line)
            proc.send_signal(sig)
            _, stderr = proc.communicate(timeout=60)
        finally:
            proc.kill()
    assert proc.returncode == status
    name = "SIGTERM" if sig == signal.SIGTERM else "SIGINT"
    assert stderr.count("\n") == 1 and "Traceback" not in stderr
    report = _report(out)
    done = len(report["windows"])
    assert report["status"] == "interrupted" and 2 <= done < windows
    assert stderr == (f"hwq measure: interrupted ({name}); report written as 'interrupted': "
                      f"{out / 'measure-performance.json'} ({done} of {windows} windows)\n")
    assert report["summary"]["windows"] == done and (out / "latency.png").is_file()


def test_energy_interrupted_keeps_the_covered_windows(build_model, digits_tfc_build, tmp_path):
    """SIGTERM (as ``hwq`` turns it into an interruption) after the second window of an LPM01A energy run."""
    def stop_after_two(message: str) -> None:
        if message.startswith("window 2/"):
            signal.raise_signal(signal.SIGTERM)

    with Emulator(build_model) as emu, EmulatedLpm01a(emu) as monitor, sigterm_as_interrupt():
        with pytest.raises(Interrupted) as stopped:
            run_measure(MeasureConfig(port=emu.port, mode="energy", power="lpm01a", power_port=monitor.port,
                                      build_dir=str(digits_tfc_build), out_dir=str(tmp_path), min_window_s=0.05,
                                      timeout_s=3.0), progress=stop_after_two)
    assert stopped.value.exit_status == 143
    assert stopped.value.detail == (f"report written as 'interrupted': {tmp_path / 'measure-energy.json'} "
                                    "(2 of 5 windows)")
    report = _report(tmp_path, "energy")
    assert report["status"] == "interrupted" and len(report["windows"]) == 2
    assert report["summary"]["windows"] == 2 and report["summary"]["energy_per_inference_median_uJ"] > 0
    assert (tmp_path / "power-trace.csv").read_text().startswith("time_s,power_mW")


def test_accuracy_interrupted_keeps_the_images_done(build_model, digits_tfc_build, tmp_path, ctrl_c_raises):
    """Ctrl-C (SIGINT) once 50 images are done: the report keeps them and the message counts them."""
    def ctrl_c_at_50(message: str) -> None:
        if message.startswith("50/"):
            signal.raise_signal(signal.SIGINT)

    with Emulator(build_model) as emu, pytest.raises(Interrupted) as stopped:
        run_measure(MeasureConfig(port=emu.port, mode="accuracy", build_dir=str(digits_tfc_build),
                                  out_dir=str(tmp_path), samples=60, timeout_s=2.0), progress=ctrl_c_at_50)
    assert stopped.value.exit_status == 130 and stopped.value.detail.endswith("(50 of 60 images)")
    report = _report(tmp_path, "accuracy")
    assert report["status"] == "interrupted" and report["summary"]["samples"] == 50


# --- no stage consumes a failed artifact ------------------------------------------------------------------------
@pytest.mark.parametrize("changes, problem", [
    ({"status": "failed"}, "status is 'failed', expected 'done'"),
    ({"integer_range.passed": False}, "integer_range.passed is False, expected true"),
    ({"bit_exact.passed": False}, "bit_exact.passed is False, expected true"),
])
def test_measure_refuses_a_build_that_did_not_pass(digits_tfc_build, tmp_path, changes, problem):
    build = _derived_build(digits_tfc_build, tmp_path / "build", **changes)
    _stale_done_report(tmp_path / "out")
    with pytest.raises(HwqError) as refused:
        run_measure(MeasureConfig(port="/nonexistent/tty", build_dir=str(build), out_dir=str(tmp_path / "out")))
    message = str(refused.value)
    assert message.startswith(f"{build / 'manifest.json'}: refusing to measure") and problem in message
    assert "--force" in message and "\n" not in message
    assert _report(tmp_path / "out")["status"] == "failed"       # the stale 'done' is gone


def test_force_measures_it_and_says_so(build_model, digits_tfc_build, tmp_path):
    build = _derived_build(digits_tfc_build, tmp_path / "build", **{"integer_range.passed": False})
    with Emulator(build_model) as emu:
        report = run_measure(MeasureConfig(port=emu.port, build_dir=str(build), out_dir=str(tmp_path / "out"),
                                           force=True, min_window_s=0.05, timeout_s=2.0))
    assert report["status"] == "done" and report["config"]["force"] is True
    assert report["inputs"]["forced"] is True
    assert report["inputs"]["overridden_problems"] == ["integer_range.passed is False, expected true"]


def test_emulate_refuses_a_failed_build_unless_forced(digits_tfc_build, tmp_path, capsys):
    build = _derived_build(digits_tfc_build, tmp_path / "build", status="failed")
    assert main(["emulate", str(build)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"hwq emulate: error: {build / 'manifest.json'}: refusing to "
                                                   "emulate a build that did not pass (status is 'failed'")
    emu = Emulator.from_build_dir(build, force=True)
    try:
        assert emu.forced_problems == ("status is 'failed', expected 'done'",)
    finally:
        emu.stop()

