# SPDX-License-Identifier: BSD-3-Clause
"""hwq sweep: the sweep file's points and checks, the Pareto front, and a real local Ray sweep that survives a
killed worker and a second run without running any point twice."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest
import yaml

from hwq.errors import ConfigError
from hwq.sweep import SweepSpec
from hwq.sweep.results import pareto_front
from hwq.sweep.runner import attempts, point_dir
from hwq.sweep.spec import parse_budget


def _write(tmp_path: Path, spec: dict, name: str = "s.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


BASE = {"train": {"model": "tfc", "dataset": "digits", "epochs": 1, "threads": 1}}


def test_grid_and_points_expand_to_checked_recipes_with_stable_ids(tmp_path):
    spec = SweepSpec.from_yaml(_write(tmp_path, {
        "name": "g", "out_dir": str(tmp_path / "out"), "base": {**BASE, "build": {"board": "pynq-z2"}},
        "grid": {"bits": [1, [2, 4]], "train.method": ["uniform", "n2uq"]},
        "points": [{"bits": 2, "train.precision": {"features.2": 1}, "budget": "lut=20000"},
                   {"board": "zcu104", "budget": {"fps": 1e6}}]}))
    points = spec.points()
    assert len(points) == 6
    assert [(p.recipe["train"]["wbits"], p.recipe["train"]["abits"], p.recipe["train"]["method"])
            for p in points[:4]] == [(1, 1, "uniform"), (1, 1, "n2uq"), (2, 4, "uniform"), (2, 4, "n2uq")]
    assert points[4].recipe["build"] == {"board": "pynq-z2", "max_lut": 20000}
    assert points[4].recipe["train"]["precision"] == {"features.2": 1} and points[4].budget == {"lut": 20000}
    assert points[5].recipe["build"] == {"board": "zcu104", "target_fps": 1e6}
    assert points[0].id.startswith("w1a1-uniform-") and points[4].id.startswith("w2a2-precision-mixed-lut20000-")
    assert len({p.id for p in points}) == 6
    assert [p.id for p in SweepSpec.from_yaml(tmp_path / "s.yaml").points()] == [p.id for p in points]  # stable
    assert "method" not in BASE["train"]  # the base is not changed by the points


@pytest.mark.parametrize("spec, match", [
    ({"base": BASE, "grid": {"train.modle": ["tfc"]}},
     r"s\.yaml: point modle-tfc-\w+: train: unknown field\(s\) modle; known: "),
    ({"base": BASE, "grid": {"train.model": ["nope"]}}, r"s\.yaml: point nope-\w+: train: model: unknown model 'nope'"),
    ({"base": BASE, "grid": {"size": [1]}}, r"s\.yaml: grid point 1: size: expected one of bits, board, backend, "
                                           r"budget or SECTION\.FIELD"),
    ({"base": BASE, "points": [{"budget": {"watts": 3}}]}, r"s\.yaml: points\[0\]: budget: expected \{lut: N\} or "
                                                          r"\{fps: F\}"),
    ({"base": BASE, "points": [{"bits": "two"}]}, r"s\.yaml: points\[0\]: bits: expected an integer"),
    ({"base": BASE}, r"s\.yaml: no points: give a grid, points, or both"),
    ({"base": BASE, "grid": {"bits": []}}, r"s\.yaml: grid: expected a mapping of setting -> non-empty list"),
    ({"base": {"training": {}}, "grid": {"bits": [1]}}, r"s\.yaml: base: expected a mapping of recipe sections"),
    ({"base": BASE, "grid": {"bits": [1, 1]}}, r"s\.yaml: grid point 2 is the same point as grid point 1"),
    ({"base": BASE, "grid": {"bits": [1]}, "pionts": []}, r"s\.yaml: unknown field\(s\) pionts"),
    ({"base": {**BASE, "build": {"board": "pynq-z2"}}, "grid": {"board": ["pynq-z9"]}},
     r"s\.yaml: point pynq-z9-\w+: build: board: .*pynq-z9"),
])
def test_bad_sweep_files_are_one_line_errors_naming_the_point(tmp_path, spec, match):
    with pytest.raises(ConfigError, match=match) as err:
        SweepSpec.from_yaml(_write(tmp_path, spec))
    assert "\n" not in str(err.value)


def test_budget_forms():
    assert parse_budget("lut=20000", "b") == {"lut": 20000} and parse_budget({"fps": 1e6}, "b") == {"fps": 1e6}
    assert parse_budget(None, "b") is None
    for bad in ("lut=", "lut=-3", {"lut": True}, {"lut": 1, "fps": 2}, 5):
        with pytest.raises(ConfigError, match="b: expected"):
            parse_budget(bad, "b")


def test_pareto_front_keeps_the_points_nothing_dominates():
    rows = [{"point": "a", "accuracy": 0.9, "lut": 100, "fps": 10}, {"point": "b", "accuracy": 0.8, "lut": 50,
                                                                    "fps": 20},
            {"point": "c", "accuracy": 0.8, "lut": 120, "fps": 5}, {"point": "d", "accuracy": 0.9, "lut": 100,
                                                                   "fps": 10},
            {"point": "e", "accuracy": None, "lut": 10, "fps": 99}]
    assert pareto_front(rows, "lut") == {"a", "b", "d"}   # c: worse than a on both; equal points both stay
    assert pareto_front(rows, "fps", higher_is_better=True) == {"a", "b", "d"}


# --- a real sweep on a local Ray ------------------------------------------------------------------------------------
def _kill_first_running_point(out_dir: Path, killed: dict, stop: threading.Event) -> None:
    """Watch the points' attempts logs; SIGKILL the Ray worker of the first point that has started and not ended."""
    while not stop.is_set() and "pid" not in killed:
        for log in sorted(out_dir.glob("points/*/attempts.log")):
            events = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
            if len(events) == 1 and events[0]["event"] == "start":
                time.sleep(0.3)  # inside its training
                os.kill(events[0]["pid"], signal.SIGKILL)
                killed.update(pid=events[0]["pid"], point=log.parent.name)
                return
        time.sleep(0.05)


