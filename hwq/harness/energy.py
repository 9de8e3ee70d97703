# SPDX-License-Identifier: BSD-3-Clause
"""Energy mode: timed windows of ``infer N W`` (sized as in performance mode) with a power source acquiring.

Per window: ``energy_uJ`` = trapezoidal integral of the power samples over the window (mW x s x 1000),
``average_power_mW = energy_uJ / (1000 * window_s)``, ``energy_per_inference_uJ = energy_uJ / N``; the summary has
medians (and min/max/spread) over the windows (at least 5, as MLPerf Tiny). With a build, the board's power model
(``power_model:`` in its YAML) gives ``model_energy_per_inference_uJ = busy_power_mW / estimated_fps * 1000``
(the emulated board's exact value; an estimate on real hardware). Writes ``power.png`` and ``power-trace.csv``.

>>> run_measure(MeasureConfig(port="/dev/pts/3", mode="energy", build_dir="runs/x/build-pynq-z2"))  # doctest: +SKIP
"""

from __future__ import annotations

import statistics
from pathlib import Path

from hwq.harness.power import BoardRails, Lpm01a, PowerSource, PowerTrace


def open_source(dut, config) -> PowerSource:
    """The power source ``config.power`` names (rails of ``dut``, or an LPM01A on ``config.power_port``)."""
    if config.power == "rails":
        return BoardRails(dut)
    return Lpm01a(config.power_port, config.power_baud, config.power_voltage_v, config.power_freq,
                  config.timeout_s)


def run_energy(dut, config, model, report: dict, progress, out: Path) -> None:
    """Run the energy windows; fills ``report`` (windows, summary, power source) and writes the plot."""
    from hwq.harness.measure import plausible, reloading, size_window

    data, state, n, per_us, infer_timeout = size_window(dut, config, model, report)
    source = open_source(dut, config)
    report["power_source"] = {"kind": config.power, "port": config.power_port if config.power != "rails"
                              else config.port}
    accepted, results = [], []
    try:
        source.start()
        while len(accepted) < config.windows:
            r = reloading(dut, data, config, state, lambda: dut.infer(n, config.warmup, infer_timeout))
            source.window(r, dut.last_reply)
            results.append(r)
            if plausible(dut, config, state, r, n, per_us):
                accepted.append(len(results) - 1)
        trace = source.stop()
    finally:
        if hasattr(source, "close"):
            source.close()
    report["windows"] = windows = []
    for i in accepted:
        r, (t0, t1) = results[i], trace.windows[i]
        energy = trace.energy_uJ(t0, t1)
        windows.append({"n": r.n, "t0_us": r.t0_us, "t1_us": r.t1_us, "elapsed_us": r.elapsed_us,
                        "window_s": t1 - t0, "energy_uJ": energy, "average_power_mW": energy / (1e3 * (t1 - t0)),
                        "energy_per_inference_uJ": energy / r.n, "throughput_per_s": r.throughput_per_s})
        if progress:
            w = windows[-1]
            progress(f"window {len(windows)}/{config.windows}: {w['average_power_mW']:,.3f} mW, "
                     f"{w['energy_per_inference_uJ']:.6g} uJ/inference")
    report["summary"] = energy_summary(windows, model)
    report["outputs"]["plot"] = plot_trace(trace, out / "power.png", report)
    report["outputs"]["trace"] = write_trace(trace, out / "power-trace.csv")


def energy_summary(windows: list[dict], model) -> dict:
    from hwq.harness.measure import window_stats  # measure imports this module

    e = [w["energy_per_inference_uJ"] for w in windows]
    p = [w["average_power_mW"] for w in windows]
    summary = {"windows": len(windows), **window_stats(e, "energy_per_inference", "uJ"),
               "average_power_median_mW": statistics.median(p),
               "throughput_median_per_s": statistics.median(w["throughput_per_s"] for w in windows)}
    if model is not None:
        from hwq.device.power import PowerModel
        from hwq.errors import HwqError

        try:
            pm = PowerModel.from_manifest(model.manifest)
        except HwqError:
            return summary
        busy = pm.total_mw(busy=True)
        summary.update(model_power_busy_mW=busy, model_power_idle_mW=pm.total_mw(busy=False),
                       model_energy_per_inference_uJ=busy / model.estimated_fps * 1e3,
                       measured_over_model=summary["energy_per_inference_median_uJ"]
                       / (busy / model.estimated_fps * 1e3))
    return summary


def write_trace(trace: PowerTrace, path: Path) -> str:
    with path.open("w") as f:
        f.write("time_s,power_mW\n")
        f.writelines(f"{t:.9f},{p:.6f}\n" for t, p in trace.samples)
    return path.name


def plot_trace(trace: PowerTrace, path: Path, report: dict) -> str:
    import matplotlib

    from hwq.harness.measure import save_plot  # measure imports this module

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3))
    ax.plot([t for t, _ in trace.samples], [p for _, p in trace.samples], lw=0.8, label="power samples")
    for i, (t0, t1) in enumerate(trace.windows):
        ax.axvspan(t0, t1, color="orange", alpha=0.2, label="timed windows" if i == 0 else None)
    ax.set_xlabel(f"time (s, {trace.source})")
    ax.set_ylabel("power (mW)")
    ax.set_title(f"{report.get('device', {}).get('name', 'device')}: N = {report.get('n_per_window')} per window")
    return save_plot(fig, ax, path)
