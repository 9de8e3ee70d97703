# SPDX-License-Identifier: BSD-3-Clause
"""Energy mode and power sources: the emulated board's rails extension and an emulated ST LPM01A on real ptys.

No mocks of the serial layer: the emulated board and the emulated monitor each open a pseudo-terminal pair and the
harness talks to them with pyserial. The expected energy per inference is the board power model's prediction.
"""

from __future__ import annotations

import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hwq.device import BuildModel, EmulatedLpm01a, Emulator, PowerModel
from hwq.harness import Device
from hwq.harness.measure import MeasureConfig, run_measure
from hwq.harness.power import (Lpm01a, PowerError, PowerTrace, format_lpm_value, parse_lpm_line, parse_lpm_value,
                               parse_rails)


@pytest.fixture(scope="module")
def build_model(digits_tfc_build):
    return BuildModel.from_build_dir(digits_tfc_build)


def _predicted_uJ(model: BuildModel) -> float:
    return PowerModel.from_manifest(model.manifest).total_mw(busy=True) / model.estimated_fps * 1e3


def test_energy_rails_equals_power_model(build_model, digits_tfc_build, tmp_path):
    with Emulator(build_model) as emu:
        with Device.open(emu.port, timeout_s=2.0) as dut:
            assert parse_rails(dut.link.command("power")) == pytest.approx(PowerModel.from_manifest(
                build_model.manifest).rails_mw(busy=False), abs=1e-3)         # the line carries 3 decimals
        report = run_measure(MeasureConfig(port=emu.port, mode="energy", power="rails", out_dir=str(tmp_path),
                                           build_dir=str(digits_tfc_build), min_window_s=0.5, timeout_s=2.0))
    s = report["summary"]
    assert report["status"] == "done" and s["windows"] == 5
    assert abs(s["energy_per_inference_median_uJ"] / _predicted_uJ(build_model) - 1) < 1e-4
    assert abs(s["average_power_median_mW"] / s["model_power_busy_mW"] - 1) < 1e-6
    assert (tmp_path / "power.png").stat().st_size > 1000


def test_energy_lpm01a_equals_power_model(build_model, digits_tfc_build, tmp_path):
    with Emulator(build_model) as emu, EmulatedLpm01a(emu) as monitor:
        report = run_measure(MeasureConfig(port=emu.port, mode="energy", power="lpm01a", power_port=monitor.port,
                                           out_dir=str(tmp_path), build_dir=str(digits_tfc_build),
                                           min_window_s=0.5, timeout_s=3.0))
    s = report["summary"]
    assert report["status"] == "done" and s["windows"] == 5
    # 1 kHz samples of a 0.5 s window: the idle/busy step sits inside one sample at each edge
    assert abs(s["energy_per_inference_median_uJ"] / s["model_energy_per_inference_uJ"] - 1) < 2e-3
    assert abs(s["average_power_median_mW"] / s["model_power_busy_mW"] - 1) < 2e-3
    assert (tmp_path / "power-trace.csv").read_text().startswith("time_s,power_mW")


def test_window_run_right_after_the_start_ack_is_seen(build_model):
    """The monitor's thread may lose the CPU just after it acks 'start' (it did, under CI load): the window the
    host runs meanwhile must still show its two GPIO events, as on a real LPM01A, which acquires from the ack."""
    with Emulator(build_model) as emu, EmulatedLpm01a(emu) as monitor:
        send = monitor._send

        def send_then_stall(lines):
            send(lines)
            if any(line.endswith("ack start") for line in lines):
                time.sleep(0.5)                # the host reads the ack and runs its window in this pause
        monitor._send = send_then_stall
        with Lpm01a(monitor.port, timeout_s=3.0) as mon, Device.open(emu.port, timeout_s=2.0) as dut:
            dut.load(bytes(build_model.input_bytes))
            mon.start()
            mon.window(dut.infer(1000, 0), dut.last_reply)
            mon.stop()


def test_monitor_that_stops_answering_is_an_error(build_model):
    with Emulator(build_model) as emu, EmulatedLpm01a(emu) as monitor:
        monitor.silent = True
        start = time.monotonic()
        with Lpm01a(monitor.port, timeout_s=0.5) as mon, pytest.raises(PowerError, match="did not acknowledge 'htc'"):
            mon.start()
        assert time.monotonic() - start < 3
        monitor.silent = False
        with Lpm01a(monitor.port, timeout_s=0.5) as mon, Device.open(emu.port, timeout_s=2.0) as dut:
            dut.load(bytes(build_model.input_bytes))
            mon.start()
            mon.window(dut.infer(1000, 0), dut.last_reply)       # events arrive while the monitor answers
            monitor.silent = True
            r = dut.infer(1000, 0)
            with pytest.raises(PowerError, match="GPIO events"):
                mon.window(r, dut.last_reply)
            with pytest.raises(PowerError, match="did not complete 'stop'"):
                mon.stop()


def test_lpm01a_refusal_names_the_command(build_model):
    with Emulator(build_model) as emu, EmulatedLpm01a(emu) as monitor, Lpm01a(monitor.port, timeout_s=1.0) as mon:
        with pytest.raises(PowerError, match="refused 'freq 3k'.*invalid frequency"):
            mon.command("freq 3k")


@pytest.mark.parametrize("line, kind, values", [
    ("6409-07", "values", (6409e-7,)),
    ("PowerShield > ack htc", "ack", ()),
    ("PowerShield > error freq 3k", "error", ()),
    ("TimeStamp: 001s 000ms, buff 00%", "timestamp", ()),
    ("event 3 ris", "event", ()),
    ("PowerShield > Acquisition completed", "message", ()),
    ("1234-05 2000-06", "values", (1234e-5, 2000e-6)),
])
def test_lpm01a_lines(line, kind, values):
    got = parse_lpm_line(line)
    assert got.kind == kind and got.values == pytest.approx(values)


@given(st.floats(min_value=1e-9, max_value=9.9))
def test_lpm01a_value_round_trip(amps):
    assert parse_lpm_value(format_lpm_value(amps)) == pytest.approx(amps, rel=6e-4)


def test_trace_integration_is_trapezoidal():
    trace = PowerTrace([(0.0, 0.0), (1.0, 100.0), (2.0, 100.0)])
    assert trace.energy_uJ(0.0, 1.0) == pytest.approx(50_000.0)
    assert trace.energy_uJ(0.5, 2.0) == pytest.approx(1e3 * (0.5 * 75 + 100))
    with pytest.raises(PowerError):
        PowerTrace([(0.0, 1.0), (1.0, 1.0)]).energy_uJ(0.0, 5.0)
