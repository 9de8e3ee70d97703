# SPDX-License-Identifier: BSD-3-Clause
"""The flow runner: all four stages on digits with the emulated board, up-to-date skipping, recipe errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from hwq.errors import ConfigError
from hwq.flow import Recipe, run_flow


def _recipe(tmp_path, **overrides) -> str:
    recipe = {
        "name": "test-flow", "run_dir": str(tmp_path / "run"),
        "train": {"model": "tfc", "dataset": "digits", "wbits": 1, "abits": 1, "epochs": 3},
        "export": {"verify_samples": 100},
        "build": {"board": "pynq-z2", "verify_samples": 20},
        "measure": {"emulate": True, "modes": ["performance", "accuracy"], "samples": 40, "min_window_s": 1.0},
    }
    recipe.update(overrides)
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return str(path)


@pytest.fixture(scope="module")
def flow(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("flow")
    path = _recipe(tmp_path)
    lines: list[str] = []
    report = run_flow(path, progress=False, echo=lines.append)
    return tmp_path, path, report, lines


def test_flow_runs_every_stage_and_reports(flow):
    tmp_path, _, report, lines = flow
    assert report["skipped"] == []
    assert [line.split()[0] for line in lines[:4]] == ["train", "export", "build", "measure"]
    assert json.loads((tmp_path / "run" / "flow.json").read_text()) == report
    # the emulated board's throughput is the build's estimate, and its classes are the host model's
    assert report["measured"]["measured_over_estimated"] == pytest.approx(1.0, abs=1e-4)
    assert report["accuracy"]["device"] == report["accuracy"]["host_reference"]
    assert report["accuracy"]["device_host_agreement"] == 1.0 and report["bit_exact"] is True
    assert "estimated" in lines[-1] or "estimated" in "\n".join(lines)


def test_second_run_skips_up_to_date_stages(flow):
    _, path, first, _ = flow
    again = run_flow(path, progress=False, echo=lambda _: None)
    assert again["skipped"] == ["train", "export", "build", "measure"]
    assert again["measured"] == first["measured"] and again["estimated"] == first["estimated"]
    # flow.json is a stage record too: one step per stage
    assert again["stage"] == "flow" and again["status"] == "done"
    assert [(s["name"], s["status"]) for s in again["steps"]] == [
        ("train", "skipped"), ("export", "skipped"), ("build", "skipped"), ("measure", "skipped")]
    assert again["outputs"]["build"] == "build-pynq-z2/manifest.json"


def test_every_stage_writes_the_same_record_shape(flow):
    from hwq.manifest import FIELDS

    tmp_path, _, _, _ = flow
    run = tmp_path / "run"
    for path in (run / "metrics.json", run / "export.json", run / "build-pynq-z2" / "manifest.json",
                 run / "build-pynq-z2" / "measure" / "measure-performance.json", run / "flow.json"):
        record = json.loads(path.read_text())
        assert set(FIELDS) <= set(record) and record["status"] == "done", path
        # (a measurement's inputs also say how its build check went: build_status, forced, ...)
        assert all(set(entry) == {"path", "sha256"} for entry in record["inputs"].values()
                   if isinstance(entry, dict)), path
        assert all({"name", "seconds", "status"} <= set(step) for step in record["steps"]), path
    # the fields the stages had before stay where they were
    build = json.loads((run / "build-pynq-z2" / "manifest.json").read_text())
    assert build["estimates"]["total"]["estimated_fps"] == build["results"]["fps"]
    assert json.loads((run / "metrics.json").read_text())["test_acc"] > 0
    assert json.loads((run / "export.json").read_text())["verification"]["argmax_match"] == 1.0
    measured = json.loads((run / "build-pynq-z2" / "measure" / "measure-performance.json").read_text())
    assert measured["inputs"]["build_manifest"]["sha256"] == measured["build_manifest_sha256"]


def test_a_board_name_in_capitals_reuses_the_build(flow, tmp_path):
    """``board: PYNQ-Z2`` is the board pynq-z2: the flow looks in build-pynq-z2, where the build writes, and
    finds every stage up to date."""
    base, path, _, _ = flow
    recipe = yaml.safe_load(open(path))
    recipe["build"]["board"] = "PYNQ-Z2"
    capitals = tmp_path / "capitals.yaml"
    capitals.write_text(yaml.safe_dump(recipe))
    again = run_flow(capitals, progress=False, echo=lambda _: None)
    assert again["skipped"] == ["train", "export", "build", "measure"]
    assert sorted(p.name for p in (base / "run").glob("build-*")) == ["build-pynq-z2"]


def test_a_changed_build_setting_rebuilds_and_a_changed_model_too(flow, tmp_path):
    from hwq.manifest import stale_reason

    from hwq.dataflow.build import build_inputs

    base, path, _, _ = flow
    recipe = Recipe.from_yaml(path)
    _, config = recipe.build_config()
    manifest = base / "run" / "build-pynq-z2" / "manifest.json"
    assert stale_reason(manifest, config.to_dict(), build_inputs(base / "run", config)) is None
    assert stale_reason(manifest, config.replace(verify_samples=21).to_dict(), build_inputs(base / "run", config)) \
        == "other settings (verify_samples: 20 there, 21 here)"
    copy = tmp_path / "model.onnx"
    copy.write_bytes((base / "run" / "model.onnx").read_bytes() + b"\0")
    assert stale_reason(manifest, config.to_dict(), {"onnx": copy}) == f"{copy} changed"


def test_an_open_backend_recipe_runs_every_stage_and_is_then_up_to_date(tmp_path):
    """``build: {backend: open, ...}``: train -> export -> open build (generated, simulated bit-exactly, not
    synthesised) -> emulated board -> measurement in one ``hwq run``; the second run skips every stage."""
    from tests.conftest import RTL_SMALL_FOLDING

    run = tmp_path / "run"
    folding = tmp_path / "small_folding.json"
    folding.write_text(json.dumps(RTL_SMALL_FOLDING))
    train = {"model": "tfc", "dataset": "digits", "epochs": 3, "threads": 1, "train_subset": 300}
    path = _recipe(tmp_path, train=train, export={"verify_samples": 50},
                   build={"backend": "open", "board": "icebreaker", "folding_file": str(folding),
                          "synthesise": False, "verify_samples": 5},
                   measure={"emulate": True, "modes": ["performance", "accuracy"], "min_window_s": 0.2,
                            "samples": 50})
    lines: list[str] = []
    report = run_flow(path, progress=False, echo=lines.append)
    assert report["skipped"] == [] and report["bit_exact"] is True
    assert [line.split()[0] for line in lines[:4]] == ["train", "export", "build", "measure"]
    # measured on the emulated board over the serial protocol: the open build's own timing (128 simulated cycles
    # per image at the board clock, synthesis skipped), and the classes of its HW graph
    assert report["measured"]["measured_over_estimated"] == pytest.approx(1.0, abs=0.01)
    assert report["accuracy"]["device_host_agreement"] == 1.0 and report["accuracy"]["device_samples"] == 50
    assert report["build"]["backend"] == "open" and report["build"]["board"] == "icebreaker"
    assert report["build"]["cycles_per_image"] == 128 and report["estimated"]["board"] == "pynq-z2"
    assert any(line.startswith("  open backend  icebreaker: RTL simulation bit-exact True, 128 cycles/image")
               for line in "\n".join(lines).splitlines())
    manifest = json.loads((run / "build-icebreaker" / "manifest.json").read_text())
    assert manifest["status"] == "done" and manifest["simulation"]["n"] == 5
    assert [s["name"] for s in manifest["steps"]][-4:] == ["read_layers", "check_reference", "generate_verilog",
                                                           "simulate"]
    again = run_flow(path, progress=False, echo=lambda _: None)
    assert again["skipped"] == ["train", "export", "build", "measure"] and again["build"] == report["build"]


def test_changed_training_reruns_what_depends_on_it(tmp_path):
    path = _recipe(tmp_path, measure=None, build=None)
    run_flow(path, progress=False, echo=lambda _: None)
    changed = _recipe(tmp_path, measure=None, build=None,
                      train={"model": "tfc", "dataset": "digits", "wbits": 1, "abits": 1, "epochs": 4})
    report = run_flow(changed, progress=False, echo=lambda _: None)
    assert report["skipped"] == []  # new weights, so the export is redone too
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["epochs"] == 4


@pytest.mark.parametrize("path", sorted(str(p) for p in Path(__file__).parents[1].glob("flows/*.yaml")))
def test_the_recipes_in_flows_are_valid(path, monkeypatch):
    monkeypatch.chdir(Path(__file__).parents[1])   # their folding files are named relative to the repository
    recipe = Recipe.from_yaml(path)
    if recipe.build is not None:
        backend, config = recipe.build_config()
        assert config.build_dir(recipe.run_dir).name.startswith("build-")


@pytest.mark.parametrize("recipe,message", [
    ({"train": {}}, "missing field 'run_dir'"),
    ({"run_dir": "x", "train": {}, "bogus": 1}, r"unknown field\(s\) bogus"),
    ({"run_dir": "x", "train": {}, "build": {}, "measure": {"emulate": False}}, "give a port, or emulate: true"),
    ({"run_dir": "x", "train": {}, "measure": {}}, "measure needs a build section"),
    ({"run_dir": "x", "train": 5}, "train: expected a mapping"),
    ({"run_dir": "x", "train": {"model": "nope"}}, "train: model: unknown model 'nope'"),
    ({"run_dir": "x", "train": {"wbits": 9}}, "train: --wbits 9 is not supported"),
    ({"run_dir": "x", "train": {"lr": "fast"}}, "train: lr: expected a number, got 'fast'"),
    ({"run_dir": "x", "train": {}, "export": {"verify_samples": "all"}}, "export: verify_samples: expected an integer"),
    ({"run_dir": "x", "train": {}, "build": {"board": "pynq-z2", "bogus": 1}}, r"build: unknown field\(s\) bogus"),
    ({"run_dir": "x", "train": {}, "build": {"board": "pynq-z9"}}, "build: board: .*pynq-z9"),
    ({"run_dir": "x", "train": {}, "build": {}, "measure": {"modes": "performance"}},
     "measure: modes: expected a list of strings, got 'performance'"),
    ({"run_dir": "x", "train": {}, "build": {}, "measure": {"modes": ["speed"]}}, "measure: modes: expected a list"),
    ({"run_dir": "x", "train": {}, "build": {}, "measure": {"windows": "five"}}, "measure: windows: expected an int"),
    ({"run_dir": "x", "train": {}, "build": {}, "measure": {"windows": 0}}, "measure: --windows 0: expected an integer >= 1"),
    # the build section: either backend, validated whole (keys, types, ranges, boards) before any stage runs
    ({"run_dir": "x", "train": {}, "build": {"backend": "vivado"}},
     r"build: backend: expected one of finn, open, got 'vivado'$"),
    ({"run_dir": "x", "train": {}, "build": {"board": "icebreaker"}},
     r"build: board 'icebreaker' is built by the open backend \(shell: open\)"),
    ({"run_dir": "x", "train": {}, "build": {"backend": "open", "board": "icebreaker", "bogus": 1}},
     r"build: unknown field\(s\) bogus; known: board, boards_dir, .*xilinx_estimate$"),
    ({"run_dir": "x", "train": {}, "build": {"backend": "open", "synthesise": "no"}},
     r"build: synthesise: expected true or false, got 'no'$"),
    ({"run_dir": "x", "train": {}, "build": {"backend": "open", "simulator": "vcs"}},
     r"build: simulator 'vcs': expected one of auto, icarus, verilator$"),
    ({"run_dir": "x", "train": {}, "build": {"backend": "open", "tree_levels_per_stage": 99}},
     r"build: tree_levels_per_stage \(--tree-levels-per-stage\): expected an integer >= 0 and <= 32, got 99$"),
    ({"run_dir": "x", "train": {}, "build": {"backend": "open", "board": "ulx3s-99f"}},
     r"build: board: unknown board 'ulx3s-99f'; known: "),
    ({"run_dir": "x", "train": {}, "build": {"backend": "open", "fold_board": "orangecrab-25f"}},
     r"build: fold_board 'orangecrab-25f': expected a FINN \(Xilinx\) board"),
    ({"run_dir": "x", "train": {}, "build": {"backend": "open", "fold_board": "pynq-z9"}},
     r"build: fold_board: unknown board 'pynq-z9'"),
    ({"run_dir": "x", "train": {}, "build": {"backend": "open", "folding_file": "no-such.json"}},
     r"build: folding_file no-such.json: file not found$"),
])
def test_bad_recipes_are_clear_errors(tmp_path, recipe, message):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(recipe))
    with pytest.raises(ConfigError, match=message) as err:
        Recipe.from_yaml(path)
    assert "\n" not in str(err.value)


def test_cli_run(flow, capsys):
    from hwq.cli import main

    _, path, _, _ = flow
    assert main(["run", path, "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "up to date, skipped" in out and "measured/estimated 1.0000" in out


def test_a_bad_late_section_stops_the_flow_before_training(tmp_path):
    path = _recipe(tmp_path, measure={"emulate": True, "modes": "performance"})
    with pytest.raises(ConfigError, match="measure: modes"):
        run_flow(path, progress=False, echo=lambda _: None)
    assert not (tmp_path / "run").exists()


def test_an_interrupted_flow_resumes_its_training(tmp_path, monkeypatch):
    """``hwq run`` stopped during training continues from the checkpoint, to the bits of a straight run."""
    import torch

    from hwq.errors import Interrupted
    from hwq.models.fc import FC
    from hwq.train import TrainConfig, run_train
    from hwq.train.checkpoint import load_checkpoint

    train = {"model": "tfc", "dataset": "digits", "epochs": 3, "threads": 1, "train_subset": 300}
    path = _recipe(tmp_path, train=train, export={"verify_samples": 20}, build=None, measure=None)
    run = tmp_path / "run"

    def stop_at_epoch_2(self, epoch, epochs):
        if epoch == 2:
            raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(FC, "hwq_on_epoch_start", stop_at_epoch_2, raising=False)
        with pytest.raises(Interrupted) as stopped:
            run_flow(path, progress=False, echo=lambda _: None)
    assert stopped.value.detail == f"{run}/checkpoint.pt keeps epoch 2 of 3; running the recipe again resumes from it"
    report = run_flow(path, progress=False, echo=lambda _: None)
    assert report["skipped"] == []
    log = (run / "train.log").read_text()
    assert "# resume" in log and "epochs 2->3" in log
    run_train(TrainConfig(**train), tmp_path / "straight", progress=False)
    straight, resumed = load_checkpoint(tmp_path / "straight" / "model.pt"), load_checkpoint(run / "model.pt")
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)
    assert run_flow(path, progress=False, echo=lambda _: None)["skipped"] == ["train", "export"]


def test_pytorch_qonnx_hw_and_device_accuracies_of_a_w2a2_run_are_equal(digits_tfc_w2a2, tmp_path):
    """The done-when of the class rule: a w2a2 network (exact integer ties among its classes) has one accuracy,
    whichever stage computes it, on the whole digits test split (360 images): PyTorch, QONNX, the HW graph (the
    host's reference in the accuracy run) and the emulated board."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(digits_tfc_w2a2, run)
    trained = json.loads((run / "metrics.json").read_text())["config"]
    path = _recipe(tmp_path, train=trained, export={"verify_samples": 360},
                   measure={"emulate": True, "modes": ["accuracy"], "samples": 360})
    report = run_flow(path, progress=False, echo=lambda _: None)
    assert report["skipped"] == ["train"]  # the fixture's run, reused as it was trained
    acc = report["accuracy"]
    assert acc["device_samples"] == 360 and acc["device_host_agreement"] == 1.0
    assert acc["pytorch_test"] == acc["qonnx_verified_subset"] == acc["host_reference"] == acc["device"]
