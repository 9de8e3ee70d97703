# SPDX-License-Identifier: BSD-3-Clause
"""A measurement's report on disk, from the first moment of the run to its last file. Nothing measured is lost:

* at the start the report is written as ``status: running``, so the previous run's ``done`` never survives a run
  that is stopped, fails or is killed;
* while the run goes on it is rewritten (at most once a second) with the windows completed so far;
* at the end it is written as ``done``, ``failed`` (with the one-line ``error``) or ``interrupted``, atomically,
  *before* any file derived from it (plots, traces): a full disk or a failing plot costs that file, never the
  numbers, and the failure is noted in the report under ``output_errors``.

>>> file = ReportFile(Path("measure/measure-performance.json"), {"status": "running", "outputs": {}})  # doctest: +SKIP
>>> file.write(); ...; file.finish("done")                                                         # doctest: +SKIP
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

from hwq import manifest as records
from hwq._io import write_json

#: Least time between two rewrites of a running report (a window lasts 10 s; accuracy images come 50 a second).
CHECKPOINT_S = 1.0


#: An exception as the one line a report and the CLI show (the shared record's :func:`hwq.manifest.error_line`).
one_line = records.error_line


class ReportFile:
    """The report dict of one run and the JSON file it lives in, plus the files made from it at the end."""

    def __init__(self, path: Path, report: dict) -> None:
        self.path, self.report = Path(path), records.conform(report, "measure")
        self.report["tool_versions"] = {**_tool_versions(), **self.report["tool_versions"]}
        self._started = time.monotonic()
        self._last_write = 0.0
        #: files made from the finished report: output key -> (file name, writer(path))
        self.derived: dict[str, tuple[str, Callable[[Path], None]]] = {}

    def write(self) -> None:
        """Write the report as it stands, atomically (a reader never sees half a file)."""
        _shape_inputs(self.report)
        write_json(self.path, self.report)
        self._last_write = time.monotonic()

    def checkpoint(self) -> None:
        """Rewrite the running report if the last write is older than :data:`CHECKPOINT_S`."""
        if time.monotonic() - self._last_write >= CHECKPOINT_S:
            self.write()

    def derive(self, key: str, filename: str, writer: Callable[[Path], None]) -> None:
        """Make ``filename`` with ``writer(path)`` once the report is finished; recorded as ``outputs[key]``."""
        self.derived[key] = (filename, writer)

    def finish(self, status: str, error: BaseException | None = None) -> list[str]:
        """Write the final report, then the derived files; returns the derived files that could not be written.

        The report is written first, so what was measured is on disk before anything else can fail; a derived
        file that fails is listed in ``output_errors`` and the report is rewritten once more to say so (if even
        that fails, the report on disk is still complete, only without the note).
        """
        self.report["status"] = status
        if error is not None:
            self.report["error"] = one_line(error)
        # the shared record's view (hwq.manifest): one step, the measurement, and its summary as the results
        self.report["steps"] = [{"name": self.report.get("mode", "measure"), "status": status,
                                 "seconds": round(time.monotonic() - self._started, 3)}]
        self.report["results"] = self.report.get("summary", {})
        self.write()
        failures = []
        for key, (filename, writer) in self.derived.items():
            try:
                writer(self.path.parent / filename)
                self.report["outputs"][key] = filename
            except Exception as err:        # a plot or trace must never cost the report: note it, go on
                failures.append(f"{filename}: {one_line(err)}")
        if failures:
            self.report["output_errors"] = failures
        if self.derived:
            try:
                self.write()
            except OSError:
                pass                        # the first write holds every measured number
        return failures


def _tool_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    import hwq

    try:
        return {"hwq": hwq.__version__, "pyserial": version("pyserial")}
    except PackageNotFoundError:
        return {"hwq": hwq.__version__}


def _shape_inputs(report: dict) -> None:
    """The measured build's manifest as an input of the shared record: ``inputs.build_manifest`` = ``{"path",
    "sha256"}`` (the measurement records the path and ``build_manifest_sha256`` beside each other)."""
    inputs = report.get("inputs")
    if isinstance(inputs, dict) and isinstance(inputs.get("build_manifest"), str):
        inputs["build_manifest"] = {"path": inputs["build_manifest"],
                                    "sha256": inputs.get("build_manifest_sha256", report.get("build_manifest_sha256"))}


def summary_table(report: dict) -> str:
    """A short plain-text table of a report's summary, with units."""
    s = report.get("summary", {})
    rows = [(k, f"{v:,.4f}" if isinstance(v, float) else str(v)) for k, v in s.items()]
    width = max((len(k) for k, _ in rows), default=10)
    head = f"{report.get('device', {}).get('name', '?')} - {report['mode']} ({report['status']})"
    return "\n".join([head] + [f"  {k:<{width}}  {v:>20}" for k, v in rows])
