# SPDX-License-Identifier: BSD-3-Clause
"""Nothing lost: a failed or interrupted rebuild leaves the previous build (and its measure/ reports) in place and
keeps the attempt as <build>.failed; a successful one replaces it, with no trace of its staging folder."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest
from qonnx.core.modelwrapper import ModelWrapper

from hwq.cli import main
from hwq.dataflow import STEPS, BuildConfig, run_build
from hwq.errors import ConfigError, Interrupted


def _run_with_previous_build(exported_tfc_w1a1, digits_tfc_build, tmp_path):
    """A copy of the exported run whose build-pynq-z2/ is a finished build with a measurement in it."""
    run = tmp_path / "run"
    shutil.copytree(exported_tfc_w1a1, run, ignore=shutil.ignore_patterns("build-*"))
    shutil.copytree(digits_tfc_build, run / "build-pynq-z2")
    (run / "build-pynq-z2" / "measure").mkdir()
    (run / "build-pynq-z2" / "measure" / "measure-performance.json").write_text('{"status": "done"}')
    return run


def _snapshot(folder):
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_failed_rebuild_keeps_the_previous_build(exported_tfc_w1a1, digits_tfc_build, tmp_path, capsys):
    run = _run_with_previous_build(exported_tfc_w1a1, digits_tfc_build, tmp_path)
    before = _snapshot(run / "build-pynq-z2")
    # 1e9 fps is one cycle per frame: the fully parallel TFC needs more LUTs than the Pynq-Z2 has
    assert main(["build", str(run), "--board", "pynq-z2", "--target-fps", "1e9", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    failed = run / "build-pynq-z2.failed"
    assert err.count("\n") == 0 and "does not fit 80 % of pynq-z2: needs " in err and "LUT, may use" in err
    assert err.endswith(f"the failed build is in {failed} ({run / 'build-pynq-z2'} is unchanged)")
    assert _snapshot(run / "build-pynq-z2") == before            # folding, manifest, measure/: all still there
    manifest = json.loads((failed / "manifest.json").read_text())
    assert manifest["status"] == "failed" and "does not fit" in manifest["error"]
    assert [s["name"] for s in manifest["steps"]][-1] == "fold"
    assert sorted(p.name for p in run.iterdir() if p.name.startswith("build-")) == [
        "build-pynq-z2", "build-pynq-z2.failed"]                 # no staging folder left behind


def test_successful_rebuild_replaces_the_build_and_its_failed_attempt(exported_tfc_w1a1, digits_tfc_build,
                                                                      tmp_path, capsys):
    from hwq.device import BuildModel

    run = _run_with_previous_build(exported_tfc_w1a1, digits_tfc_build, tmp_path)
    (run / "build-pynq-z2.failed").mkdir()
    (run / "build-pynq-z2.failed" / "manifest.json").write_text('{"status": "failed"}')
    assert main(["build", str(run), "--board", "pynq-z2", "--target-fps", "200000", "--verify-samples", "10"]) == 0
    out = run / "build-pynq-z2"
    assert sorted(p.name for p in run.iterdir() if p.name.startswith("build-")) == ["build-pynq-z2"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "done" and manifest["folding"]["target_fps"] == 200000
    assert not (out / "measure").exists()                        # it measured the build that was replaced
    # FINN's absolute paths (node attributes, memstream wrappers, Tcl) point at the final folder
    codegen = ModelWrapper(str(out / next(s["onnx"] for s in manifest["steps"] if s["name"] == "hw_codegen")))
    dirs = [a.s.decode() for n in codegen.graph.node for a in n.attribute if a.name == "code_gen_dir_ipgen"]
    assert dirs and all(d.startswith(str((out / "codegen").resolve())) and os.path.isdir(d) for d in dirs)
    assert subprocess.run(["grep", "-rl", ".partial-", str(out)], capture_output=True).stdout == b""
    # the emulated board loads the build's abstract HW graph (the checkpoint of create_dataflow_partition, before
    # specialisation), which the bit-exactness gate executed
    model = BuildModel.from_build_dir(out)
    assert model.onnx_path.name == "create_dataflow_partition.onnx"
    assert manifest["bit_exact"]["hw_graph"] == "intermediate/create_dataflow_partition.onnx"
    assert not any(n.domain.endswith((".hls", ".rtl")) for n in model.model.graph.node)
    # progress off a terminal (pytest's capture): a line per step with its seconds
    lines = capsys.readouterr().err.splitlines()
    for name, _ in STEPS:
        assert any(line.split()[:1] == [name] and line.rstrip().endswith(" s") for line in lines), name


def test_interrupted_build_is_kept_aside(exported_tfc_w1a1, tmp_path):
    def step_interrupted(model, ctx):
        raise KeyboardInterrupt

    out = tmp_path / "b"
    with pytest.raises(Interrupted) as err:
        run_build(exported_tfc_w1a1, BuildConfig(out_dir=str(out), verify_samples=5), progress=False,
                  steps=[STEPS[0], ("interrupted", step_interrupted)])
    assert err.value.detail == f"the failed build is in {out}.failed" and not out.exists()
    manifest = json.loads((tmp_path / "b.failed" / "manifest.json").read_text())
    assert manifest["status"] == "interrupted" and manifest["steps"][-1]["name"] == "interrupted"


def test_open_backend_failure_keeps_the_previous_build(exported_tfc_w1a1, tmp_path):
    from hwq.rtl.build import OpenBuildConfig, run_open_build

    out = tmp_path / "build-ulx3s-85f"
    out.mkdir()
    (out / "manifest.json").write_text('{"status": "done", "backend": "open"}')
    with pytest.raises(ConfigError, match=r"does not fit 80 % of pynq-z2.*the failed build is in .*"
                                          r"build-ulx3s-85f\.failed \(.*build-ulx3s-85f is unchanged\)$"):
        run_open_build(exported_tfc_w1a1, OpenBuildConfig(board="ulx3s-85f", target_fps=1e9, out_dir=str(out)))
    assert json.loads((out / "manifest.json").read_text()) == {"status": "done", "backend": "open"}
    manifest = json.loads((tmp_path / "build-ulx3s-85f.failed" / "manifest.json").read_text())
    assert manifest["status"] == "failed" and "does not fit" in manifest["error"]
    # one manifest, one list of steps: FINN's, then the open backend's (no nested FINN build)
    last = manifest["steps"][-1]
    assert manifest["backend"] == "open" and last["name"] == "fold" and last["status"] == "failed"
    assert not (tmp_path / "build-ulx3s-85f.failed" / "finn-build").exists()


def test_unwritable_out_is_one_line_before_any_step(exported_tfc_w1a1, tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    immutable = False
    if os.geteuid() == 0:  # root writes anywhere chmod forbids: make the folder immutable instead
        immutable = subprocess.run(["chattr", "+i", str(locked)], capture_output=True).returncode == 0
    try:
        probe = locked / "probe"
        try:
            probe.mkdir()
            probe.rmdir()
            pytest.skip("no way to make a folder read-only here (root without chattr)")
        except OSError:
            pass
        assert main(["build", str(exported_tfc_w1a1), "--out", str(locked / "b"), "--no-progress"]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith(f"hwq build: error: --out {locked / 'b'}: cannot write there (") and "\n" not in err
        assert "scale_uint8_input" not in err and list(locked.iterdir()) == []
    finally:
        if immutable:
            subprocess.run(["chattr", "-i", str(locked)], check=True)
        locked.chmod(0o755)


def test_out_that_is_not_a_build_is_refused(exported_tfc_w1a1, tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(ConfigError, match=r"--out .*mine: exists and is not a build directory"):
        run_build(exported_tfc_w1a1, BuildConfig(out_dir=str(tmp_path / "mine")), progress=False)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"
