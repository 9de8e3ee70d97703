# SPDX-License-Identifier: BSD-3-Clause
"""The one record every stage writes: train (``metrics.json``), export (``export.json``), build
(``build-*/manifest.json``, either backend), measure (``measure/measure-<mode>.json``) and the flow (``flow.json``).

Each of these files keeps its own fields (``test_acc``, ``verification``, ``estimates`` ...) and has, beside them,
the same eight fields, so that one reader understands every stage and one function decides "up to date":

==================  ================================================================================================
``stage``           ``train``, ``export``, ``build``, ``measure`` or ``flow``
``status``          ``running`` while it runs, then ``done``, ``stopped`` (a build ended early by ``--stop-step``),
                    ``failed`` or ``interrupted``, the last two with the one-line ``error``
``config``          the settings, as the stage's config dataclass writes them
``inputs``          name -> ``{"path", "sha256"}`` of every file it was made from
``outputs``         name -> path of each file it wrote, relative to the record's folder; ``<name>_sha256`` beside
                    an output is that file's SHA-256
``steps``           ``{"name", "seconds", "status"}`` per step (a build's steps also name their checkpoint, ``onnx``)
``tool_versions``   package -> version
``results``         the stage's headline numbers (accuracy, fps, resources ...)
==================  ================================================================================================

A record is written atomically (:func:`hwq._io.write_json`), also when the stage fails.

>>> record = start("export", {"verify_samples": 500}, {"weights": "runs/x/model.pt"}, {"qonnx": "1.0.0"})
>>> record["status"], sorted(record["inputs"]["weights"])
('running', ['path', 'sha256'])
>>> up_to_date("runs/x/export.json", {"verify_samples": 500}, {"weights": "runs/x/model.pt"})   # doctest: +SKIP
True
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Mapping

from hwq._io import write_json
from hwq.errors import HwqError, os_error_message

#: The fields every stage's record has (besides its own).
FIELDS = ("stage", "status", "config", "inputs", "outputs", "steps", "tool_versions", "results")
STATUSES = ("running", "done", "stopped", "failed", "interrupted")
#: An output named ``<name>_sha256`` holds the SHA-256 of the output ``<name>``.
HASH_SUFFIX = "_sha256"


def sha256_file(path: str | Path) -> str | None:
    """The SHA-256 of a file, None when there is no such file."""
    path = Path(path)
    if not path.is_file():
        return None
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_record(path: str | Path) -> dict[str, Any]:
    """An input as a record holds it: ``{"path": ..., "sha256": ...}`` (sha256 None for a missing file)."""
    return {"path": str(path), "sha256": sha256_file(path)}


def error_line(err: BaseException) -> str:
    """An exception as the one line a record and the CLI show."""
    if isinstance(err, HwqError):
        return str(err)
    if isinstance(err, OSError):
        return os_error_message(err)
    if isinstance(err, KeyboardInterrupt):
        return f"interrupted ({getattr(err, 'signal_name', 'SIGINT')})"
    text = str(err).splitlines()[0] if str(err) else ""
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def start(stage: str, config: Mapping[str, Any], inputs: Mapping[str, str | Path],
          tool_versions: Mapping[str, str], **fields: Any) -> dict[str, Any]:
    """A new record, ``running``: the shape's fields (``inputs`` hashed now) followed by the stage's ``fields``."""
    return {"stage": stage, "status": "running", "config": dict(config),
            "inputs": {name: file_record(path) for name, path in inputs.items()}, "outputs": {}, "steps": [],
            "tool_versions": dict(tool_versions), "results": {}, **fields}


def conform(record: dict[str, Any], stage: str) -> dict[str, Any]:
    """Give a stage's existing record the fields of the shape that it lacks (empty ones); returns it."""
    record.setdefault("stage", stage)
    record.setdefault("status", "running")
    for name, empty in (("config", {}), ("inputs", {}), ("outputs", {}), ("steps", []), ("tool_versions", {}),
                        ("results", {})):
        record.setdefault(name, empty)
    return record


def step(record: dict[str, Any], name: str, seconds: float | None = None, status: str = "done",
         **fields: Any) -> dict[str, Any]:
    """Append a step to ``record["steps"]``; returns the step's entry (to be completed by the caller)."""
    entry = {"name": name, "seconds": seconds, "status": status, **fields}
    record["steps"].append(entry)
    return entry


def finish(record: dict[str, Any], path: str | Path | None, status: str = "done") -> dict[str, Any]:
    """Set the final ``status`` (``done`` or ``stopped``) and write the record to ``path`` (None: do not write)."""
    if status not in ("done", "stopped"):
        raise ValueError(f"finish: status {status!r}; a failure goes through fail()")
    record["status"] = status
    record.pop("error", None)
    if path is not None:
        write_json(path, record)
    return record


