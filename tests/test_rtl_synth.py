# SPDX-License-Identifier: BSD-3-Clause
"""Yosys + nextpnr on generated blocks: iCE40 UP5K and ECP5-25F resources and Fmax; "does not fit" messages."""

from __future__ import annotations

import numpy as np
import pytest

from hwq.rtl.generate import generate_verilog
from hwq.rtl.layers import ElemType, MVAULayer
from hwq.rtl.synth import SynthesisError, shortfall, synth_counts, synthesise


def _xnor_mvau(mw, mh, pe, simd, seed=0):
    rng = np.random.default_rng(seed)
    return MVAULayer("mv", mw, mh, pe, simd, True, ElemType(1, False), ElemType(1, False),
                     rng.integers(0, 2, (mw, mh)), rng.integers(mw // 3, 2 * mw // 3, (mh, 1)))


@pytest.mark.parametrize("family, device, package, speed", [
    ("ice40", "up5k", "sg48", None), ("ecp5", "25k", "CSFBGA285", "8")])
def test_small_mvau_synthesises_places_and_packs(family, device, package, speed):
    # relative paths: the WebAssembly tools do not see pytest's /tmp
    design = generate_verilog([_xnor_mvau(32, 16, 4, 8)], f"build-rtl-tmp/test-{device}/rtl", top="small")
    r = synthesise(design, f"build-rtl-tmp/test-{device}/syn", family=family, device=device, package=package,
                   speed=speed)
    assert 50 < r["lut"]["used"] < r["lut"]["available"] and r["ff"] > 50
    assert r["fmax_mhz"] > 30 and r["io"]["used"] <= 39
    assert r["seconds"]["synth"] < 60


def test_shortfall_names_resource_and_amount():
    assert shortfall("ecp5", "25k", synth_counts("ecp5", {"LUT4": 100, "DP16KD": 60})) == \
        "BRAM: needs 60, has 56 (4 over, 107%)"
    assert shortfall("ice40", "up5k", {"lut": 10, "bram": 1, "dsp": 0}) is None


@pytest.mark.slow
def test_too_large_a_rom_does_not_fit_up5k():
    design = generate_verilog([_xnor_mvau(1024, 128, 1, 32)], "build-rtl-tmp/test-big/rtl", top="big")
    with pytest.raises(SynthesisError, match=r"does not fit ice40 up5k .*BRAM: needs 33, has 30"):
        synthesise(design, "build-rtl-tmp/test-big/syn", family="ice40", device="up5k", package="sg48")
