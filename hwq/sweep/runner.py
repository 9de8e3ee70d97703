# SPDX-License-Identifier: BSD-3-Clause
"""Run a sweep's points as Ray tasks, each a flow recipe in its own run directory, and collect the results.

One point is one task (:func:`run_point`): it writes the point's ``recipe.yaml``, runs :func:`hwq.flow.run_flow`
on it (whose stages skip what is already up to date) and writes ``point.json``, the shared record
(:mod:`hwq.manifest`, stage ``sweep-point``), atomically, done or failed with the one-line error. Resuming:

- a point whose ``point.json`` is ``done`` for the same recipe is finished and never runs again (also when Ray
  re-executes its task: the task checks first);
- a failed point runs again on the next ``hwq sweep`` (its finished stages are skipped by the flow), and never
  stops the others;
- a worker that dies mid-point (killed, out of memory) is retried by Ray (``max_retries``), and the retry resumes
  the flow where its stages' records say.

Each execution of a point appends ``start`` and ``done`` / ``failed`` lines to its ``attempts.log`` (pid, time),
which is how a test (and a user) sees that a point ran once.

Ray runs locally by default (``ray.init()`` with ``workers`` CPUs); ``address`` joins an existing cluster. A
cluster's workers must see the same file system (the run directories) and have hwq installed.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Callable

import yaml

from hwq import manifest as records
from hwq.sweep.spec import Point, SweepSpec

POINT_FILE = "point.json"
ATTEMPTS_FILE = "attempts.log"
#: Retries of a point whose worker died (Ray's system failures: a killed process, a lost node).
MAX_RETRIES = 3


def point_dir(spec: SweepSpec, point: Point) -> Path:
    return Path(spec.out_dir).resolve() / "points" / point.id


def finished(directory: Path, recipe: dict[str, Any]) -> dict[str, Any] | None:
    """The point's record when it is done for this very recipe, else None."""
    record = records.read(directory / POINT_FILE)
    if record and record.get("status") == "done" and record.get("config") == recipe:
        return record
    return None


def _attempt(directory: Path, event: str, **fields: Any) -> None:
    line = json.dumps({"event": event, "pid": os.getpid(), "time": round(time.time(), 3), **fields})
    with (directory / ATTEMPTS_FILE).open("a") as f:  # one short line: appended whole
        f.write(line + "\n")


def attempts(directory: Path) -> list[dict[str, Any]]:
    """The point's ``attempts.log`` as records (an empty list when it never started)."""
    path = Path(directory) / ATTEMPTS_FILE
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def run_point(directory: str, point_id: str, recipe: dict[str, Any]) -> dict[str, Any]:
    """Run one point's flow in ``directory`` (its run directory); returns its record, also when it failed."""
    import hwq
    from hwq.flow import run_flow

    directory = Path(directory)
    done = finished(directory, recipe)
    if done is not None:
        return done
    directory.mkdir(parents=True, exist_ok=True)
    recipe_file = directory / "recipe.yaml"
    recipe_file.write_text(yaml.safe_dump({"name": point_id, "run_dir": str(directory), **recipe},
                                          sort_keys=False))
    record = records.start("sweep-point", recipe, {}, {"hwq": hwq.__version__}, point=point_id)
    _attempt(directory, "start")
    started = time.perf_counter()
    log = (directory / "sweep-point.log").open("a")
    try:
        report = run_flow(recipe_file, progress=False, echo=lambda line: print(line, file=log, flush=True))
    except Exception as err:  # noqa: BLE001 - any failure is this point's result; the sweep goes on
        records.fail(record, directory / POINT_FILE, err)
        _attempt(directory, "failed", error=record["error"])
        return record
    finally:
        log.close()
    record["results"] = dict(report.get("results", {}))
    record["outputs"] = {"flow": "flow.json"}
    record["seconds"] = round(time.perf_counter() - started, 3)
    records.finish(record, directory / POINT_FILE)
    _attempt(directory, "done")
    return record


def run_sweep(spec_path: str | Path, address: str | None = None, workers: int | None = None,
              progress: bool = True, echo: Callable[[str], None] = print) -> dict[str, Any]:
    """Run every point of the sweep file that is not finished, on Ray; write and return the results
    (``sweep.json``, ``sweep.csv`` and the Pareto plots in the sweep's ``out_dir``)."""
    from hwq.sweep.results import write_results

    spec = SweepSpec.from_yaml(spec_path)
    points = spec.points()
    todo = [p for p in points if finished(point_dir(spec, p), p.recipe) is None]
    echo(f"sweep {spec.name}: {len(points)} points, {len(points) - len(todo)} finished, {len(todo)} to run")
    started = time.perf_counter()
    if todo:
        _run_on_ray(spec, todo, address, workers, progress, echo)
    return write_results(spec, points, round(time.perf_counter() - started, 3), workers, address)


def _run_on_ray(spec: SweepSpec, todo: list[Point], address: str | None, workers: int | None, progress: bool,
                echo: Callable[[str], None]) -> None:
    import ray
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from hwq.errors import ConfigError
    from hwq.ray_local import ray_session

    if workers is not None and workers < 1:
        raise ConfigError(f"--workers: expected a positive integer, got {workers}")
    with ray_session(address, workers or os.cpu_count()):
        task = ray.remote(num_cpus=1, max_retries=MAX_RETRIES)(run_point)
        pending = {task.remote(str(point_dir(spec, p)), p.id, p.recipe): p for p in todo}
        failed = 0
        columns = (TextColumn("sweep"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[note]}"),
                   TimeElapsedColumn())
        with Progress(*columns, disable=not progress, transient=False) as bar:
            job = bar.add_task("sweep", total=len(pending), note="")
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1)
                point = pending.pop(ready[0])
                try:
                    record = ray.get(ready[0])
                except ray.exceptions.RayError as err:  # the task's worker died more than MAX_RETRIES times
                    record = _record_lost(spec, point, err)
                if record.get("status") != "done":
                    failed += 1
                    echo(f"point {point.id} failed: {record.get('error')}")
                bar.update(job, advance=1, note=f"{failed} failed" if failed else "")


def _record_lost(spec: SweepSpec, point: Point, err: BaseException) -> dict[str, Any]:
    """A point whose task Ray gave up on: recorded as failed, like a point that failed by itself."""
    import hwq

    directory = point_dir(spec, point)
    directory.mkdir(parents=True, exist_ok=True)
    record = records.start("sweep-point", point.recipe, {}, {"hwq": hwq.__version__}, point=point.id)
    message = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return records.fail(record, directory / POINT_FILE,
                        RuntimeError(f"the worker running it was lost {MAX_RETRIES + 1} times ({message})"))
