# SPDX-License-Identifier: BSD-3-Clause
"""Which builds may be used: what a measurement (``hwq measure``) and the emulated board (``hwq emulate``) check
before they take anything from a build.

No stage consumes a failed artifact: a build whose manifest is not ``status: done``, or whose verification gates
did not pass, is refused with one line naming the manifest, unless ``force`` (``--force``) overrides it; the
override is recorded with what it overrode. The manifest's SHA-256 goes into the report
(``build_manifest_sha256``), so a later stage can tell which build a report measured.

>>> inputs = check_build("runs/x/build-pynq-z2")                              # doctest: +SKIP
>>> inputs.to_report()["build_manifest_sha256"][:8]                         # doctest: +SKIP
'3f9a0c1e'
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from hwq.errors import HwqError

#: The gates a build must have passed, per backend: dotted paths into the manifest that must be ``true``.
GATES = {"finn": ("bit_exact.passed", "integer_range.passed"), "open": ("simulation.bit_exact",)}


@dataclass(frozen=True)
class BuildInputs:
    """A build's manifest as a measurement saw it: where, its hash, and why it is unfit (empty when it is fit)."""

    manifest_path: str
    manifest_sha256: str
    status: str | None
    problems: tuple[str, ...]
    forced: bool

    def to_report(self) -> dict:
        return {"build_manifest": self.manifest_path, "build_manifest_sha256": self.manifest_sha256,
                "build_status": self.status, "forced": self.forced, "overridden_problems": list(self.problems)}


def build_problems(manifest: dict) -> list[str]:
    """Why a build must not be used: its status is not ``done``, or a gate of its backend is not ``true``.

    >>> build_problems({"status": "failed", "bit_exact": {"passed": True}, "integer_range": {"passed": False}})
    ["status is 'failed', expected 'done'", 'integer_range.passed is False, expected true']
    """
    problems = []
    if manifest.get("status") != "done":
        problems.append(f"status is {manifest.get('status')!r}, expected 'done'")
    for gate in GATES.get(manifest.get("backend", "finn"), GATES["finn"]):
        value = _lookup(manifest, gate)
        if value is not True:
            problems.append(f"{gate} is {'missing' if value is None else repr(value)}, expected true")
    return problems


def check_build(build_dir: str | Path, force: bool = False, use: str = "measure") -> BuildInputs:
    """Read ``build_dir/manifest.json`` and refuse an unfit build (one-line HwqError) unless ``force``."""
    path = Path(build_dir) / "manifest.json"
    if not path.is_file():
        raise HwqError(f"{path}: build manifest not found (is {build_dir} a directory written by 'hwq build'?)")
    raw = path.read_bytes()
    try:
        manifest = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise HwqError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(manifest, dict):
        raise HwqError(f"{path}: expected a JSON object (a build manifest)")
    problems = build_problems(manifest)
    if problems and not force:
        raise HwqError(f"{path}: refusing to {use} a build that did not pass ({'; '.join(problems)}); "
                       f"rebuild it, or add --force to {use} it anyway")
    return BuildInputs(str(path), hashlib.sha256(raw).hexdigest(), manifest.get("status"), tuple(problems),
                       forced=bool(problems))


def _lookup(mapping: dict, dotted: str):
    value = mapping
    for key in dotted.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value
