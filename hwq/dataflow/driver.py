# SPDX-License-Identifier: BSD-3-Clause
"""The step driver both build backends use, FINN-builder style.

A backend is a plain list of named steps, each ``step(model, ctx) -> (model, report)``: it takes the model the
previous step passed on and returns the one it passes on, with a dict of manifest sections it produced
(``{"folding": {...}}``); it does not write shared state. The driver runs them in order and, for each, times it
(a progress line), records it in the manifest's ``steps`` (name, seconds, status, checkpoint, the sections it
reported), merges its report into the manifest, saves the model it passed on as ``intermediate/<step>.onnx`` (its
checkpoint, named by the step: adding a step renames no other) and rewrites ``manifest.json``.

A build can stop after a step (``stop_step``) or start at one (``start_step``), resuming from the checkpoint and
the manifest of an earlier build of the same model and settings (:func:`resume`).

>>> steps = [Step("tidy", step_tidy), Step("fold", step_fold)]               # doctest: +SKIP
>>> model = run_steps(steps, model, ctx, manifest, progress=shown)           # doctest: +SKIP
"""

from __future__ import annotations

import shutil
from pathlib import Path
from types import MappingProxyType
from typing import Any, Callable, Mapping, NamedTuple, Sequence, TextIO

from hwq import manifest as records
from hwq._io import write_json
from hwq.dataflow.progress import StepProgress
from hwq.errors import ConfigError, HwqError

INTERMEDIATE = "intermediate"
MANIFEST_FILE = "manifest.json"


class Step(NamedTuple):
    """One named step of a backend: ``run(model, ctx) -> (model, report)``."""

    name: str
    run: Callable[[Any, Any], tuple[Any, dict[str, Any]]]


def step_names(steps: Sequence[tuple[str, Callable]]) -> list[str]:
    return [name for name, _ in steps]


def step_range(steps: Sequence[tuple[str, Callable]], start_step: str | None = None,
               stop_step: str | None = None) -> tuple[int, int]:
    """Indices of the first and last step to run; an unknown or misordered name is a one-line ConfigError.

    >>> step_range([("a", None), ("b", None), ("c", None)], stop_step="b")
    (0, 1)
    """
    names = step_names(steps)

    def index(flag: str, name: str | None, default: int) -> int:
        if name is None:
            return default
        if name not in names:
            raise ConfigError(f"{flag} {name}: no such step; the steps: {', '.join(names)}")
        return names.index(name)

    first, last = index("--start-step", start_step, 0), index("--stop-step", stop_step, len(names) - 1)
    if first > last:
        raise ConfigError(f"--start-step {start_step} comes after --stop-step {stop_step}")
    return first, last


def step_checkpoints(build_dir: str | Path) -> dict[str, Path]:
    """Every checkpoint a finished step of the build in ``build_dir`` saved: step name -> ONNX path.

    >>> step_checkpoints("runs/tfc/build-pynq-z2")["correct_datatypes"]          # doctest: +SKIP
    PosixPath('runs/tfc/build-pynq-z2/intermediate/correct_datatypes.onnx')
    """
    from hwq._io import read_json

    build_dir = Path(build_dir)
    manifest = read_json(build_dir / MANIFEST_FILE, "build manifest")
    return {entry["name"]: build_dir / entry["onnx"] for entry in manifest.get("steps", [])
            if isinstance(entry, dict) and entry.get("status", "done") == "done" and entry.get("onnx")}


def step_checkpoint(build_dir: str | Path, step: str) -> Path:
    """The checkpoint of ``step`` in the build in ``build_dir``; a one-line HwqError if it has none."""
    found = step_checkpoints(build_dir)
    if step not in found or not found[step].is_file():
        raise HwqError(f"{Path(build_dir) / MANIFEST_FILE}: no checkpoint of step '{step}' (the build did not get "
                       f"that far; it has: {', '.join(found) or 'none'})")
    return found[step]


