# SPDX-License-Identifier: BSD-3-Clause
"""Yosys + nextpnr on generated blocks: iCE40 UP5K and ECP5-25F resources and Fmax; "does not fit" messages;
synth_xilinx estimates for Xilinx parts."""

from __future__ import annotations

import numpy as np
import pytest

from hwq.rtl.generate import generate_verilog
from hwq.rtl.layers import ElemType, MVAULayer
from hwq.errors import ConfigError
from hwq.rtl.synth import SynthesisError, shortfall, synth_counts, synthesise
from hwq.rtl.synth_xilinx import ESTIMATE_KIND, synth_xilinx, xilinx_counts, xilinx_family


def _xnor_mvau(mw, mh, pe, simd, seed=0):
    rng = np.random.default_rng(seed)
    return MVAULayer("mv", mw, mh, pe, simd, True, ElemType(1, False), ElemType(1, False),
                     rng.integers(0, 2, (mw, mh)), rng.integers(mw // 3, 2 * mw // 3, (mh, 1)))


@pytest.mark.parametrize("family, device, package, speed", [
    ("ice40", "up5k", "sg48", None), ("ecp5", "25k", "CSFBGA285", "8")])
def test_small_mvau_synthesises_places_and_packs(family, device, package, speed):
    import io

    from hwq.dataflow.progress import StepProgress

    # relative paths: the WebAssembly tools do not see pytest's /tmp
    design = generate_verilog([_xnor_mvau(32, 16, 4, 8)], f"build-rtl-tmp/test-{device}/rtl", top="small")
    shown = io.StringIO()
    r = synthesise(design, f"build-rtl-tmp/test-{device}/syn", family=family, device=device, package=package,
                   speed=speed, progress=StepProgress("synth", stream=shown))
    assert 50 < r["lut"]["used"] < r["lut"]["available"] and r["ff"] > 50
    assert r["fmax_mhz"] > 30 and r["io"]["used"] <= 39
    assert r["seconds"]["synth"] > 0 and r["seconds"]["pnr"] > 0  # recorded (how long depends on the machine)
    # each tool is a progress line with its seconds (off a terminal)
    pack = "icepack" if family == "ice40" else "ecppack"
    names = [line.rsplit(None, 2)[0].strip() for line in shown.getvalue().splitlines()]
    assert names == [f"yosys synth_{family}", f"nextpnr-{family} place and route", pack]


def test_shortfall_names_resource_and_amount():
    assert shortfall("ecp5", "25k", synth_counts("ecp5", {"LUT4": 100, "DP16KD": 60})) == \
        "BRAM: needs 60, has 56 (4 over, 107%)"
    assert shortfall("ice40", "up5k", {"lut": 10, "bram": 1, "dsp": 0}) is None


@pytest.mark.slow
def test_too_large_a_rom_does_not_fit_up5k():
    design = generate_verilog([_xnor_mvau(1024, 128, 1, 32)], "build-rtl-tmp/test-big/rtl", top="big")
    with pytest.raises(SynthesisError, match=r"does not fit ice40 up5k .*BRAM: needs 33, has 30"):
        synthesise(design, "build-rtl-tmp/test-big/syn", family="ice40", device="up5k", package="sg48")


# slow (about 30 s: synth_xilinx twice); the default suite synthesises for ice40 and ECP5 above
@pytest.mark.slow
def test_synth_xilinx_counts_are_plausible_and_grow_with_the_design():
    small = generate_verilog([_xnor_mvau(32, 16, 4, 8)], "build-rtl-tmp/test-xc7/small/rtl", top="small")
    large = generate_verilog([_xnor_mvau(64, 32, 8, 16)], "build-rtl-tmp/test-xc7/large/rtl", top="large")
    a = synth_xilinx(small, "build-rtl-tmp/test-xc7/small/syn", part="xc7z020clg400-1")
    b = synth_xilinx(large, "build-rtl-tmp/test-xc7/large/syn", part="xc7z020clg400-1")
    assert a["kind"] == ESTIMATE_KIND and a["family"] == "xc7"
    # at least the output register (PE=4 one-bit outputs) and the two input-vector buffers are flip-flops
    assert a["counts"]["lut"] > 0 and a["counts"]["ff"] >= small.out_beat * small.out_bits + 2 * 32
    assert b["counts"]["lut"] > a["counts"]["lut"] and b["counts"]["ff"] > a["counts"]["ff"]
    assert a["counts"]["lut"] == sum(n for c, n in a["cells"].items() if c.startswith("LUT") or c == "INV")


def test_xilinx_family_of_the_boards_parts():
    from hwq.boards import known_boards, load_board

    families = {name: xilinx_family(load_board(name).part, name) for name in known_boards()
                if load_board(name).shell != "open"}
    assert families["pynq-z2"] == "xc7" and families["zcu104"] == families["kv260"] == "xcup"
    assert families["alveo-u250"] == families["ultra96-v2"] == "xcup"


def test_unknown_part_names_board_and_part_in_one_line():
    with pytest.raises(ConfigError, match="board 'ulx3s-85f': part 'LFE5U-85F-6BG381C' has no synth_xilinx") as e:
        xilinx_family("LFE5U-85F-6BG381C", board="ulx3s-85f")
    assert "\n" not in str(e.value)


def test_xilinx_counts_bram18_equivalents_and_lutram():
    c = xilinx_counts({"LUT6": 2, "LUT1": 1, "INV": 1, "FDRE": 3, "FDSE": 1, "RAMB36E2": 2, "RAMB18E2": 1, "RAM32M": 4,
                       "SRLC32E": 1, "DSP48E2": 2, "CARRY8": 5, "MUXF7": 9})
    assert c == {"lut": 4, "ff": 4, "lutram": 4, "srl": 1, "bram18": 5, "dsp": 2, "carry": 5, "uram": 0}


def test_nextpnr_region_failure_reads_as_does_not_fit():
    from hwq.rtl.synth import _doesnt_fit

    log = "ERROR: Failed to expand region (0, 0) |_> (25, 31) of 5298 ICESTORM_LCs\n"
    assert _doesnt_fit(log, "ice40", "up5k") == "needs 5298 ICESTORM_LCs, the device has 5280 (18 too many, 100%)"
