# SPDX-License-Identifier: BSD-3-Clause
"""Measurement runs over the serial protocol: performance (timed windows), accuracy (a dataset on the device) and
energy (timed windows with a power source, :mod:`hwq.harness.energy`).

Performance: the window size N is probed and sized so that every window lasts at least ``min_window_s`` of device
time (:mod:`hwq.harness.windows`); ``latency_windows`` x ``infer 1 W`` time one inference each (the pipeline
latency), then ``windows`` x ``infer N W`` give the throughput ``N / (t1 - t0)`` (and its inverse,
``time_per_inference_us``); medians and spreads are reported. Accuracy: each test image is loaded and run with
``infer 1 0``; the device's top-1 is compared with the host's reference (the build's HW graph executed here) and
with the label (``pipeline``: the next images' commands are sent before the earlier replies are read,
:meth:`~hwq.harness.device.Device.load_and_infer_each`); ``answered`` says how fast the images were answered
(the exchanges only). A device reboot mid-run reloads the input and repeats the window/image.

The report (``measure-<mode>.json``, :mod:`hwq.harness.report`) says ``running`` from the start, holds the windows
completed so far, and ends ``done``, ``failed`` (with the one-line error) or ``interrupted`` (Ctrl-C, SIGTERM: the
completed windows are kept and :class:`~hwq.errors.Interrupted` says where). A build whose manifest is not done or
whose gates failed is refused unless ``force`` (:mod:`hwq.harness.inputs`). Outputs under ``out_dir``:
``transcript.log`` (raw bytes, rotated: :mod:`hwq.harness.transcript`), the report, then ``latency.png``
(performance) or ``power.png`` and ``power-trace.csv`` (energy).

>>> report = run_measure(MeasureConfig(port="/dev/pts/3", mode="performance", build_dir="runs/x/build-pynq-z2",
...                                    out_dir="runs/x/measure"))                 # doctest: +SKIP
>>> report["summary"]["throughput_median_per_s"], report["summary"]["latency_median_us"]   # doctest: +SKIP
(12500000.0, 0.0)
"""

from __future__ import annotations

import statistics
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

from hwq.errors import ConfigError, Interrupted
from hwq.harness.errors import DeviceResetError
from hwq.harness.config import MODES, POWER_SOURCES, MeasureConfig
from hwq.harness.device import Device
from hwq.harness.energy import run_energy
from hwq.harness.inputs import BuildInputs, check_build, load_test_set
from hwq.harness.plots import performance_figure, save_figure
from hwq.harness.report import ReportFile, summary_table
from hwq.harness.transcript import Transcript
from hwq.harness.windows import (TimedWindows, device_input, new_load_state, one_inference_latency, reloading,
                                 window_stats)

__all__ = ["MODES", "POWER_SOURCES", "MeasureConfig", "run_measure", "summary_table", "window_stats"]

TRANSCRIPT = "transcript.log"
#: Images whose host-reference classes are computed at once (batched) in accuracy mode.
HOST_CHUNK = 100
#: The device timer's resolution: MLPerf Tiny timestamps are whole microseconds.
CLOCK_RESOLUTION_US = 1


@dataclass
class Run:
    """What the parts of one measurement share: its settings, the build's model, the report file, progress."""

    config: MeasureConfig
    model: object | None                    # hwq.accelerator_model.BuildModel, or None without --build
    file: ReportFile
    progress: Callable[[str], None] | None = None

    @property
    def report(self) -> dict:
        return self.file.report

    def say(self, message: str) -> None:
        if self.progress:
            self.progress(message)


def run_measure(config: MeasureConfig, progress=None) -> dict:
    """Run one measurement; returns the report (also written to ``out_dir/measure-<mode>.json``).

    Raises :class:`~hwq.errors.HwqError` (the report is written as ``failed`` first) or, on Ctrl-C/SIGTERM,
    :class:`~hwq.errors.Interrupted` (the report is written as ``interrupted`` with the completed windows).
    """
    out = writable_out_dir(config.out_dir)
    run = Run(config, None, ReportFile(out / f"measure-{config.mode}.json", new_report(config)), progress)
    run.file.write()            # at once: a stale 'done' from the previous run must not outlive this one
    transcript = Transcript(out / TRANSCRIPT, int(config.transcript_max_mb * 1e6), config.transcript_keep)
    started = time.monotonic()
    try:
        if config.build_dir:
            run.report.update(build_inputs(check_build(config.build_dir, config.force)))
        run.model = _load_model(config)
        _on_device(run, transcript)
    except KeyboardInterrupt as err:
        _end(run, "interrupted", started, transcript)
        raise Interrupted.wrap(err, f"report written as 'interrupted': {run.file.path} ({completed(run)})") from None
    except Exception as err:
        _end(run, "failed", started, transcript, err)
        raise
    _end(run, "done", started, transcript)
    return run.report


