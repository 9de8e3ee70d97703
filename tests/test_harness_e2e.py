# SPDX-License-Identifier: BSD-3-Clause
"""End to end: a digits TFC build served by the emulated board on a real pty, measured through pyserial.

No mocks: the emulator opens a pseudo-terminal pair and the harness talks to the slave side with pyserial.
"""

from __future__ import annotations

import hashlib
import json
import math
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from hwq.device import BuildModel, Emulator, FaultConfig
from hwq.harness import Device
from hwq.harness.errors import DeviceTimeout, PortError
from hwq.harness.measure import MeasureConfig, run_measure, summary_table


@pytest.fixture(scope="module")
def build_model(digits_tfc_build):
    return BuildModel.from_build_dir(digits_tfc_build)


def _tolerance(model: BuildModel, window: dict) -> float:
    """Relative difference allowed: the one pipeline fill, and 1 us of clock rounding over the window."""
    n = window["n"]
    return (model.fill_cycles - model.ii_cycles) / (n * model.ii_cycles) + 1.0 / window["elapsed_us"]


def test_performance_equals_manifest_estimate(build_model, digits_tfc_build, tmp_path):
    with Emulator(build_model) as emu:
        report = run_measure(MeasureConfig(port=emu.port, mode="performance", build_dir=str(digits_tfc_build),
                                           out_dir=str(tmp_path), min_window_s=1.0, timeout_s=2.0))
    est = build_model.manifest["estimates"]["total"]["estimated_fps"]
    assert report["status"] == "done" and len(report["windows"]) == 5
    for w in report["windows"]:
        assert abs(w["throughput_per_s"] - est) / est <= _tolerance(build_model, w)
    s = report["summary"]
    assert abs(s["throughput_median_per_s"] / est - 1) < 1e-5
    assert abs(s["time_per_inference_median_us"] - 1e6 / est) < 1e-5 * (1e6 / est)
    # one inference takes the pipeline latency (0.33 us here), which the 1 us timer reads as 0 or 1 us
    latency = build_model.manifest["estimates"]["total"]["estimated_latency_us"]
    assert s["estimated_latency_us"] == latency and len(report["latency_windows"]) == 5
    assert all(math.floor(latency) <= w["latency_us"] <= math.ceil(latency) for w in report["latency_windows"])
    assert (tmp_path / "latency.png").stat().st_size > 1000
    on_disk = json.loads((tmp_path / "measure-performance.json").read_text())
    assert on_disk["status"] == "done" and on_disk["outputs"]["plot"] == "latency.png"
    sha = hashlib.sha256((Path(digits_tfc_build) / "manifest.json").read_bytes()).hexdigest()
    assert on_disk["build_manifest_sha256"] == sha == on_disk["inputs"]["build_manifest_sha256"]
    transcript = (tmp_path / "transcript.log").read_text()
    assert " tx b'name%'" in transcript and "m-lap-us-" in transcript
    assert "throughput_median_per_s" in summary_table(report)


def test_accuracy_equals_host_model(build_model, digits_tfc_build, tmp_path):
    with Emulator(build_model) as emu:
        report = run_measure(MeasureConfig(port=emu.port, mode="accuracy", build_dir=str(digits_tfc_build),
                                           out_dir=str(tmp_path), samples=40, timeout_s=2.0))
    s = report["summary"]
    assert s["samples"] == 40 and s["agreement"] == 1.0 and report["disagreements"] == []
    assert s["device_accuracy"] == s["host_accuracy"] > 0.7


def test_garbled_bytes_recovered(build_model, digits_tfc_build, tmp_path):
    """Line noise in replies: detected (never parsed as data), re-synchronised, retried; results unchanged."""
    faults = FaultConfig(garble_rate=0.0015, seed=3)
    with Emulator(build_model, faults=faults) as emu:
        report = run_measure(MeasureConfig(port=emu.port, mode="accuracy", build_dir=str(digits_tfc_build),
                                           out_dir=str(tmp_path), samples=10, timeout_s=0.3))
    assert report["status"] == "done" and report["summary"]["agreement"] == 1.0
    assert report["recoveries"], "the injected noise should have needed at least one retry"


@pytest.mark.parametrize("faults", [FaultConfig(), FaultConfig(garble_rate=0.0015, seed=3),
                                    FaultConfig(reset_at_command=13)], ids=["clean", "garbled", "reset"])
def test_pipelined_accuracy_equals_one_command_at_a_time(build_model, digits_tfc_build, tmp_path, faults):
    """``--pipeline``: each image's commands sent at once; the same classes as one command at a time, and a
    garbled reply or a reboot in the middle of a pipelined exchange is recovered (the image is redone)."""
    reports = {}
    for pipeline in (False, True):
        with Emulator(build_model, faults=faults) as emu:
            reports[pipeline] = run_measure(MeasureConfig(
                port=emu.port, mode="accuracy", build_dir=str(digits_tfc_build), out_dir=str(tmp_path / str(pipeline)),
                samples=12, timeout_s=0.3, pipeline=pipeline))
    for report in reports.values():
        assert report["status"] == "done" and report["summary"]["agreement"] == 1.0
    assert reports[True]["summary"] == reports[False]["summary"]
    transcript = (tmp_path / "True" / "transcript.log").read_text()
    assert "db load 64%db " in transcript and "%infer 1 0%" in transcript      # one write per image
    if faults.garble_rate or faults.reset_at_command:
        assert any("pipelined" in r for r in reports[True]["recoveries"]), reports[True]["recoveries"]