def test_sweep_on_local_ray_survives_a_killed_worker_and_never_runs_a_point_twice(tmp_path):
    from hwq.sweep import run_sweep

    out = tmp_path / "sweep"
    path = _write(tmp_path, {
        "name": "kill-test", "out_dir": str(out),
        "base": {"train": {"model": "tfc", "dataset": "digits", "epochs": 6, "threads": 1},
                 "export": {"verify_samples": 60}},
        "grid": {"bits": [1, 2]},
        # a point that fails by itself (no such data folder): recorded, and the others go on
        "points": [{"bits": 1, "train.dataset": "mnist", "train.data_dir": str(tmp_path / "no-data")}]})
    spec = SweepSpec.from_yaml(path)
    killed, stop = {}, threading.Event()
    watcher = threading.Thread(target=_kill_first_running_point, args=(out, killed, stop), daemon=True)
    watcher.start()
    try:
        record = run_sweep(path, workers=2, progress=False, echo=lambda line: None)
    finally:
        stop.set()
        watcher.join()
    assert "pid" in killed, "no point was seen running"
    rows = {r["point"]: r for r in record["rows"]}
    failed = [p for p in spec.points() if p.recipe["train"]["dataset"] == "mnist"][0]
    assert rows[failed.id]["status"] == "failed" and "no-data" in rows[failed.id]["error"]
    assert "\n" not in rows[failed.id]["error"]
    assert record["status"] == "failed" and record["results"]["done"] == 2 and record["results"]["failed"] == 1
    for point in spec.points():
        events = [e["event"] for e in attempts(point_dir(spec, point))]
        if point.id == killed["point"]:   # started, killed with its worker, retried by Ray, done once
            assert events == ["start", "start", "done"], events
        elif point.id == failed.id:
            assert events == ["start", "failed"], events
        else:
            assert events == ["start", "done"], events
    for point in spec.points():
        if point.id != failed.id:
            assert rows[point.id]["accuracy"] > 0.5 and rows[point.id]["qonnx_accuracy"] is not None
    header = (out / "sweep.csv").read_text().splitlines()[0]
    assert header.startswith("point,status,error,model") and len((out / "sweep.csv").read_text().splitlines()) == 4

    # The sweep again: the finished points are not run, the failed one is tried again (and fails again).
    again = run_sweep(path, workers=2, progress=False, echo=lambda line: None)
    for point in spec.points():
        events = [e["event"] for e in attempts(point_dir(spec, point))]
        if point.id == failed.id:
            assert events == ["start", "failed", "start", "failed"], events
        else:
            assert events.count("done") == 1, events
    assert [r["accuracy"] for r in again["rows"]] == [r["accuracy"] for r in record["rows"]]
