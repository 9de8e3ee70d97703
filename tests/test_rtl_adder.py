# SPDX-License-Identifier: BSD-3-Clause
"""The adder MVAU block (AdderNet, ``-sum |x - w|``) against the NumPy reference, with random folding, random input
gaps and output back-pressure (cocotb + Icarus), as every block."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from hwq.errors import VerificationError
from hwq.rtl import reference
from hwq.rtl.generate import generate_verilog
from hwq.rtl.layers import ElemType, MVAULayer, run_layers
from hwq.rtl.simulate import simulate


def _divisor(rng, n: int) -> int:
    return int(rng.choice([d for d in range(1, n + 1) if n % d == 0]))


def random_adder_mvau(rng, kind: str) -> MVAULayer:
    """A random adder MVAU with PE/SIMD dividing MH/MW: INT4 inputs and weights on one grid with thresholds to a
    signed 2-bit output (``thr``), UINT3 inputs with INT4 weights (some outside the input range) and the raw
    accumulator (``raw``)."""
    mw, mh = int(rng.choice([8, 12, 16, 24])), int(rng.choice([4, 6, 8]))
    pe, simd = _divisor(rng, mh), _divisor(rng, mw)
    if kind == "thr":
        it, w = ElemType(4, True), rng.integers(-7, 8, (mw, mh))
        layer = MVAULayer("adder", mw, mh, pe, simd, False, it, ElemType(2, True), w, None, adder=True)
        lo, hi = layer.acc_range()
        thr = np.sort(rng.integers(lo * 3 // 5, lo // 5, (mh, 3)), axis=1)   # where the sums of random inputs lie
        return MVAULayer("adder", mw, mh, pe, simd, False, it, ElemType(2, True), w, thr, -2, adder=True)
    it, w = ElemType(3, False), rng.integers(-8, 8, (mw, mh))
    layer = MVAULayer("adder", mw, mh, pe, simd, False, it, ElemType(1, False), w, None, adder=True)
    return MVAULayer("adder", mw, mh, pe, simd, False, it, ElemType.for_range(*layer.acc_range()), w, None,
                     adder=True)


def test_reference_is_minus_the_l1_distance():
    x = np.array([[3, -1, 0]])
    w = np.array([[1, 3], [-1, -4], [2, 0]])
    assert reference.adder_distance(x, w).tolist() == [[-(2 + 0 + 2), -(0 + 3 + 0)]]
    layer = MVAULayer("a", 3, 2, 1, 1, False, ElemType(3, True), ElemType(5, True), w, None, adder=True)
    lo, hi = layer.acc_range()
    every = np.stack(np.meshgrid(*[np.arange(-4, 4)] * 3), -1).reshape(-1, 3)   # all 512 inputs
    acc = reference.adder_distance(every, w)
    assert (lo, hi) == (int(acc.min()), int(acc.max()))                           # the range is exact


@pytest.mark.parametrize("kind, seed", [("thr", 0), ("raw", 1), ("thr", 2), ("raw", 3)])
def test_adder_mvau_block_matches_reference_with_random_folding(tmp_path, kind, seed):
    rng = np.random.default_rng(seed)
    layer = random_adder_mvau(rng, kind)
    every = int(rng.integers(0, 4))          # adder levels per pipeline register; 0: combinational trees
    design = generate_verilog([layer], tmp_path / "rtl", top="dut", tree_levels_per_stage=every)
    x = rng.integers(layer.in_type.lo, layer.in_type.hi + 1, (8, layer.in_elems))
    want = run_layers([layer], x)
    assert np.array_equal(want, layer.run(x))
    if kind == "raw":
        assert np.array_equal(want, reference.adder_distance(x, layer.weights)) and want.max() <= 0
    result = simulate(design, x, want, tmp_path / "sim", p_gap=0.3, p_stall=0.4, seed=seed)
    assert result["cycles_per_image"] == max(layer.cycles, design.in_beats + 1)
    assert any("adder MVAU" in f.read_text() for f in design.files)
    if kind == "thr":
        assert len(np.unique(want)) >= 3                 # the thresholds are exercised


def test_the_multiplying_block_fails_the_adder_reference(tmp_path):
    """The check can fail: the integer MVAU with the same weights does not compute the adder layer."""
    rng = np.random.default_rng(4)
    layer = random_adder_mvau(rng, "raw")
    x = rng.integers(layer.in_type.lo, layer.in_type.hi + 1, (4, layer.in_elems))
    times = dataclasses.replace(layer, adder=False, out_type=ElemType(16, True))
    design = generate_verilog([times], tmp_path / "rtl", top="dut")
    want = np.clip(run_layers([layer], x), times.out_type.lo, times.out_type.hi)
    with pytest.raises(VerificationError, match="image 0"):
        simulate(design, x, want, tmp_path / "sim")


@pytest.mark.slow
def test_adder_mvau_block_on_verilator_matches_icarus(tmp_path):
    """The same block on Verilator (C++ compilation: slow): it passes Verilator's lint as the other blocks do, and
    gives the same outputs and cycles as Icarus under back-pressure."""
    rng = np.random.default_rng(6)
    layer = random_adder_mvau(rng, "thr")
    design = generate_verilog([layer], tmp_path / "rtl", top="dut", tree_levels_per_stage=2)
    x = rng.integers(layer.in_type.lo, layer.in_type.hi + 1, (5, layer.in_elems))
    want = run_layers([layer], x)
    runs = {sim: simulate(design, x, want, tmp_path / sim, simulator=sim, p_gap=0.2, p_stall=0.3, seed=1)
            for sim in ("verilator", "icarus")}
    assert runs["verilator"]["cycles_per_image"] == runs["icarus"]["cycles_per_image"]
    assert runs["verilator"]["latency_cycles"] == runs["icarus"]["latency_cycles"]
