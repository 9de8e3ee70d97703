# SPDX-License-Identifier: BSD-3-Clause
"""One step driver for both backends: checkpoints named by step, --stop-step / --start-step (resume from a saved
step's checkpoint, FINN-builder style), one-line errors for unknown step names and for builds that cannot be
resumed; a step added to a flow renames no other step's checkpoint."""

from __future__ import annotations

import json
import shutil

import pytest

from hwq.cli import main
from hwq.dataflow import STEPS, BuildConfig, run_build
from hwq.dataflow.driver import Step, step_names
from hwq.errors import ConfigError

NAMES = step_names(STEPS)


@pytest.fixture
def run(exported_tfc_w1a1, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(exported_tfc_w1a1, copy, ignore=shutil.ignore_patterns("build-*"))
    return copy


def _manifest(build):
    return json.loads((build / "manifest.json").read_text())


def test_stop_after_a_step_then_resume_from_the_next(run, digits_tfc_build, capsys):
    """Stopped after fold, resumed at verify_bit_exact: the same build as one straight run (the session's
    digits_tfc_build: same model, same settings)."""
    flags = ["--board", "pynq-z2", "--verify-samples", "20", "--no-progress"]
    assert main(["build", str(run), *flags, "--stop-step", "fold"]) == 0
    assert "after step fold (--stop-step)" in capsys.readouterr().out
    build = run / "build-pynq-z2"
    stopped = _manifest(build)
    assert stopped["status"] == "stopped" and stopped["stop_step"] == "fold"
    assert [s["name"] for s in stopped["steps"]] == NAMES[:NAMES.index("fold") + 1]
    assert (build / "intermediate" / "fold.onnx").is_file() and "estimates" not in stopped
    assert stopped["results"] == {}   # no estimate yet, no gate yet

    assert main(["build", str(run), *flags, "--start-step", "verify_bit_exact"]) == 0
    resumed, straight = _manifest(build), _manifest(digits_tfc_build)
    assert resumed["status"] == "done" and [s["name"] for s in resumed["steps"]] == NAMES
    # the steps before the start are the stopped build's, taken over with their seconds
    assert resumed["steps"][:NAMES.index("fold") + 1] == stopped["steps"]
    assert resumed["resumed_from"]["start_step"] == "verify_bit_exact"
    assert resumed["estimates"] == straight["estimates"] and resumed["folding"] == straight["folding"]
    assert resumed["bit_exact"]["passed"] and resumed["integer_range"]["passed"]
    assert resumed["results"] == straight["results"]
    assert sorted(p.name for p in (build / "intermediate").iterdir()) == sorted(f"{n}.onnx" for n in NAMES)


def test_unknown_steps_and_unresumable_builds_are_one_line_errors(run, capsys):
    def error(*flags):
        assert main(["build", str(run), "--no-progress", *flags]) == 2
        return capsys.readouterr().err

    assert error("--stop-step", "folding") == (f"hwq build: error: --stop-step folding: no such step; the steps: "
                                               f"{', '.join(NAMES)}\n")
    assert error("--backend", "open", "--board", "icebreaker", "--start-step", "fold") == \
        f"hwq build: error: --start-step fold: {run / 'build-icebreaker' / 'manifest.json'}: no earlier build to " \
        "resume from; build from the first step\n"
    assert not list(run.glob("build-*"))           # nothing written
    assert main(["build", str(run), "--no-progress", "--stop-step", "tidy_up"]) == 0
    assert error("--start-step", "fold", "--target-fps", "100000") == \
        f"hwq build: error: --start-step fold: {run / 'build-pynq-z2' / 'manifest.json'} was built with other " \
        "settings (target_fps: None there, 100000.0 here); give the same settings or build from the first step\n"
    assert error("--start-step", "fold") == \
        f"hwq build: error: --start-step fold: step 'insert_topk' has no finished checkpoint in " \
        f"{run / 'build-pynq-z2' / 'manifest.json'}; start at 'insert_topk' or earlier\n"
    assert _manifest(run / "build-pynq-z2")["status"] == "stopped"   # the refused resumes changed nothing


def test_adding_a_step_renames_no_checkpoint(run, tmp_path):
    def step_note(model, ctx):
        """A custom step: the model passes through, its report goes into the manifest."""
        return model, {"note": {"nodes": len(model.graph.node)}}

    first = STEPS[:NAMES.index("insert_topk") + 1]
    out = tmp_path / "b"
    m = run_build(run, BuildConfig(out_dir=str(out), verify_samples=5), progress=False,
                  steps=[*first[:2], Step("note", step_note), *first[2:]])
    assert m["status"] == "done" and m["note"]["nodes"] > 0
    assert [s["onnx"] for s in m["steps"]] == [f"intermediate/{n}.onnx" for n in (*NAMES[:2], "note", *NAMES[2:4])]
    assert next(s for s in m["steps"] if s["name"] == "note")["reported"] == ["note"]
    with pytest.raises(ConfigError, match=r"^--stop-step fold: no such step; the steps: scale_uint8_input, "
                                          r"qonnx_to_finn, note$"):
        run_build(run, BuildConfig(out_dir=str(out)), progress=False, steps=[*first[:2], Step("note", step_note)],
                  stop_step="fold")


def test_the_open_backend_resumes_at_simulate(run):
    """The open backend is a step list too: stopped after generating the Verilog, resumed at the simulation."""
    from hwq.rtl.build import OpenBuildConfig, run_open_build
    from tests.conftest import RTL_SMALL_FOLDING

    folding = run / "small_folding.json"
    folding.write_text(json.dumps(RTL_SMALL_FOLDING))
    config = OpenBuildConfig(board="icebreaker", folding_file=str(folding), synthesise=False, verify_samples=3)
    stopped = run_open_build(run, config, stop_step="generate_verilog")
    assert stopped["status"] == "stopped" and "simulation" not in stopped and stopped["design"]["cycles_bound"] == 128
    assert stopped["design"]["files"] == ["rtl/accel.v"]
    m = run_open_build(run, config, start_step="simulate")
    assert m["status"] == "done" and m["steps"][-1]["name"] == "simulate" and m["simulation"]["bit_exact"]
    assert m["simulation"]["cycles_per_image"] == 128 and m["results"]["cycles_per_image"] == 128
    assert [s["name"] for s in m["steps"]][-5:] == ["estimate", "read_layers", "check_reference",
                                                    "generate_verilog", "simulate"]
    assert m["reference"]["hw_graph"] == "intermediate/create_dataflow_partition.onnx"