def writable_out_dir(out_dir: str) -> Path:
    """``out_dir``, created; a folder that cannot be written is a one-line error before anything is measured."""
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as err:
        reason = (err.strerror or type(err).__name__).lower()
        raise ConfigError(f"--out {out}: cannot write the report there ({reason})") from None
    return out


def new_report(config: MeasureConfig) -> dict:
    """The report as it starts: ``running``, with the settings; the build's manifest is added once checked."""
    return {"stage": "measure", "mode": config.mode, "status": "running", "config": asdict(config),
            "build": str(config.build_dir) if config.build_dir else None, "build_manifest_sha256": None,
            "inputs": {"build_manifest": None}, "started_unix_s": round(time.time(), 3),
            "outputs": {"transcript": TRANSCRIPT, "results": f"measure-{config.mode}.json"}}


def build_inputs(inputs: BuildInputs) -> dict:
    """The report's record of the build it measured: the manifest (path, state, what --force overrode) and, at
    the top level, its SHA-256 (``build_manifest_sha256``: which build this report is about)."""
    return {"inputs": inputs.to_report(), "build_manifest_sha256": inputs.manifest_sha256}


def _on_device(run: Run, transcript: Transcript) -> None:
    modes = {"performance": _performance, "accuracy": _accuracy, "energy": run_energy}
    c = run.config
    with Device.open(c.port, c.baud, c.timeout_s, transcript) as dut:
        try:
            run.report["device"] = {"name": dut.name(), **asdict(dut.profile())}
            modes[c.mode](dut, run)
        finally:
            run.report["recoveries"] = dut.recoveries


def _end(run: Run, status: str, started: float, transcript: Transcript, error: BaseException | None = None) -> None:
    run.report["seconds"] = round(time.monotonic() - started, 3)
    transcript.close()                  # closed with the port already, unless the run failed before opening it
    if transcript.error:
        run.report["transcript_error"] = transcript.error
    for failure in run.file.finish(status, error):
        run.say(f"warning: {failure}; the report {run.file.path} is complete without it")


def completed(run: Run) -> str:
    """How far a run got, for the one-line message of an interruption: ``3 of 5 windows``."""
    if run.config.mode == "accuracy":
        return f"{run.report.get('summary', {}).get('samples', 0)} of {run.report.get('samples_planned', '?')} images"
    return f"{len(run.report.get('windows', []))} of {run.config.windows} windows"


def _load_model(config: MeasureConfig):
    if config.build_dir is None:
        if config.mode == "accuracy" or not config.input_bytes:
            raise ConfigError(f"--mode {config.mode}: give --build BUILD_DIR (or --input-bytes for performance)")
        return None
    from hwq.accelerator_model import BuildModel

    # performance and energy send one image (the build's sample input): no graph, no FINN import
    return BuildModel.from_build_dir(config.build_dir, load_graph=config.mode == "accuracy")


# --- performance ---------------------------------------------------------------------------------------------------
def _performance(dut: Device, run: Run) -> None:
    config, report = run.config, run.report
    data, state = device_input(config, run.model), new_load_state()
    windows = TimedWindows.probe(dut, config, data, state)
    report.update(n_per_window=windows.n, warmup=config.warmup, latency_windows=[], windows=[],
                  window_resizes=windows.resized)
    one_inference_latency(dut, config, data, state, report["latency_windows"])
    report["summary"] = perf_summary(report, run.model)
    run.file.derive("plot", "latency.png", lambda path: save_figure(performance_figure(report), path))
    s = report["summary"]
    run.say(f"latency of one inference (infer 1 {config.warmup}): median {s['latency_median_us']:g} us over "
            f"{s['latency_windows']} windows" + (f" (estimated {s['estimated_latency_us']:g} us)"
                                                 if s.get("estimated_latency_us") is not None else ""))
    while len(report["windows"]) < config.windows:
        r = windows.run()
        if not windows.accept(r):
            continue
        report["windows"].append({"n": r.n, "t0_us": r.t0_us, "t1_us": r.t1_us, "elapsed_us": r.elapsed_us,
                                  "throughput_per_s": r.throughput_per_s,
                                  "time_per_inference_us": r.time_per_inference_us, "top1": r.results.top1})
        report["n_per_window"] = windows.n
        report["summary"] = perf_summary(report, run.model)
        run.say(f"window {len(report['windows'])}/{config.windows}: {r.throughput_per_s:,.1f} inf/s over "
                f"{r.elapsed_us / 1e6:.3f} s")
        run.file.checkpoint()


