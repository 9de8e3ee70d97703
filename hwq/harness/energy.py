# SPDX-License-Identifier: BSD-3-Clause
"""Energy mode: timed windows of ``infer N W`` (sized as in performance mode) with a power source acquiring.

Per window: ``energy_uJ`` = trapezoidal integral of the power samples over the window (mW x s x 1000),
``average_power_mW = energy_uJ / (1000 * window_s)``, ``energy_per_inference_uJ = energy_uJ / N``; the summary has
medians (and min/max/spread) over the windows (at least 5, as MLPerf Tiny). With a build, the board's power model
(``power_model:`` in its YAML, with the clock and resources of the build's ``accelerator`` section) gives
``model_energy_per_inference_uJ = busy_power_mW / fps * 1000``
(the emulated board's exact value; an estimate on real hardware). Windows are sized and checked as in
performance mode (:class:`~hwq.harness.windows.TimedWindows`: each lasts at least ``min_window_s``). After the
report, writes ``power-trace.csv`` and ``power.png``. Interrupted (Ctrl-C, SIGTERM), the windows the samples
acquired so far cover are kept in the report.

>>> run_measure(MeasureConfig(port="/dev/pts/3", mode="energy", build_dir="runs/x/build-pynq-z2"))  # doctest: +SKIP
"""

from __future__ import annotations

import statistics
from pathlib import Path

from hwq._io import write_atomic
from hwq.harness.errors import HarnessError
from hwq.harness.plots import energy_figure, save_figure
from hwq.harness.power import BoardRails, Lpm01a, PowerError, PowerSource, PowerTrace
from hwq.harness.protocol import InferResult
from hwq.harness.windows import TimedWindows, device_input, new_load_state, window_stats


def open_source(dut, config) -> PowerSource:
    """The power source ``config.power`` names (rails of ``dut``, or an LPM01A on ``config.power_port``)."""
    if config.power == "rails":
        return BoardRails(dut)
    return Lpm01a(config.power_port, config.power_baud, config.power_voltage_v, config.power_freq,
                  config.timeout_s)


def run_energy(dut, run) -> None:
    """Run the energy windows of ``run`` (a :class:`hwq.harness.measure.Run`): fills its report (windows,
    summary, power source) and has the trace and plot written after the report."""
    config, report = run.config, run.report
    data, state = device_input(config, run.model), new_load_state()
    windows = TimedWindows.probe(dut, config, data, state)
    report.update(n_per_window=windows.n, warmup=config.warmup, windows=[], window_resizes=windows.resized)
    source = open_source(dut, config)
    report["power_source"] = {"kind": config.power, "port": config.power_port if config.power != "rails"
                              else config.port}
    timed: list[InferResult] = []      # every timed window, in the order the power source saw them
    kept: list[int] = []               # indices into ``timed`` of the windows accepted
    try:
        source.start()
        while len(kept) < config.windows:
            r = windows.run()
            source.window(r, dut.last_reply)
            timed.append(r)
            if windows.accept(r):
                kept.append(len(timed) - 1)
                report["n_per_window"] = windows.n
                run.say(f"window {len(kept)}/{config.windows}: {r.throughput_per_s:,.1f} inf/s over "
                        f"{r.elapsed_us / 1e6:.3f} s")
        trace = source.stop()
    except KeyboardInterrupt:
        _keep_interrupted(run, timed, kept, source)
        raise
    finally:
        if hasattr(source, "close"):
            source.close()
    record_windows(run, timed, kept, trace)
    s = report["summary"]
    run.say(f"energy: median {s['energy_per_inference_median_uJ']:.6g} uJ/inference, "
            f"{s['average_power_median_mW']:,.3f} mW over {s['windows']} windows")


def _keep_interrupted(run, timed: list[InferResult], kept: list[int], source: PowerSource) -> None:
    """After Ctrl-C/SIGTERM: the windows that the samples acquired so far cover go into the report."""
    try:
        trace = source.trace_so_far()
    except HarnessError as err:
        run.report["power_error"] = str(err)
        return
    record_windows(run, timed, kept, trace, complete=False)


def record_windows(run, timed: list[InferResult], kept: list[int], trace: PowerTrace, complete: bool = True) -> None:
    """Integrate ``trace`` over each kept window into the report's windows and summary; with ``complete=False``
    (an interrupted run) stop at the first window the trace does not cover yet."""
    windows = []
    for i in kept:
        if i >= len(trace.windows) and not complete:
            break
        r, (t0, t1) = timed[i], trace.windows[i]
        try:
            energy = trace.energy_uJ(t0, t1)
        except PowerError:
            if complete:
                raise
            break
        windows.append({"n": r.n, "t0_us": r.t0_us, "t1_us": r.t1_us, "elapsed_us": r.elapsed_us,
                        "window_s": t1 - t0, "energy_uJ": energy, "average_power_mW": energy / (1e3 * (t1 - t0)),
                        "energy_per_inference_uJ": energy / r.n, "throughput_per_s": r.throughput_per_s})
    run.report["windows"] = windows
    if windows:
        run.report["summary"] = energy_summary(windows, run.model)
    run.file.derive("trace", "power-trace.csv", lambda path: write_trace(trace, path))
    run.file.derive("plot", "power.png", lambda path: save_figure(energy_figure(trace, run.report), path))


def energy_summary(windows: list[dict], model) -> dict:
    e = [w["energy_per_inference_uJ"] for w in windows]
    p = [w["average_power_mW"] for w in windows]
    summary = {"windows": len(windows), **window_stats(e, "energy_per_inference", "uJ"),
               "average_power_median_mW": statistics.median(p),
               "throughput_median_per_s": statistics.median(w["throughput_per_s"] for w in windows)}
    if model is not None:
        from hwq.errors import HwqError
        from hwq.power_model import PowerModel

        try:
            pm = PowerModel.from_accelerator(model.accelerator)
        except HwqError:
            return summary
        per_inference = pm.energy_per_inference_uJ(model.accelerator.fps)
        summary.update(model_power_busy_mW=pm.total_mw(busy=True), model_power_idle_mW=pm.total_mw(busy=False),
                       model_energy_per_inference_uJ=per_inference,
                       measured_over_model=summary["energy_per_inference_median_uJ"] / per_inference)
    return summary


def write_trace(trace: PowerTrace, path: Path) -> None:
    """The samples as ``time_s,power_mW`` lines, written atomically."""
    text = "time_s,power_mW\n" + "".join(f"{t:.9f},{p:.6f}\n" for t, p in trace.samples)
    write_atomic(path, lambda p: p.write_text(text))
