# SPDX-License-Identifier: BSD-3-Clause
"""The shared stage record (hwq.manifest): its shape, its writer, the one "up to date" rule; the step driver's
names and ranges. No FINN, no training: milliseconds."""

from __future__ import annotations

import doctest
import json

import pytest

from hwq import manifest as records
from hwq.dataflow.driver import Step, step_range
from hwq.errors import ConfigError, HwqError, Interrupted


def _done_record(tmp_path, config=None):
    """A finished record with one input and one hashed output, written to tmp_path/record.json."""
    (tmp_path / "in.bin").write_bytes(b"input")
    (tmp_path / "out.bin").write_bytes(b"output")
    record = records.start("export", config or {"verify_samples": 500, "atol": 1e-4},
                           {"weights": tmp_path / "in.bin"}, {"qonnx": "1.0.0"})
    records.step(record, "export", 0.5)
    record["outputs"] = {"model": "out.bin", "model_sha256": records.sha256_file(tmp_path / "out.bin")}
    records.finish(record, tmp_path / "record.json")
    return tmp_path / "record.json", {"weights": tmp_path / "in.bin"}


def test_a_record_has_the_shared_fields_and_is_written_when_done(tmp_path):
    path, _ = _done_record(tmp_path)
    written = json.loads(path.read_text())
    assert list(written)[:len(records.FIELDS)] == list(records.FIELDS)
    assert written["status"] == "done" and written["steps"] == [{"name": "export", "seconds": 0.5, "status": "done"}]
    assert written["inputs"]["weights"] == {"path": str(tmp_path / "in.bin"),
                                            "sha256": records.sha256_file(tmp_path / "in.bin")}
    with pytest.raises(ValueError):
        records.finish(written, None, "failed")  # a failure goes through fail(), with its error


def test_a_failure_is_recorded_with_its_one_line_and_the_running_step(tmp_path):
    record = records.start("build", {}, {}, {})
    records.step(record, "fold", status="running")
    records.fail(record, tmp_path / "m.json", HwqError("model.onnx: does not fit\nsecond line is not kept"))
    written = json.loads((tmp_path / "m.json").read_text())
    assert written["status"] == "failed" and written["steps"][-1]["status"] == "failed"
    assert written["error"] == "model.onnx: does not fit\nsecond line is not kept"  # HwqErrors are one line
    record = records.start("build", {}, {}, {})
    records.step(record, "simulate", status="running")
    records.fail(record, None, Interrupted("SIGTERM", 15))
    assert record["status"] == "interrupted" and record["error"] == "interrupted (SIGTERM) in step 'simulate'"
    assert records.error_line(ValueError("bad\nworse")) == "ValueError: bad"


def test_up_to_date_is_done_same_settings_same_inputs_outputs_present(tmp_path):
    path, inputs = _done_record(tmp_path)
    config = {"verify_samples": 500, "atol": 1e-4}
    assert records.up_to_date(path, config, inputs)
    # only the settings the caller names are compared (an emulated board's port is new every time)
    assert records.up_to_date(path, {"verify_samples": 500}, inputs)
    assert records.stale_reason(path, {**config, "verify_samples": 100}, inputs) == \
        "other settings (verify_samples: 500 there, 100 here)"
    assert records.stale_reason(path, {"batch": 100}, inputs) == "other settings (batch: not recorded there, 100 here)"
    assert records.stale_reason(path, config, {"teacher": tmp_path / "in.bin"}) == "input teacher not recorded"
    (tmp_path / "out.bin").write_bytes(b"changed")
    assert records.stale_reason(path, config, inputs) == f"{tmp_path / 'out.bin'} changed"
    (tmp_path / "out.bin").unlink()
    assert records.stale_reason(path, config, inputs) == f"{tmp_path / 'out.bin'} missing"
    (tmp_path / "out.bin").write_bytes(b"output")
    (tmp_path / "in.bin").write_bytes(b"new input")
    assert records.stale_reason(path, config, inputs) == f"{tmp_path / 'in.bin'} changed"
    assert records.stale_reason(tmp_path / "none.json", config, inputs) == "none.json: none yet"
    (tmp_path / "in.bin").write_bytes(b"input")
    failed = json.loads(path.read_text())
    records.fail(failed, path, HwqError("x"))
    assert records.stale_reason(path, config, inputs) == "record.json: status 'failed'"


def test_estimate_totals_is_one_accessor_with_a_one_line_error():
    assert records.estimate_totals({"estimates": {"total": {"max_cycles": 8}}}) == {"max_cycles": 8}
    with pytest.raises(HwqError, match=r"^runs/x/manifest\.json: no estimates\.total \(the build did not run its "
                                       r"'estimate' step\)$"):
        records.estimate_totals({"status": "stopped"}, "runs/x/manifest.json")


def test_step_names_are_checked_with_the_known_ones_listed():
    steps = [Step("tidy", None), Step("fold", None), Step("estimate", None)]
    assert step_range(steps) == (0, 2) and step_range(steps, "fold", "fold") == (1, 1)
    with pytest.raises(ConfigError, match=r"^--stop-step folding: no such step; the steps: tidy, fold, estimate$"):
        step_range(steps, stop_step="folding")
    with pytest.raises(ConfigError, match=r"^--start-step estimate comes after --stop-step tidy$"):
        step_range(steps, "estimate", "tidy")


def test_the_module_examples_hold():
    assert doctest.testmod(records).failed == 0