def perf_summary(report: dict, model) -> dict:
    """Throughput (timed windows), time per inference (its inverse) and the latency of one inference (``infer 1``
    windows), with the build's own figures beside them (its ``accelerator`` section: FINN's estimate, or an open
    build's simulated cycles at its measured Fmax; ``estimate_source`` says which)."""
    windows, lat = report.get("windows", []), report.get("latency_windows", [])
    summary: dict = {"windows": len(windows)}
    if windows:
        per = [w["time_per_inference_us"] for w in windows]
        summary.update(window_stats([w["throughput_per_s"] for w in windows], "throughput", "per_s"))
        summary.update(time_per_inference_median_us=statistics.median(per), time_per_inference_min_us=min(per),
                       time_per_inference_max_us=max(per),
                       time_per_inference_stdev_us=statistics.stdev(per) if len(per) > 1 else 0.0,
                       shortest_window_s=min(w["elapsed_us"] for w in windows) / 1e6)
    if lat:
        us = [w["latency_us"] for w in lat]
        summary.update(latency_windows=len(lat), latency_median_us=statistics.median(us), latency_min_us=min(us),
                       latency_max_us=max(us), latency_mean_us=statistics.fmean(us))
    summary["clock_resolution_us"] = CLOCK_RESOLUTION_US
    if model is not None:
        spec = model.accelerator
        summary.update(estimated_fps_per_s=spec.fps, estimated_latency_us=spec.latency_us,
                       estimate_source=spec.source)
        if windows:
            summary["measured_over_estimated"] = summary["throughput_median_per_s"] / spec.fps
    return summary


# --- accuracy ------------------------------------------------------------------------------------------------------
def _accuracy(dut: Device, run: Run) -> None:
    config, model, report = run.config, run.model, run.report
    name, images, labels = load_test_set(config, model)
    report.update(dataset=name, samples_planned=len(labels), disagreements=[])
    tally = AccuracyTally(report, labels)
    state = new_load_state()
    inputs: list[bytes] = []            # the images as device bytes, a chunk ahead ...
    host: list[int] = []                # ... and the host reference's classes for them, computed at once

    def prepared(i: int) -> bytes:
        if i == len(inputs):
            chunk = [model.to_device_bytes(image) for image in images[i:i + HOST_CHUNK]]
            inputs.extend(chunk)
            host.extend(model.classify_many(chunk))
        return inputs[i]

    def answered(got: int) -> None:
        tally.add(got, host[tally.done])
        if tally.done % 50 == 0 or tally.done == len(labels):
            run.say(tally.progress())
        run.file.checkpoint()

    started = time.monotonic()
    while tally.done < len(labels):
        if not config.pipeline:                     # one command at a time (the input reloaded after a reboot)
            data = prepared(tally.done)
            state["loaded"] = False
            answered(reloading(dut, data, config, state, lambda: dut.infer(1, 0)).results.top1)
            continue
        try:                                        # images in flight, in order; after a reboot go on from the
            for result in dut.load_and_infer_each(prepared(i) for i in range(tally.done, len(labels))):
                answered(result.results.top1)       # first image not answered
        except DeviceResetError:
            state["resets"] += 1
            if state["resets"] > config.resets_allowed:
                raise
    seconds = time.monotonic() - started            # the images' exchanges only: no start-up, no port opening
    report["answered"] = {"images": tally.done, "seconds": round(seconds, 4),
                          "images_per_s": round(tally.done / seconds, 1) if seconds > 0 else None}


class AccuracyTally:
    """Accuracy mode's counts, kept in the report's ``summary`` and ``disagreements`` as each image is answered."""

    def __init__(self, report: dict, labels) -> None:
        self.report, self.labels = report, labels
        self.done = self.device_ok = self.host_ok = self.agree = 0

    def add(self, got: int, ref: int) -> None:
        label = int(self.labels[self.done])
        if got != ref:
            self.report["disagreements"].append({"index": self.done, "label": label, "device": got, "host": ref})
        self.done += 1
        self.device_ok += got == label
        self.host_ok += ref == label
        self.agree += got == ref
        self.report["summary"] = {"samples": self.done, "device_accuracy": self.device_ok / self.done,
                                  "host_accuracy": self.host_ok / self.done, "agreement": self.agree / self.done,
                                  "disagreements": len(self.report["disagreements"])}

    def progress(self) -> str:
        return (f"{self.done}/{len(self.labels)} images: device top-1 {100 * self.device_ok / self.done:.2f}%, "
                f"agreement with host {100 * self.agree / self.done:.2f}%")
