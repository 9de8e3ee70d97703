# SPDX-License-Identifier: BSD-3-Clause
"""The PYNQ on-board agent, tested against a named stand-in overlay (no board exists here).

The agent's own code is what runs on a board: the protocol session shared with the emulator, the overlay's
buffer interface (fold, pack, DMA runs, unpack), rail sampling, error handling. Only the overlay is a stand-in:
FINN's data packing over NumPy buffers, the build's HW graph instead of the bitfile. The host side is the real
harness over a real pty.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from hwq.device import BuildModel
from hwq.device.dut import AcceleratorError
from hwq.device.power import PowerModel
from hwq.device.pynq_agent import OverlayAccelerator, PynqRails, agent_thread, load_finn_overlay
from hwq.device.standin_overlay import StandInOverlay, standin_rails
from hwq.harness import Device
from hwq.harness.measure import MeasureConfig, run_measure

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def build_model(digits_tfc_build):
    return BuildModel.from_build_dir(digits_tfc_build)


def _agent(build_model, **kwargs):
    overlay = StandInOverlay(build_model, fail_runs=kwargs.pop("fail_runs", ()))
    return overlay, OverlayAccelerator(overlay, num_classes=build_model.num_classes, **kwargs)


def test_standin_overlay_packs_like_finn_and_matches_hw_graph(build_model):
    overlay = StandInOverlay(build_model, batch_size=8)
    x = np.random.default_rng(1).integers(0, 256, size=overlay.ishape_normal(), dtype=np.uint8)
    out = overlay.execute(x)
    assert out.shape == overlay.oshape_normal()
    assert [int(v) for v in out.reshape(-1)] == [build_model.classify(row.tobytes()) for row in x]


def test_accuracy_through_agent_equals_host_model(build_model, digits_tfc_build, tmp_path):
    _, accel = _agent(build_model)
    with agent_thread(accel, name="pynq-standin") as link:
        report = run_measure(MeasureConfig(port=link.path, mode="accuracy", build_dir=str(digits_tfc_build),
                                           out_dir=str(tmp_path), samples=30, timeout_s=5.0))
    s = report["summary"]
    assert report["device"]["name"] == "pynq-standin"
    assert s["samples"] == 30 and s["agreement"] == 1.0 and s["device_accuracy"] == s["host_accuracy"] > 0.7


def test_performance_windows_time_the_dma_runs(build_model, digits_tfc_build, tmp_path):
    overlay, accel = _agent(build_model, max_batch=256)
    with agent_thread(accel) as link:
        report = run_measure(MeasureConfig(port=link.path, mode="performance", build_dir=str(digits_tfc_build),
                                           out_dir=str(tmp_path), min_window_s=0.2, timeout_s=10.0))
    assert report["status"] == "done" and len(report["windows"]) == 5
    n_total = sum(w["n"] for w in report["windows"])
    assert overlay.runs >= n_total / 256            # every timed inference went through execute_on_buffers
    assert all(w["elapsed_us"] > 0 and w["throughput_per_s"] > 0 for w in report["windows"])


def test_rails_average_over_the_window(build_model):
    overlay = StandInOverlay(build_model)
    power = PowerModel.from_manifest(build_model.manifest)
    rails = PynqRails(standin_rails(overlay, power), interval_s=0.0005)
    accel = OverlayAccelerator(overlay, num_classes=10, rails=rails, max_batch=64)
    data = bytes(range(build_model.input_bytes))
    window = accel.infer(data, 20_000, 0)
    idle, busy = power.rails_mw(False), power.rails_mw(True)
    assert rails.samples >= 3
    assert window.rails_mw["ps"] == pytest.approx(idle["ps"])            # a constant rail stays constant
    assert idle["pl"] <= window.rails_mw["pl"] <= busy["pl"] and busy["pl"] > idle["pl"]
    assert accel.rails_mw() == pytest.approx(idle)                         # outside a window: idle


def test_energy_mode_reads_the_agents_rails(build_model, digits_tfc_build, tmp_path):
    overlay = StandInOverlay(build_model)
    power = PowerModel.from_manifest(build_model.manifest)
    accel = OverlayAccelerator(overlay, num_classes=10, rails=PynqRails(standin_rails(overlay, power), 0.005))
    with agent_thread(accel) as link:
        report = run_measure(MeasureConfig(port=link.path, mode="energy", power="rails", out_dir=str(tmp_path),
                                           build_dir=str(digits_tfc_build), min_window_s=0.2, timeout_s=10.0))
    s = report["summary"]
    assert report["status"] == "done" and s["windows"] == 5
    assert power.total_mw(False) <= s["average_power_median_mW"] <= power.total_mw(True)
    for w in report["windows"]:              # energy per inference = the window's mean power x its latency
        assert w["energy_per_inference_uJ"] == pytest.approx(w["average_power_mW"] * w["elapsed_us"] / w["n"] / 1e3,
                                                             rel=1e-6)


def test_overlay_failure_is_an_error_reply_and_the_agent_survives(build_model):
    overlay, accel = _agent(build_model, fail_runs=(2,))
    with agent_thread(accel) as link:
        with Device.open(link.path, timeout_s=5.0) as dut:
            data = bytes(build_model.input_bytes)
            dut.load(data)
            first = dut.infer(1, 0)                               # run 1
            lines = dut.link.command("infer 1 0")                 # run 2: the DMA assertion
            assert any(line.startswith("e-[infer: AssertionError: Output DMA 0 is not idle]") for line in lines)
            again = dut.infer(1, 0)                               # run 3: works again, same answer
            assert again.results == first.results
            dut.load(bytes(3))                                    # a wrong-sized input: answered, not run
            assert any("the accelerator takes" in line for line in dut.link.command("infer 1 0"))
            assert dut.name() == "hwq-pynq"


def test_window_edges_toggle_the_marker(build_model):
    edges = []
    _, accel = _agent(build_model, mark=lambda: edges.append(accel.timestamp_us()))
    window = accel.infer(bytes(build_model.input_bytes), 100, 3)
    assert len(edges) == 2 and edges[0] <= window.t0_us <= window.t1_us <= edges[1] + 1


def test_missing_driver_is_a_one_line_error(tmp_path):
    with pytest.raises(AcceleratorError, match=r"driver\.py: not found"):
        load_finn_overlay(tmp_path / "deploy/driver", tmp_path / "x.bit")


def test_agent_script_serves_a_standin_on_a_pty(digits_tfc_build):
    proc = subprocess.Popen([sys.executable, str(ROOT / "scripts/pynq_agent.py"), "--stand-in",
                             str(digits_tfc_build), "--name", "script-agent"], stdout=subprocess.PIPE, text=True)
    try:
        port = proc.stdout.readline().strip()
        assert port.startswith("/dev/")
        with Device.open(port, timeout_s=10.0) as dut:
            assert dut.name() == "script-agent"
            assert "stand-in overlay" in dut.profile().profile
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    assert proc.returncode == 0


def test_a_driver_folder_is_loaded_and_taken_off_sys_path(tmp_path):
    """FINN's driver.py imports driver_base from its own folder; the folder is on sys.path only while it loads.
    (The two files here are stand-ins of FINN's generated ones: same names, same import, no PYNQ.)"""
    import sys

    driver = tmp_path / "deploy" / "driver"
    driver.mkdir(parents=True)
    (driver / "driver_base.py").write_text(
        "class FINNExampleOverlay:\n    def __init__(self, **settings):\n        self.settings = settings\n")
    (driver / "driver.py").write_text("from driver_base import FINNExampleOverlay\nio_shape_dict = {'ishape': 1}\n")
    (tmp_path / "x.bit").write_bytes(b"")
    before = list(sys.path)
    overlay = load_finn_overlay(driver, tmp_path / "x.bit", download=False)
    assert overlay.settings["io_shape_dict"] == {"ishape": 1} and overlay.settings["bitfile_name"].endswith("x.bit")
    assert sys.path == before
    sys.modules.pop("driver_base", None)
