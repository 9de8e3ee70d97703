# SPDX-License-Identifier: BSD-3-Clause
"""The report plots: ``latency.png`` (performance) and ``power.png`` (energy), drawn from a finished report.

What a reader wants to see: the throughput of each timed window and the latency of each one-inference window,
against the build's estimates as reference lines. Axes are plain numbers (no matplotlib offset such as
``+1.2499e7``, which made windows that differ by rounding unreadable) and windows are counted in whole ticks.
Each file is written atomically, after the report (see :mod:`hwq.harness.report`).

>>> performance_figure(report).savefig("latency.png")                     # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path

from hwq._io import write_atomic

#: A throughput axis spans at least this fraction of the median either side, so that windows equal up to the
#: timer's rounding are drawn as the flat line they are.
MIN_RELATIVE_SPAN = 0.02


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plain_axes(ax, count: int | None = None) -> None:
    """No offset or scientific notation on either axis; with ``count``, x ticks are the windows 1..count."""
    from matplotlib.ticker import MaxNLocator, ScalarFormatter

    for axis in (ax.xaxis, ax.yaxis):
        formatter = ScalarFormatter(useOffset=False)
        formatter.set_scientific(False)
        axis.set_major_formatter(formatter)
    if count is not None:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, nbins=min(count, 10)))
        ax.set_xlim(0.5, count + 0.5)


def _thousands(ax) -> None:
    from matplotlib.ticker import FuncFormatter

    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))


def performance_figure(report: dict):
    """Throughput per timed window and one-inference latency per latency window, with the estimates."""
    plt = _pyplot()
    s, windows, lat = report.get("summary", {}), report.get("windows", []), report.get("latency_windows", [])
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.4))
    thr = [w["throughput_per_s"] for w in windows]
    est_fps = s.get("estimated_fps_per_s")
    if thr:
        left.plot(range(1, len(thr) + 1), thr, "o-", label="measured N / (t1 - t0)")
    if est_fps:
        left.axhline(est_fps, color="gray", ls="--", label="build's figure (accelerator section)")
    values = thr + ([est_fps] if est_fps else [])
    if values:
        mid = sorted(values)[len(values) // 2]
        low, high = min(min(values), mid * (1 - MIN_RELATIVE_SPAN)), max(max(values), mid * (1 + MIN_RELATIVE_SPAN))
        left.set_ylim(low, high)
    plain_axes(left, max(len(thr), 1))
    _thousands(left)
    left.set_xlabel("timed window")
    left.set_ylabel("throughput (inferences/s)")
    left.set_title(f"throughput: median {s['throughput_median_per_s']:,.0f}/s, N = {windows[-1]['n']:,}"
                   if windows else "no timed window", fontsize=9)

    lat_us = [w["latency_us"] for w in lat]
    est_lat = s.get("estimated_latency_us")
    if lat_us:
        right.plot(range(1, len(lat_us) + 1), lat_us, "s-", color="C1", label="measured infer 1 (t1 - t0)")
    if est_lat:
        right.axhline(est_lat, color="gray", ls="--", label="build's pipeline latency")
    right.set_ylim(0, 1.3 * max(lat_us + [est_lat or 0, report.get("clock_resolution_us", 1)]))
    plain_axes(right, max(len(lat_us), 1))
    right.set_xlabel("one-inference window")
    right.set_ylabel("latency of one inference (us)")
    right.set_title(f"one inference: median {s['latency_median_us']:g} us (timer: "
                    f"{s.get('clock_resolution_us', 1)} us steps)" if lat_us else "no latency window", fontsize=9)
    fig.suptitle(f"{report.get('device', {}).get('name', 'device')} ({report.get('status', '?')})", fontsize=9)
    for ax in (left, right):
        ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    return fig


def energy_figure(trace, report: dict):
    """The power samples with the timed windows shaded."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3))
    ax.plot([t for t, _ in trace.samples], [p for _, p in trace.samples], lw=0.8, label="power samples")
    for i, (t0, t1) in enumerate(trace.windows):
        ax.axvspan(t0, t1, color="orange", alpha=0.2, label="timed windows" if i == 0 else None)
    plain_axes(ax)
    ax.set_xlabel(f"time (s, {trace.source})")
    ax.set_ylabel("power (mW)")
    ax.set_title(f"{report.get('device', {}).get('name', 'device')}: N = {report.get('n_per_window')} per window")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def save_figure(fig, path: Path) -> None:
    """Write ``fig`` as PNG atomically (no half-written file on a full disk) and free it."""
    plt = _pyplot()
    try:
        write_atomic(path, lambda p: fig.savefig(p, format="png", dpi=100))
    finally:
        plt.close(fig)