@pytest.mark.parametrize("reply_limit", [2048, 1], ids=["default", "one-at-a-time"])
def test_pipelined_images_are_in_flight_while_earlier_replies_are_read(build_model, tmp_path, reply_limit):
    """After the first reply, the next images' commands go out before the earlier replies are read, as many as
    keep the replies owed within the limit (a digits image's replies are about 250 bytes: 7-8 in 2 KiB); the
    classes are those of one image at a time."""
    images = [build_model.to_device_bytes(np.full(64, k, dtype=np.uint8)) for k in range(20)]
    log = tmp_path / "t.log"
    with Emulator(build_model) as emu, Device.open(emu.port, timeout_s=2.0, transcript=log) as dut:
        results = [r.results.top1 for r in dut.load_and_infer_each(images, in_flight_reply_bytes=reply_limit)]
    with Emulator(build_model) as emu, Device.open(emu.port, timeout_s=2.0) as dut:
        expected = [dut.load_and_infer(data).results.top1 for data in images]
    assert results == expected == [build_model.classify(d) for d in images]
    directions = [line.split(" ", 2)[1] for line in log.read_text().splitlines()]
    longest = run = 0
    for direction in directions:            # images written one after another, no reply read in between
        run = run + 1 if direction == "tx" else 0 if direction == "rx" else run
        longest = max(longest, run)
    assert longest >= 6 if reply_limit == 2048 else longest == 1


@pytest.mark.parametrize("realtime", [False, True])
def test_realtime_window_lasts_its_device_time_on_the_wall(build_model, realtime):
    """``--realtime``: the reply to ``infer N`` comes when the window's device time has passed (a host timing the
    loop with its own clock accepts it); the timestamps are the same as without pacing, and the wall time spent
    waiting is not counted again as idle time afterwards."""
    device_s = 0.4
    n = int(device_s * build_model.estimated_fps)
    with Emulator(build_model, realtime=realtime) as emu, Device.open(emu.port, timeout_s=2.0) as dut:
        dut.load(bytes(build_model.input_bytes))
        started = time.monotonic()
        window = dut.infer(n, 0)
        wall = time.monotonic() - started
        after_us = dut.timestamp()
    assert abs(window.elapsed_us / 1e6 - device_s) < 1e-3
    if realtime:
        assert device_s <= wall < device_s + 1.0
    else:
        assert wall < device_s / 2
    assert 0 <= after_us - window.t1_us < 0.3e6          # the timer went on by the command's own time only


def test_reset_mid_run_recovered(build_model, digits_tfc_build, tmp_path):
    with Emulator(build_model, faults=FaultConfig(reset_at_command=16)) as emu:
        report = run_measure(MeasureConfig(port=emu.port, mode="performance", build_dir=str(digits_tfc_build),
                                           out_dir=str(tmp_path), min_window_s=0.5, timeout_s=1.0))
    assert report["status"] == "done" and len(report["windows"]) == 5
    assert any("rebooted" in r for r in report["recoveries"])
    est = build_model.estimated_fps
    assert abs(report["summary"]["throughput_median_per_s"] / est - 1) < 1e-5


def test_slow_device_times_out_clearly(build_model):
    with Emulator(build_model, faults=FaultConfig(reply_delay_s=0.5)) as emu:
        t = time.monotonic()
        with pytest.raises(DeviceTimeout, match=emu.port):
            Device.open(emu.port, timeout_s=0.1).name()
        assert time.monotonic() - t < 5


def test_vanished_port_is_reported(build_model):
    emu = Emulator(build_model).start()
    dut = Device.open(emu.port, timeout_s=0.3, retries=0)
    assert dut.name() == "hwq-emulator"
    emu.stop()
    t = time.monotonic()
    with pytest.raises((PortError, DeviceTimeout)):
        dut.name()
    assert time.monotonic() - t < 3
    dut.close()
    with pytest.raises(PortError, match="/nonexistent/tty"):
        Device.open("/nonexistent/tty")


def test_cli_emulate_prints_port_first(digits_tfc_build, tmp_path):
    """``hwq emulate`` in its own process: the pty path is its first line; a conformant exchange follows."""
    proc = subprocess.Popen([sys.executable, "-m", "hwq", "emulate", str(digits_tfc_build)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        port = proc.stdout.readline().strip()
        assert port.startswith("/dev/")
        with Device.open(port, transcript=tmp_path / "t.log") as dut:
            assert dut.name() == "hwq-emulator"
            assert dut.load(bytes(64)).done
            r = dut.infer(1000, 1)
            assert r.elapsed_us > 0 and r.results.top1 in range(10)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    assert proc.returncode == 0
    assert Path(tmp_path / "t.log").stat().st_size > 0
