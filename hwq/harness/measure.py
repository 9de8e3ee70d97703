# SPDX-License-Identifier: BSD-3-Clause
"""Measurement runs over the serial protocol: performance (timed windows) and accuracy (a dataset on the device).

Performance: the window size N is probed (growing tenfold until a window lasts ``probe_us`` of device time) and
scaled to ``min_window_s``; then ``windows`` x ``infer N W``, each giving throughput ``N / (t1 - t0)`` and latency
``(t1 - t0) / N``; the median and spread are reported. Accuracy: each test image is loaded and run with
``infer 1 0``; the device's top-1 is compared with the host's reference (the build's HW graph executed here) and
with the label. A device reboot mid-run reloads the input and repeats the window/image; any other failure stops
the run, and the report (with completed windows) is still written before the error is raised.

Outputs under ``out_dir``: ``transcript.log`` (append-only raw bytes), ``measure-<mode>.json`` (atomic) and, for
performance, ``latency.png``.

>>> report = run_measure(MeasureConfig(port="/dev/pts/3", mode="performance", build_dir="runs/x/build-pynq-z2",
...                                    out_dir="runs/x/measure"))                 # doctest: +SKIP
>>> report["summary"]["throughput_median_per_s"]                                   # doctest: +SKIP
12500000.0
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from hwq._io import write_json
from hwq.errors import ConfigError
from hwq.harness.device import Device
from hwq.harness.errors import DeviceResetError, HarnessError, ProtocolError

MODES = ("performance", "accuracy", "energy")
POWER_SOURCES = ("rails", "lpm01a")


@dataclass(frozen=True)
class MeasureConfig:
    """Settings of one measurement run."""

    port: str                               # device path, pty path or pyserial URL (socket://host:port)
    mode: str = "performance"               # performance or accuracy
    out_dir: str = "measure"                # reports go here
    build_dir: str | None = None            # build whose input layout/dataset/reference model to use
    baud: int = 115200                      # the PYNQ-Z2's UART default
    windows: int = 5                        # MLPerf Tiny: 5 windows, median reported
    min_window_s: float = 10.0              # MLPerf Tiny: each window lasts >= 10 s (device time)
    warmup: int = 10                        # warm-up inferences before each window
    max_n: int = 10**9                      # cap on inferences per window
    probe_us: int = 10_000                  # device time a probe window must reach before N is extrapolated
    samples: int | None = None              # accuracy: test images to send (None: the whole test split)
    data_dir: str | None = None             # dataset folder (default: the build's, $HWQ_DATA or ../shared/data)
    input_bytes: int | None = None          # performance without a build: size of the (zero) input
    timeout_s: float = 5.0                  # per reply (infer: 30 s or 3x the expected window, the larger)
    resets_allowed: int = 3                 # device reboots tolerated per run
    power: str = "rails"                    # energy: rails (the board's m-power- extension) or lpm01a (monitor)
    power_port: str | None = None           # energy with lpm01a: the monitor's serial port
    power_baud: int = 3_686_400             # the LPM01A's VCP rate, as MLPerf Tiny's runner uses
    power_voltage_v: float = 3.3            # LPM01A supply voltage (1.8-3.3 V); power = current x voltage
    power_freq: str = "1k"                  # LPM01A sampling frequency (MLPerf Tiny: 1k)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ConfigError(f"mode '{self.mode}': expected one of {', '.join(MODES)}")
        if self.windows < 1 or self.min_window_s <= 0:
            raise ConfigError("windows must be >= 1 and min_window_s > 0")
        if self.power not in POWER_SOURCES:
            raise ConfigError(f"power '{self.power}': expected one of {', '.join(POWER_SOURCES)}")
        if self.mode == "energy" and self.power == "lpm01a" and not self.power_port:
            raise ConfigError("--mode energy with the lpm01a monitor: give --power-port PORT")


def run_measure(config: MeasureConfig, progress=None) -> dict:
    """Run one measurement; returns the report (also written to ``out_dir/measure-<mode>.json``)."""
    out = Path(config.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model = _load_model(config)
    report: dict = {"stage": "measure", "mode": config.mode, "status": "running", "config": asdict(config),
                    "build": str(config.build_dir) if config.build_dir else None, "outputs": {
                        "transcript": "transcript.log", "results": f"measure-{config.mode}.json"}}
    started = time.monotonic()
    dut = Device.open(config.port, config.baud, config.timeout_s, out / "transcript.log")
    try:
        report["device"] = {"name": dut.name(), **asdict(dut.profile())}
        if config.mode == "performance":
            _performance(dut, config, model, report, progress)
        elif config.mode == "energy":
            from hwq.harness.energy import run_energy

            run_energy(dut, config, model, report, progress, out)
        else:
            _accuracy(dut, config, model, report, progress)
        report["status"] = "done"
    except HarnessError as err:
        report.update(status="failed", error=str(err))
        raise
    finally:
        report["recoveries"] = dut.recoveries
        report["seconds"] = round(time.monotonic() - started, 3)
        dut.close()
        if config.mode == "performance" and report.get("windows"):
            report["outputs"]["plot"] = _plot_latency(report, out / "latency.png")
        write_json(out / f"measure-{config.mode}.json", report)
    return report


def _load_model(config: MeasureConfig):
    if config.build_dir is None:
        if config.mode == "accuracy" or not config.input_bytes:
            raise ConfigError(f"--mode {config.mode}: give --build BUILD_DIR (or --input-bytes for performance)")
        return None
    from hwq.device.model import BuildModel

    return BuildModel.from_build_dir(config.build_dir)


def _test_set(config: MeasureConfig, model):
    from hwq.data import load_dataset

    source, build_cfg = model.manifest.get("source", {}), model.manifest.get("config", {})
    name = source.get("dataset") or "digits"
    ds = load_dataset(name, config.data_dir or build_cfg.get("data_dir"))
    n = len(ds.test_y) if config.samples is None else min(config.samples, len(ds.test_y))
    return name, ds.test_x[:n].numpy(), ds.test_y[:n].numpy()


# --- performance ---------------------------------------------------------------------------------------------------
def _performance(dut: Device, config: MeasureConfig, model, report: dict, progress) -> None:
    data, state, n, per_us, infer_timeout = size_window(dut, config, model, report)
    report["windows"] = windows = []
    while len(windows) < config.windows:
        r = reloading(dut, data, config, state, lambda: dut.infer(n, config.warmup, infer_timeout))
        if not plausible(dut, config, state, r, n, per_us):
            continue
        windows.append({"n": r.n, "t0_us": r.t0_us, "t1_us": r.t1_us, "elapsed_us": r.elapsed_us,
                        "throughput_per_s": r.throughput_per_s, "latency_us": r.latency_us,
                        "top1": r.results.top1})
        if progress:
            progress(f"window {len(windows)}/{config.windows}: {r.throughput_per_s:,.1f} inf/s, "
                     f"{r.latency_us:.4f} us/inference")
    report["summary"] = _perf_summary(windows, model)


def plausible(dut: Device, config: MeasureConfig, state: dict, r, n: int, per_us: float) -> bool:
    """False (noted in the recoveries) when a window's duration is off by more than 2x from the probe's."""
    if 0.5 < r.elapsed_us / (n * per_us) < 2.0:      # a lost digit keeps the syntax: catch it by plausibility
        return True
    dut.recoveries.append(f"infer {n}: window of {r.elapsed_us} us implausible "
                          f"(expected ~{n * per_us:.0f} us), repeated")
    state["implausible"] = state.get("implausible", 0) + 1
    if state["implausible"] > config.windows:
        raise ProtocolError(f"{config.port}: {state['implausible']} implausible windows in a row")
    return False


def size_window(dut: Device, config: MeasureConfig, model, report: dict):
    """Load the input and probe N; returns ``(data, state, n, us_per_inference, infer_timeout_s)``."""
    if model is not None:
        _, images, _ = _test_set(MeasureConfig(**{**asdict(config), "samples": 1}), model)
        data = model.to_device_bytes(images[0])
    else:
        data = bytes(config.input_bytes)
    state = {"resets": 0, "loaded": False}
    n, probe = 1, None
    while n < config.max_n:                       # grow N until the window is long enough to time well
        probe = reloading(dut, data, config, state, lambda: dut.infer(n, config.warmup))
        if probe.elapsed_us >= config.probe_us:
            break
        n = min(config.max_n, n * 10)
    per_us = max(probe.elapsed_us, 1) / probe.n if probe else 1.0
    n = max(1, min(config.max_n, math.ceil(config.min_window_s * 1e6 / per_us)))
    infer_timeout = max(30.0, 3 * n * per_us / 1e6)
    report["n_per_window"], report["warmup"] = n, config.warmup
    return data, state, n, per_us, infer_timeout


def reloading(dut: Device, data: bytes, config: MeasureConfig, state: dict, call):
    """Run ``call`` with ``data`` loaded; after a device reboot, reload and run it again (up to the allowance)."""
    while True:
        try:
            if not state["loaded"]:
                dut.load(data)
                state["loaded"] = True
            return call()
        except DeviceResetError:
            state["loaded"] = False
            state["resets"] += 1
            if state["resets"] > config.resets_allowed:
                raise


def window_stats(values: list[float], name: str, unit: str) -> dict:
    """Median, min, max and spread (``(max - min) / median`` in %) of one per-window quantity, units in the keys.

    >>> window_stats([1.0, 2.0, 3.0], "throughput", "per_s")["throughput_spread_pct"]
    100.0
    """
    med = statistics.median(values)
    return {f"{name}_median_{unit}": med, f"{name}_min_{unit}": min(values), f"{name}_max_{unit}": max(values),
            f"{name}_spread_pct": 100 * (max(values) - min(values)) / med if med else None}


def _perf_summary(windows: list[dict], model) -> dict:
    thr = [w["throughput_per_s"] for w in windows]
    lat = [w["latency_us"] for w in windows]
    med = statistics.median(thr)
    summary = {"windows": len(windows), **window_stats(thr, "throughput", "per_s"),
               "latency_median_us": statistics.median(lat), "latency_min_us": min(lat),
               "latency_max_us": max(lat),
               "latency_stdev_us": statistics.stdev(lat) if len(lat) > 1 else 0.0,
               "clock_resolution_us": 1}
    if model is not None:
        est = model.manifest["estimates"]["total"]
        summary.update(estimated_fps_per_s=est["estimated_fps"],
                       estimated_latency_us=est.get("estimated_latency_us"),
                       measured_over_estimated=med / est["estimated_fps"])
    return summary


def _plot_latency(report: dict, path: Path) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lat = [w["latency_us"] for w in report["windows"]]
    fig, ax = plt.subplots(figsize=(5, 3))
    ax.plot(range(1, len(lat) + 1), lat, "o-", label="measured (t1 - t0) / N")
    est = report.get("summary", {}).get("estimated_fps_per_s")
    if est:
        ax.axhline(1e6 / est, color="gray", ls="--", label="manifest: 1 / estimated_fps")
    ax.set_xlabel("window")
    ax.set_ylabel("latency per inference (us)")
    ax.set_title(f"{report.get('device', {}).get('name', 'device')}: N = {report.get('n_per_window')}")
    return save_plot(fig, ax, path)


def save_plot(fig, ax, path: Path) -> str:
    """Finish a report plot (legend, layout), write it as PNG and free it; returns the file name."""
    import matplotlib.pyplot as plt

    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path.name


# --- accuracy ------------------------------------------------------------------------------------------------------
def _accuracy(dut: Device, config: MeasureConfig, model, report: dict, progress) -> None:
    name, images, labels = _test_set(config, model)
    report["dataset"] = name
    report["disagreements"] = disagreements = []
    device_ok = host_ok = agree = done = 0
    state = {"resets": 0, "loaded": False}
    for i, (image, label) in enumerate(zip(images, labels)):
        data = model.to_device_bytes(image)
        state["loaded"] = False
        got = reloading(dut, data, config, state, lambda: dut.infer(1, 0).results.top1)
        ref = model.classify(data)
        done += 1
        device_ok += got == int(label)
        host_ok += ref == int(label)
        agree += got == ref
        if got != ref:
            disagreements.append({"index": i, "label": int(label), "device": got, "host": ref})
        report["summary"] = {"samples": done, "device_accuracy": device_ok / done, "host_accuracy": host_ok / done,
                             "agreement": agree / done, "disagreements": len(disagreements)}
        if progress and (done % 50 == 0 or done == len(labels)):
            progress(f"{done}/{len(labels)} images: device top-1 {100 * device_ok / done:.2f}%, "
                     f"agreement with host {100 * agree / done:.2f}%")


def summary_table(report: dict) -> str:
    """A short plain-text table of a report's summary, with units."""
    s = report.get("summary", {})
    rows = [(k, f"{v:,.4f}" if isinstance(v, float) else str(v)) for k, v in s.items()]
    width = max((len(k) for k, _ in rows), default=10)
    head = f"{report.get('device', {}).get('name', '?')} - {report['mode']} ({report['status']})"
    return "\n".join([head] + [f"  {k:<{width}}  {v:>20}" for k, v in rows])
