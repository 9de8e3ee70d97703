# SPDX-License-Identifier: BSD-3-Clause
"""The numbers of a performance run, on the emulated board (real pty, pyserial) whose clock the build's cycle
counts drive: the throughput of long windows, the latency of one inference from ``infer 1`` windows, windows never
shorter than ``min_window_s``, plots without offset axes, a transcript kept under its cap.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil

import pytest

from hwq.device import BuildModel, Emulator
from hwq.harness.measure import MeasureConfig, run_measure
from hwq.harness.plots import performance_figure
from hwq.harness.transcript import Transcript

#: 128 cycles per inference (1.28 us at 100 MHz) and a 500-cycle pipeline (5 us from input to result).
SLOW_II_CYCLES, SLOW_FILL_CYCLES = 128, 500


@pytest.fixture(scope="module")
def slow_build(digits_tfc_build, tmp_path_factory):
    """The digits build with an accelerator section that says 128 cycles per inference and a 500-cycle pipeline
    (the emulated board's timing and the harness's figures follow that section). One inference then takes 5 us,
    far from 1/throughput = 1.28 us, and 5 us is a whole number of timer ticks, so every ``infer 1`` window reads
    exactly 5 us."""
    out = tmp_path_factory.mktemp("builds") / "build-slow"
    shutil.copytree(digits_tfc_build, out)
    manifest = json.loads((out / "manifest.json").read_text())
    section = manifest["accelerator"]
    assert section["clock_mhz"] == 100.0
    section.update(cycles_per_image=SLOW_II_CYCLES, latency_cycles=SLOW_FILL_CYCLES,
                   fps=100e6 / SLOW_II_CYCLES, latency_us=SLOW_FILL_CYCLES / 100.0)
    (out / "manifest.json").write_text(json.dumps(manifest))
    return out


def _measure(build, tmp_path, **settings) -> dict:
    with Emulator(BuildModel.from_build_dir(build)) as emu:
        return run_measure(MeasureConfig(port=emu.port, mode="performance", build_dir=str(build),
                                         out_dir=str(tmp_path), timeout_s=2.0, **settings))


def test_one_inference_latency_is_the_pipeline_latency(slow_build, tmp_path):
    report = _measure(slow_build, tmp_path, min_window_s=0.05)
    s = report["summary"]
    assert [w["latency_us"] for w in report["latency_windows"]] == [5] * 5
    assert s["latency_median_us"] == s["estimated_latency_us"] == 5.0
    # the inverse of the throughput is another number, under its own name
    assert s["time_per_inference_median_us"] == pytest.approx(1.28, rel=1e-3)
    assert s["measured_over_estimated"] == pytest.approx(1.0, abs=1e-3)


def test_a_short_window_is_repeated_with_a_larger_n(slow_build, tmp_path):
    """A probe of 10 inferences (16-17 us, a third of it the 5 us fill) overestimates the time per inference by
    ~30 %, so the first window comes out short: it is repeated with a larger N, and none reported is short."""
    min_s = 0.0437
    report = _measure(slow_build, tmp_path, min_window_s=min_s, probe_us=16, latency_windows=1)
    assert len(report["window_resizes"]) >= 1 and "repeated with N =" in report["window_resizes"][0]
    assert len(report["windows"]) == 5
    assert all(w["elapsed_us"] >= min_s * 1e6 for w in report["windows"])
    assert report["summary"]["shortest_window_s"] >= min_s


def test_latency_plot_has_plain_axes_and_whole_window_ticks():
    """Windows that differ by the timer's rounding: no offset (``+1.25e7``) or multiplier, integer window ticks."""
    thr = (12_499_998.75, 12_500_000.0, 12_499_998.75, 12_500_000.0, 12_500_000.0)
    report = {"status": "done", "device": {"name": "dut"}, "latency_windows": [{"latency_us": v} for v in (0, 1, 0)],
              "windows": [{"n": 125_000_000, "throughput_per_s": v} for v in thr],
              "summary": {"throughput_median_per_s": 12_500_000.0, "latency_median_us": 0, "clock_resolution_us": 1,
                          "estimated_fps_per_s": 12_500_000.0, "estimated_latency_us": 0.33}}
    fig = performance_figure(report)
    fig.canvas.draw()
    for ax in fig.axes:
        assert ax.xaxis.get_offset_text().get_text() == "" and ax.yaxis.get_offset_text().get_text() == ""
        low, high = ax.get_xlim()
        ticks = [t for t in ax.get_xticks() if low <= t <= high]
        assert ticks and all(float(t).is_integer() for t in ticks)
    assert "12,500,000" in [label.get_text() for label in fig.axes[0].get_yticklabels()]


def test_transcript_rotates_under_its_cap(slow_build, tmp_path):
    cap = 2000
    for _ in range(2):          # the transcript is appended across runs; the cap holds across them
        _measure(slow_build, tmp_path, min_window_s=0.01, windows=2, latency_windows=1,
                 transcript_max_mb=cap / 1e6, transcript_keep=2)
    parts = sorted(p.name for p in tmp_path.glob("transcript.*.log.gz"))
    assert parts == ["transcript.1.log.gz", "transcript.2.log.gz"]          # older ones beyond keep are gone
    current = (tmp_path / "transcript.log").read_text().splitlines()
    newest_part = gzip.decompress((tmp_path / "transcript.1.log.gz").read_bytes()).decode().splitlines()
    assert (tmp_path / "transcript.log").stat().st_size <= cap
    assert sum(len(line) + 1 for line in newest_part) <= cap
    assert float(newest_part[-1].split()[0]) <= float(current[0].split()[0])  # part 1 is what came just before


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full (a device that is always full)")
def test_transcript_on_a_full_disk_stops_and_the_run_goes_on(slow_build, tmp_path):
    t = Transcript("/dev/full")
    t.record("tx", b"name%")
    t.record("rx", b"m-ready\r\n")          # no exception: recording has stopped
    assert t.error == "transcript stopped: /dev/full: no space left on device"
    (tmp_path / "transcript.log").symlink_to("/dev/full")
    report = _measure(slow_build, tmp_path, min_window_s=0.01, latency_windows=1)
    assert report["status"] == "done" and len(report["windows"]) == 5
    assert "no space left on device" in json.loads((tmp_path / "measure-performance.json").read_text())[
        "transcript_error"]


def _window(n: int, elapsed_us: int):
    from hwq.harness.protocol import InferResult, Results

    return InferResult(n=n, warmup=0, t0_us=1000, t1_us=1000 + elapsed_us, results=Results((1.0,)))


def test_implausible_windows_are_repeated_unless_two_agree():
    """A window 10x off the probe is repeated (a lost digit); two such windows that agree re-base the expectation
    (the device really runs at that speed, e.g. a board under load), where garbled timestamps would not agree."""
    from types import SimpleNamespace

    from hwq.harness.windows import TimedWindows

    dut = SimpleNamespace(recoveries=[], link=SimpleNamespace(port="/dev/pts/test"))
    config = MeasureConfig(port="x", min_window_s=0.001, windows=5)
    windows = TimedWindows(dut, config, b"", {}, n=100, per_us=10.0)
    assert windows.accept(_window(100, 1_000))              # as the probe said
    assert not windows.accept(_window(100, 10_000))          # 10x slower: repeated
    assert not windows.accept(_window(100, 100))             # garbled the other way: does not agree, repeated
    assert not windows.accept(_window(100, 10_500))
    assert windows.accept(_window(100, 10_000))              # agrees with the last one: re-based
    assert windows.per_us == pytest.approx(100.0) and "re-based" in dut.recoveries[-1]
    assert windows.accept(_window(100, 9_800))