def fail(record: dict[str, Any], path: str | Path | None, err: BaseException) -> dict[str, Any]:
    """Record ``err``: status ``interrupted`` (Ctrl-C, SIGTERM) or ``failed``, its one line as ``error``, and the
    step that was running (if any) marked the same way; writes the record to ``path`` (None: do not write)."""
    status = "interrupted" if isinstance(err, KeyboardInterrupt) else "failed"
    record["status"], record["error"] = status, error_line(err)
    for entry in record.get("steps", [])[-1:]:
        if entry.get("status") == "running":
            entry["status"] = status
            if status == "interrupted":
                record["error"] += f" in step '{entry['name']}'"
    if path is not None:
        write_json(path, record)
    return record


def read(path: str | Path) -> dict[str, Any] | None:
    """The record in ``path``; None when it is missing or not a JSON object (a stage then simply runs again)."""
    try:
        record = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def config_difference(recorded: Mapping[str, Any], wanted: Mapping[str, Any]) -> str | None:
    """The first setting of ``wanted`` whose value ``recorded`` does not have, in words; None when all match.

    Only the settings in ``wanted`` are compared: a caller leaves out one that may differ (the serial port of an
    emulated board, which is new every time; a thread count the recipe leaves to the machine).

    >>> config_difference({"epochs": 3, "seed": 0}, {"epochs": 4})
    'epochs: 3 there, 4 here'
    """
    for key, value in wanted.items():
        if key not in recorded:
            return f"{key}: not recorded there, {value!r} here"
        if recorded[key] != value:
            return f"{key}: {recorded[key]!r} there, {value!r} here"
    return None


def stale_reason(path: str | Path, config: Mapping[str, Any], inputs: Mapping[str, str | Path]) -> str | None:
    """Why the stage recorded in ``path`` must run again, or None when it is up to date.

    Up to date means: the record says ``done``; it has every setting of ``config`` with the same value
    (:func:`config_difference`); every named input has the SHA-256 it recorded; and every output it lists is
    present, with its recorded SHA-256 where it has one (``<name>_sha256``).
    """
    path = Path(path)
    record = read(path)
    if record is None:
        return f"{path.name}: none yet"
    if record.get("status") != "done":
        return f"{path.name}: status {record.get('status')!r}"
    recorded = record.get("config")
    difference = config_difference(recorded if isinstance(recorded, dict) else {}, config)
    if difference:
        return f"other settings ({difference})"
    recorded_inputs = record.get("inputs") if isinstance(record.get("inputs"), dict) else {}
    for name, input_path in inputs.items():
        entry = recorded_inputs.get(name)
        if not isinstance(entry, dict) or entry.get("sha256") is None:
            return f"input {name} not recorded"
        if sha256_file(input_path) != entry["sha256"]:
            return f"{input_path} changed"
    outputs = record.get("outputs") if isinstance(record.get("outputs"), dict) else {}
    for name, value in outputs.items():
        if name.endswith(HASH_SUFFIX) or not isinstance(value, str):
            continue
        output = path.parent / value
        if not output.exists():
            return f"{output} missing"
        wanted = outputs.get(name + HASH_SUFFIX)
        if wanted is not None and sha256_file(output) != wanted:
            return f"{output} changed"
    return None


def up_to_date(path: str | Path, config: Mapping[str, Any], inputs: Mapping[str, str | Path]) -> bool:
    """Whether the stage recorded in ``path`` is up to date (:func:`stale_reason` says why not)."""
    return stale_reason(path, config, inputs) is None


# --- build records --------------------------------------------------------------------------------------------------
def estimate_totals(record: Mapping[str, Any], where: str = "manifest.json") -> dict[str, Any]:
    """FINN's estimate totals of a build (either backend): ``max_cycles``, ``estimated_fps``, ``LUT`` ...

    A build that did not get to its ``estimate`` step is a one-line :class:`~hwq.errors.HwqError` naming ``where``.

    >>> estimate_totals({"estimates": {"total": {"estimated_fps": 1e6}}})["estimated_fps"]
    1000000.0
    """
    total = record.get("estimates", {}).get("total") if isinstance(record.get("estimates"), dict) else None
    if not isinstance(total, dict):
        raise HwqError(f"{where}: no estimates.total (the build did not run its 'estimate' step)")
    return total


def step_checkpoint(record: Mapping[str, Any], step_name: str) -> str | None:
    """The checkpoint (ONNX file, relative to the build folder) that a build's step saved; None if it saved none."""
    for entry in record.get("steps", []):
        # (builds made before steps had a status listed only the steps that finished)
        if isinstance(entry, dict) and entry.get("name") == step_name and entry.get("status", "done") == "done":
            return entry.get("onnx")
    return None