def run_steps(steps: Sequence[tuple[str, Callable]], model: Any, ctx: Any, manifest: dict[str, Any], *,
              progress: StepProgress, log: TextIO | None = None, save: bool = True) -> Any:
    """Run ``steps`` on ``model``; ``manifest`` (its ``steps`` and the steps' sections) is filled in as they go.

    ``ctx.out_dir`` is the build folder: checkpoints go to ``<out_dir>/intermediate/<step>.onnx`` (``save``) and
    ``manifest.json`` is rewritten after every step. ``ctx.reports`` is set to a read-only view of ``manifest`` and
    ``ctx.checkpoints`` (step -> ONNX path) grows by each saved checkpoint, for steps that read what an earlier
    step reported or saved. A step that raises keeps its entry ``running`` (with its seconds) and the exception
    goes to the caller, which records the failure (:func:`hwq.manifest.fail` marks the entry).
    """
    out_dir = Path(ctx.out_dir)
    ctx.reports = MappingProxyType(manifest)
    (out_dir / INTERMEDIATE if save else out_dir).mkdir(parents=True, exist_ok=True)
    for name, run in steps:
        entry = records.step(manifest, name, status="running")
        if log is not None:
            log.write(f"== {name}\n")
            log.flush()
        timing: dict = {}
        try:
            with progress.step(name) as timing:
                result = run(model, ctx)
        finally:  # also when the step fails: its seconds so far go into the manifest
            entry["seconds"] = timing.get("seconds")
            if log is not None:
                log.flush()
        model, report = _checked(name, result)
        manifest.update(report)
        entry.update(status="done", reported=sorted(report))
        if save:
            checkpoint = f"{INTERMEDIATE}/{name}.onnx"
            model.save(str(out_dir / checkpoint))
            entry["onnx"] = checkpoint
            ctx.checkpoints[name] = out_dir / checkpoint
        write_json(out_dir / MANIFEST_FILE, manifest)
    return model


def _checked(name: str, result: Any) -> tuple[Any, dict[str, Any]]:
    """A step's ``(model, report)``; anything else (a custom step of the old ``-> model`` signature, a report that
    is not a dict or names a field the driver owns) is a TypeError naming the step."""
    if not (isinstance(result, tuple) and len(result) == 2 and isinstance(result[1], dict)):
        raise TypeError(f"step '{name}' returned {type(result).__name__}; a step returns (model, report dict)")
    clash = sorted(set(result[1]) & set(records.FIELDS + ("error",)))
    if clash:
        raise TypeError(f"step '{name}' reported {', '.join(clash)}, which the driver owns")
    return result


# --- resuming -------------------------------------------------------------------------------------------------------
def check_resumable(previous_dir: Path, steps: Sequence[tuple[str, Callable]], first: int,
                    manifest: Mapping[str, Any], start_step: str) -> dict[str, Any]:
    """The manifest of the earlier build in ``previous_dir`` that ``steps[first:]`` can resume, checked.

    It must have the settings (``config``) and inputs (SHA-256) of ``manifest``, and every step before
    ``start_step`` must have finished there with a checkpoint; anything else is a one-line ConfigError naming it.
    """
    path = previous_dir / MANIFEST_FILE
    flag = f"--start-step {start_step}"
    previous = records.read(path)
    if previous is None:
        raise ConfigError(f"{flag}: {path}: no earlier build to resume from; build from the first step")
    difference = records.config_difference(previous.get("config") or {}, manifest["config"])
    if difference:
        raise ConfigError(f"{flag}: {path} was built with other settings ({difference}); give the same settings "
                          "or build from the first step")
    for name, entry in manifest["inputs"].items():
        if ((previous.get("inputs") or {}).get(name) or {}).get("sha256") != entry["sha256"]:
            raise ConfigError(f"{flag}: {path} was built from another {name} ({entry['path']} changed); build "
                              "from the first step")
    done = _finished_steps(previous)
    for name in step_names(steps[:first]):
        if name not in done or not done[name].get("onnx") or not (previous_dir / done[name]["onnx"]).is_file():
            raise ConfigError(f"{flag}: step '{name}' has no finished checkpoint in {path}; start at '{name}' or "
                              "earlier")
    return previous


def restore(previous_dir: Path, previous: Mapping[str, Any], out_dir: Path, steps: Sequence[tuple[str, Callable]],
            first: int, manifest: dict[str, Any], ctx: Any) -> Path:
    """Copy the earlier build into ``out_dir`` and take over its first ``first`` steps; returns the checkpoint the
    next step starts from.

    The copy leaves out ``measure/`` (it measured another accelerator) and the checkpoints of the steps to run; the
    earlier steps' entries, and the sections they reported, go into ``manifest``; their checkpoints into
    ``ctx.checkpoints``.
    """
    shutil.copytree(previous_dir, out_dir, dirs_exist_ok=True, ignore=shutil.ignore_patterns("measure"))
    for name in step_names(steps[first:]):
        (out_dir / INTERMEDIATE / f"{name}.onnx").unlink(missing_ok=True)
    done = _finished_steps(previous)
    for name in step_names(steps[:first]):
        entry = done[name]
        manifest["steps"].append(entry)
        manifest.update({key: previous[key] for key in entry.get("reported", []) if key in previous})
        ctx.checkpoints[name] = out_dir / entry["onnx"]
    return ctx.checkpoints[step_names(steps)[first - 1]]


def _finished_steps(manifest: Mapping[str, Any]) -> dict[str, dict]:
    return {e["name"]: e for e in manifest.get("steps", [])
            if isinstance(e, dict) and e.get("status") == "done" and "name" in e}
