# SPDX-License-Identifier: BSD-3-Clause
"""The RTL board (``hwq emulate --rtl``): the open build's generated Verilog, compiled by Verilator and driven cycle
by cycle, behind the MLPerf Tiny protocol on a real pty; measured with the real harness."""

from __future__ import annotations

import re
import shutil

import numpy as np
import pytest

from hwq.accelerator_model import BuildModel
from hwq.device import Emulator
from hwq.harness import Device
from hwq.harness.errors import DeviceError
from hwq.harness.measure import MeasureConfig, run_measure
from hwq.rtl.cycle_model import CycleModel, DesignHang
from tests.conftest import RTL_SMALL_FOLDING, make_unsynthesised_open_build


@pytest.fixture(scope="module")
def open_build(exported_tfc_w1a1, tmp_path_factory):
    """An open build of the digits TFC (the small folding: 128 cycles per image), generated and simulated by cocotb,
    not synthesised: its accelerator section holds the cocotb bench's cycles at the board clock."""
    return make_unsynthesised_open_build(exported_tfc_w1a1, tmp_path_factory.mktemp("builds") / "build-ulx3s",
                                    "ulx3s-85f", RTL_SMALL_FOLDING)


def _planted(build, tmp_path, name: str, edit) -> BuildModel:
    """A copy of ``build`` whose generated Verilog ``edit(text)`` changed (the board is built from it)."""
    copy = tmp_path / name
    shutil.copytree(build, copy, ignore=shutil.ignore_patterns("rtl_board"))
    verilog = copy / "rtl" / "accel.v"
    text = verilog.read_text()
    changed = edit(text)
    assert changed != text
    verilog.write_text(changed)
    return BuildModel.from_build_dir(copy)


def test_rtl_board_measures_the_circuit_in_every_mode(open_build, tmp_path):
    """Accuracy: the circuit's classes are the host model's; performance: the throughput and the one-inference
    latency that Verilator's run of the circuit gives equal the cocotb bench's (the build's section) within 1 %."""
    model = BuildModel.from_build_dir(open_build)
    with Emulator(model, rtl=True) as emu:
        acc = run_measure(MeasureConfig(port=emu.port, mode="accuracy", build_dir=str(open_build),
                                        out_dir=str(tmp_path / "acc"), samples=60, timeout_s=5.0, pipeline=True))
        perf = run_measure(MeasureConfig(port=emu.port, mode="performance", build_dir=str(open_build),
                                         out_dir=str(tmp_path / "perf"), min_window_s=0.2, timeout_s=5.0))
        simulated = emu.accelerator.simulated
    s = acc["summary"]
    assert s["samples"] == 60 and s["agreement"] == 1.0 and s["device_accuracy"] == s["host_accuracy"] > 0.7
    p = perf["summary"]
    assert abs(p["measured_over_estimated"] - 1) < 0.01
    assert abs(p["latency_median_us"] - model.accelerator.latency_us) <= 1.0        # the 1 us timer
    transcript = (tmp_path / "perf" / "transcript.log").read_text()
    assert re.search(r"m-rtl-\[simulated \d+ of \d+ timed", transcript)
    assert 60 <= simulated < 5 * 4096 + 1000          # long windows extrapolated, not simulated to the end


def test_flipped_weights_in_the_verilog_show_as_disagreements(open_build, tmp_path):
    """A planted fault: the classifier's weight ROM words 0-3 (with PE=2, SF=4: every weight of classes 0 and 1)
    inverted in the generated Verilog. The host model (the HW graph) does not have it, the circuit does: accuracy
    mode reports the disagreements."""
    def flip(text: str) -> str:
        start = text.index("module MVAU_hls_3")
        for word in range(4):
            m = re.compile(rf"wrom\[{word}\] = 32'h([0-9a-f]+);").search(text, start)
            text = text[:m.start(1)] + f"{~int(m.group(1), 16) & 0xFFFFFFFF:x}" + text[m.end(1):]
        return text

    model = _planted(open_build, tmp_path, "faulty", flip)
    with Emulator(model, rtl=True) as emu:
        report = run_measure(MeasureConfig(port=emu.port, mode="accuracy", build_dir=str(model.build_dir),
                                           out_dir=str(tmp_path / "acc"), samples=100, timeout_s=5.0, pipeline=True))
    assert report["status"] == "done"
    assert report["summary"]["disagreements"] > 0 and report["summary"]["agreement"] < 1.0
    assert {"index", "device", "host"} <= set(report["disagreements"][0])


