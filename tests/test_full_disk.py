# SPDX-License-Identifier: BSD-3-Clause
"""A full disk and a read-only folder, for real: each stage runs on a small tmpfs (ENOSPC when it fills, EROFS
when it is remounted read-only). Every stage (measure too) answers with one line naming the file, exit status 2,
and what was there before stays as it was.

Mounting needs root (CI runs as root) and a kernel that allows it in the container; elsewhere these tests are
skipped. ``tests/test_train_runs.py`` covers the full disk without root (a file-size limit, EFBIG).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest


def _mount_tmpfs(where: Path, size_kb: int) -> bool:
    where.mkdir(parents=True, exist_ok=True)
    return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kb}k", "tmpfs", str(where)],
                          capture_output=True).returncode == 0


@pytest.fixture
def small_fs(tmp_path):
    """A 4 MB tmpfs at ``tmp_path/fs`` (skipped where mounting is not allowed); unmounted afterwards."""
    where = tmp_path / "fs"
    if not _mount_tmpfs(where, 4096):
        pytest.skip("mounting a tmpfs is not allowed here (needs root in a privileged container)")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], capture_output=True)


def _fill(fs: Path, leave_kb: int) -> None:
    """Fill the file system until only about ``leave_kb`` kB are free."""
    free = shutil.disk_usage(fs).free
    with (fs / "filler").open("wb") as f:
        f.truncate(0)
        f.write(b"\0" * max(0, free - leave_kb * 1024))


def _remount_read_only(fs: Path) -> None:
    subprocess.run(["mount", "-o", "remount,ro", str(fs)], check=True, capture_output=True)


def _snapshot(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _hwq(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hwq", *args], capture_output=True, text=True, timeout=600)


def _one_line_error(proc: subprocess.CompletedProcess, verb: str, reason: str) -> str:
    lines = proc.stderr.strip().splitlines()
    errors = [line for line in lines if line.startswith(f"hwq {verb}: error: ")]
    assert proc.returncode == 2 and len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert reason in errors[0], errors[0]
    return errors[0]


def test_export_on_a_full_disk_keeps_the_verified_export(exported_tfc_w1a1, small_fs):
    run = small_fs / "run"
    shutil.copytree(exported_tfc_w1a1, run, ignore=shutil.ignore_patterns("build-*"))
    before = _snapshot(run)
    _fill(small_fs, leave_kb=16)  # less than one model.onnx
    error = _one_line_error(_hwq("export", str(run)), "export", "no space left on device")
    assert str(run) in error
    (small_fs / "filler").unlink()
    assert _snapshot(run) == before


def test_build_on_a_full_disk_keeps_the_previous_build(digits_tfc_build, exported_tfc_w1a1, small_fs):
    run = small_fs / "run"
    shutil.copytree(exported_tfc_w1a1, run, ignore=shutil.ignore_patterns("build-*"))
    shutil.copytree(digits_tfc_build, run / "build-pynq-z2")
    before = _snapshot(run)
    _fill(small_fs, leave_kb=200)  # a build writes about 1 MB
    _one_line_error(_hwq("build", str(run), "--board", "pynq-z2", "--verify-samples", "5", "--no-progress"), "build",
                    "no space left on device")
    (small_fs / "filler").unlink()
    after = _snapshot(run)
    assert {k: v for k, v in after.items() if k.startswith("build-pynq-z2/")} == \
        {k: v for k, v in before.items() if k.startswith("build-pynq-z2/")}


def test_every_stage_on_a_read_only_folder_is_one_line(exported_tfc_w1a1, digits_tfc_build, small_fs):
    run = small_fs / "run"
    shutil.copytree(exported_tfc_w1a1, run, ignore=shutil.ignore_patterns("build-*"))
    shutil.copytree(digits_tfc_build, run / "build-pynq-z2")
    before = _snapshot(run)
    _remount_read_only(small_fs)
    try:
        _one_line_error(_hwq("train", "--epochs", "1", "--threads", "1", "--out", str(small_fs / "new"),
                             "--no-progress"), "train", "read-only file system")
        _one_line_error(_hwq("export", str(run)), "export", "read-only file system")
        _one_line_error(_hwq("build", str(run), "--board", "pynq-z2", "--no-progress"), "build",
                        "read-only file system")
        _one_line_error(_hwq("measure", "--port", "/nonexistent/tty", "--build", str(run / "build-pynq-z2")),
                        "measure", "read-only file system")
    finally:
        subprocess.run(["mount", "-o", "remount,rw", str(small_fs)], capture_output=True)
    assert _snapshot(run) == before


def test_measure_on_a_full_disk_keeps_the_report_or_the_previous_one(digits_tfc_build, small_fs):
    """No room at all: one line, and the previous report stays as it was. Room for the report but not the plot:
    the measured windows are kept (the report is written first) and the plot is a warning."""
    from hwq.device import BuildModel, Emulator

    out = small_fs / "measure"
    out.mkdir()
    report = out / "measure-performance.json"
    report.write_text('{"status": "done", "windows": []}')
    flags = ["--build", str(digits_tfc_build), "--out", str(out), "--windows", "3", "--min-window-s", "0.05",
             "--latency-windows", "1", "--timeout", "5"]
    with Emulator(BuildModel.from_build_dir(digits_tfc_build)) as emu:
        _fill(small_fs, leave_kb=0)
        error = _one_line_error(_hwq("measure", "--port", emu.port, *flags), "measure", "no space left on device")
        assert str(report) in error and report.read_text() == '{"status": "done", "windows": []}'
        (small_fs / "filler").unlink()
        report.unlink()
        _fill(small_fs, leave_kb=24)  # a 3-window report is about 10 kB, the plot about 45 kB
        proc = _hwq("measure", "--port", emu.port, *flags)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    assert f"warning: latency.png: {out / 'latency.png'}: no space left on device" in proc.stderr
    measured = json.loads(report.read_text())
    assert measured["status"] == "done" and len(measured["windows"]) == 3 and "plot" not in measured["outputs"]
