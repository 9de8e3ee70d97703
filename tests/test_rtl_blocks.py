# SPDX-License-Identifier: BSD-3-Clause
"""Each generated Verilog block against the NumPy reference, with random folding, in cocotb + Icarus."""

from __future__ import annotations

import dataclasses
import subprocess

import numpy as np
import pytest

from hwq.errors import VerificationError
from hwq.rtl import reference
from hwq.rtl.blocks import mvau_pipeline_stages
from hwq.rtl.generate import generate_verilog
from hwq.rtl.layers import ElemType, LabelSelectLayer, MVAULayer, run_layers
from hwq.rtl.simulate import simulate


def _divisor(rng, n: int) -> int:
    return int(rng.choice([d for d in range(1, n + 1) if n % d == 0]))


def random_mvau(rng, kind: str, name: str = "mvau") -> MVAULayer:
    """A random MVAU of one of six kinds, with random PE/SIMD dividing MH/MW."""
    mw, mh = int(rng.choice([8, 12, 16, 24])), int(rng.choice([4, 6, 8]))
    pe, simd = _divisor(rng, mh), _divisor(rng, mw)
    if kind == "xnor":
        it, w, ot = ElemType(1, False), rng.integers(0, 2, (mw, mh)), ElemType(1, False)
        acc = (0, mw)
        n_thr, act = 1, 0
    elif kind == "bipolar":          # UINT8 pixels x +-1 weights (a TFC's first layer)
        it, w, ot = ElemType(8, False), rng.choice([-1, 1], (mw, mh)), ElemType(1, False)
        acc = (-255 * mw, 255 * mw)
        n_thr, act = 1, 0
    elif kind == "bipolar_in":       # a BIPOLAR stream (bits for -1/+1) x INT2, out BIPOLAR (mixed precision)
        it, w, ot = ElemType(1, False, bipolar=True), rng.integers(-2, 2, (mw, mh)), ElemType(1, False, bipolar=True)
        acc = (-2 * mw, 2 * mw)
        n_thr, act = 1, 0
    elif kind == "bipolar_in_pm1":   # a BIPOLAR stream x +-1 weights in an integer MVAU, 3 thresholds, INT2 out
        it, w, ot = ElemType(1, False, bipolar=True), rng.choice([-1, 1], (mw, mh)), ElemType(2, True)
        acc = (-mw, mw)
        n_thr, act = 3, -2
    elif kind == "int":              # INT4 x INT3, 3 thresholds, signed 2-bit output (ActVal -2)
        it, w, ot = ElemType(4, True), rng.integers(-4, 4, (mw, mh)), ElemType(2, True)
        acc = (-32 * mw, 32 * mw)
        n_thr, act = 3, -2
    else:                            # UINT4 x INT4 without activation: the raw accumulator
        it, w = ElemType(4, False), rng.integers(-8, 8, (mw, mh))
        lo = int(np.minimum(w * 15, 0).sum(axis=0).min())
        hi = int(np.maximum(w * 15, 0).sum(axis=0).max())
        return MVAULayer(name, mw, mh, pe, simd, False, it, ElemType.for_range(lo, hi), w, None)
    thr = np.sort(rng.integers(acc[0] // 4, acc[1] // 4 + 1, (mh, n_thr)), axis=1)
    return MVAULayer(name, mw, mh, pe, simd, kind == "xnor", it, ot, w, thr, act)


def _inputs(rng, layer, n: int = 8) -> np.ndarray:
    """Stream elements: a bipolar stream carries bits."""
    lo, hi = (0, 1) if layer.in_type.bipolar else (layer.in_type.lo, layer.in_type.hi)
    return rng.integers(lo, hi + 1, (n, layer.in_elems))


# seeds 0-3 draw combinational trees or one stage, 13/19/15/18 two to four stages (depth 1-2, 4-level trees)
@pytest.mark.parametrize("kind, seed", [("xnor", 0), ("bipolar", 1), ("int", 2), ("raw", 3),
                                        ("xnor", 13), ("bipolar", 19), ("int", 15), ("raw", 18),
                                        ("bipolar_in", 4), ("bipolar_in_pm1", 5), ("bipolar_in", 16)])
def test_mvau_block_matches_reference_with_random_folding(tmp_path, kind, seed):
    rng = np.random.default_rng(seed)
    layer = random_mvau(rng, kind)
    every = int(rng.integers(0, 4))          # adder levels per pipeline register; 0: combinational trees
    design = generate_verilog([layer], tmp_path / "rtl", top="dut", tree_levels_per_stage=every)
    x = _inputs(rng, layer)
    want = run_layers([layer], x)
    if layer.out_type.signed:                        # the stream carries two's complement
        assert want.min() >= layer.out_type.lo and want.max() <= layer.out_type.hi
    result = simulate(design, x, want, tmp_path / "sim", p_gap=0.3, p_stall=0.4, seed=seed)
    assert result["cycles_per_image"] == max(layer.cycles, design.in_beats + 1)
    assert result["width_in"] == layer.simd * layer.in_type.bits


def test_bipolar_stream_stands_for_minus_one_and_one():
    """The reference reads a BIPOLAR stream's bits as -1/+1: the same integers as the dot product of the values."""
    rng = np.random.default_rng(7)
    layer = random_mvau(rng, "bipolar_in_pm1")
    bits = _inputs(rng, layer)
    no_act = dataclasses.replace(layer, thresholds=None, out_type=ElemType.for_range(-layer.mw, layer.mw))
    assert np.array_equal(run_layers([no_act], bits), (2 * bits - 1) @ layer.weights)
    assert (layer.in_type.lo, layer.in_type.hi) == (-1, 1)


@pytest.mark.parametrize("kind, seed", [("bipolar", 20), ("int", 21), ("xnor", 22)])
def test_pipelined_trees_add_latency_not_cycles(tmp_path, kind, seed):
    rng = np.random.default_rng(seed)
    layer = random_mvau(rng, kind)
    layer = dataclasses.replace(layer, pe=layer.mh, simd=layer.mw)   # one cycle per vector: the deepest trees
    x = _inputs(rng, layer)
    want = run_layers([layer], x)
    runs = {}
    for every in (0, 1):
        design = generate_verilog([layer], tmp_path / f"rtl{every}", top="dut", tree_levels_per_stage=every)
        runs[every] = simulate(design, x, want, tmp_path / f"sim{every}", p_gap=0.3, p_stall=0.4, seed=seed)
    stages = mvau_pipeline_stages(layer, 1)
    assert stages >= 3                                        # 8+ terms: 3+ adder levels, each one registered
    assert runs[1]["cycles_per_image"] == runs[0]["cycles_per_image"]
    assert runs[1]["latency_cycles"] == runs[0]["latency_cycles"] + stages


def test_label_select_block_with_ties(tmp_path):
    rng = np.random.default_rng(5)
    layer = LabelSelectLayer("ls", 10, 2, ElemType(3, False), ElemType(8, False))
    design = generate_verilog([layer], tmp_path / "rtl", top="dut")
    x = rng.integers(0, 8, (12, 10))
    result = simulate(design, x, reference.label_select(x), tmp_path / "sim", p_gap=0.2, p_stall=0.5)
    assert result["cycles_per_image"] == max(layer.cycles, design.in_beats + 1)   # 5 steps, 5 beats + 1


def test_chain_of_blocks_and_a_planted_mismatch_is_caught(tmp_path):
    rng = np.random.default_rng(7)
    a = MVAULayer("l0", 16, 8, 2, 4, True, ElemType(1, False), ElemType(1, False),
                  rng.integers(0, 2, (16, 8)), rng.integers(6, 11, (8, 1)))
    b = MVAULayer("l1", 8, 4, 4, 2, True, ElemType(1, False), ElemType(4, False), rng.integers(0, 2, (8, 4)), None)
    ls = LabelSelectLayer("l2", 4, 1, ElemType(4, False), ElemType(8, False))
    design = generate_verilog([a, b, ls], tmp_path / "rtl", top="chain")
    strict = subprocess.run(["iverilog", "-g2005", "-Wall", "-o", str(tmp_path / "v2005"), *map(str, design.files)],
                            capture_output=True, text=True)
    assert strict.returncode == 0, strict.stderr                      # plain Verilog-2005
    x = rng.integers(0, 2, (10, 16))
    want = run_layers([a, b, ls], x)
    assert simulate(design, x, want, tmp_path / "ok", p_stall=0.3)["cycles_per_image"] == design.cycles_bound
    planted = want.copy()
    planted[4, 0] = (planted[4, 0] + 1) % 4
    with pytest.raises(VerificationError, match="image 4"):
        simulate(design, x, planted, tmp_path / "bad")