def test_a_deadlocked_circuit_answers_an_error_instead_of_hanging(open_build, tmp_path):
    """A planted deadlock (the first layer never sees a valid input): ``infer`` answers ``e-[...]`` naming the
    stop, within the host's timeout, and the board goes on answering."""
    model = _planted(open_build, tmp_path, "stuck", lambda t: t.replace(".in_valid(s_axis_tvalid)", ".in_valid(1'b0)"))
    with Emulator(model, rtl=True) as emu, Device.open(emu.port, timeout_s=5.0, retries=0) as dut:
        dut.load(bytes(model.input_bytes))
        with pytest.raises(DeviceError, match=r"the circuit stopped: no beat in or out for \d+ cycles"):
            dut.infer(10, 0)
        assert dut.name() == "hwq-emulator"


def _residual_design(tmp_path, fifo_depth: int | None):
    """tests/test_rtl_branches.py's residual block; ``fifo_depth``: its shortcut FIFO (None: the generator's, 0:
    none)."""
    from hwq.rtl.fifo import FifoLayer
    from hwq.rtl.generate import generate_verilog
    from hwq.rtl.graph import LayerGraph, Source
    from tests.test_rtl_branches import residual

    rng = np.random.default_rng(3)
    graph = residual(rng, stall=False)
    x = rng.integers(0, 4, graph.in_elems)
    if fifo_depth:
        src = graph.feeds["add"][1]
        fifo = FifoLayer("add_fifo1", fifo_depth, 2, graph.stream_elems(src), graph.in_type)
        layers = list(graph)
        layers.insert([layer.name for layer in layers].index("add"), fifo)
        feeds = {**graph.feeds, "add_fifo1": (src,), "add": (graph.feeds["add"][0], Source("add_fifo1"))}
        graph = LayerGraph(layers, feeds, graph.output)
    design = generate_verilog(graph, tmp_path / f"rtl{fifo_depth}", top="res", shortcut_fifos=fifo_depth is None)
    return CycleModel.build(design, tmp_path / "boards"), x, design


def test_a_narrower_fifo_measures_lower_and_none_deadlocks(tmp_path):
    """The residual at the generator's FIFO runs at its folding bound (96 cycles per image); with a FIFO of 4
    beats the shortcut stalls the duplicate and the measured interval grows; without one the circuit deadlocks,
    and the run says how far it got."""
    intervals = {}
    for depth in (None, 4):
        model, x, design = _residual_design(tmp_path, depth)
        try:
            run = model.run(x, 24)
        finally:
            model.close()
        intervals[depth] = set(np.diff(run.ends[12:]).tolist())
    assert intervals[None] == {design.cycles_bound} == {96}
    assert min(intervals[4]) > 1.5 * 96
    model, x, _ = _residual_design(tmp_path, 0)
    try:
        with pytest.raises(DesignHang, match=r"res: the circuit stopped: .* of 48 input beats, 0 of 2 output beats"):
            model.run(x, 2)
    finally:
        model.close()


@pytest.mark.slow
def test_rtl_board_of_a_finn_build_is_hwq_verilog_at_finn_folding(digits_tfc_build, tmp_path):
    """A FINN build has no Verilog of hwq's: the RTL board generates it from the build's folded graph (FINN's
    folding, 8 cycles per image here) and measures that circuit: the classes of the host model, and, for this
    folding, FINN's estimated throughput (about 45 s: a fully unrolled TFC compiles slowly)."""
    model = BuildModel.from_build_dir(digits_tfc_build)
    with Emulator(model, rtl=True) as emu:
        assert "FINN build's folding" in emu.accelerator.origin
        acc = run_measure(MeasureConfig(port=emu.port, mode="accuracy", build_dir=str(digits_tfc_build),
                                        out_dir=str(tmp_path / "acc"), samples=40, timeout_s=5.0, pipeline=True))
        perf = run_measure(MeasureConfig(port=emu.port, mode="performance", build_dir=str(digits_tfc_build),
                                         out_dir=str(tmp_path / "perf"), min_window_s=0.2, timeout_s=5.0))
    assert acc["summary"]["agreement"] == 1.0
    assert abs(perf["summary"]["measured_over_estimated"] - 1) < 0.01
