# SPDX-License-Identifier: BSD-3-Clause
"""The convolutional blocks (sliding window, max-pool, MVAU over many vectors) against the NumPy reference, with
random shapes and folding, random input gaps and output back-pressure, in cocotb + Icarus."""

from __future__ import annotations

import subprocess

import numpy as np
import pytest

from hwq.errors import VerificationError
from hwq.rtl.generate import generate_verilog
from hwq.rtl.layers import ElemType, LabelSelectLayer, MVAULayer, run_layers
from hwq.rtl.layers_conv import PoolLayer, SlidingWindowLayer
from hwq.rtl.simulate import simulate
from tests.test_rtl_blocks import _divisor

#: Element types of the random streams: binary (CNV), 2-bit signed, UINT8 pixels (CNV's input).
ELEM_TYPES = [ElemType(1, False), ElemType(2, True), ElemType(8, False)]


def random_window(rng, name: str = "swg") -> SlidingWindowLayer:
    """A random sliding window generator over a small image: kernel 1..3 per axis, stride 1..2, SIMD | C."""
    kernel = tuple(int(k) for k in rng.integers(1, 4, 2))
    stride = tuple(int(s) for s in rng.integers(1, 3, 2))
    ifm = tuple(int(k + rng.integers(0, 4)) for k in kernel)
    channels = int(rng.choice([2, 3, 4, 6]))
    in_type = ELEM_TYPES[int(rng.integers(len(ELEM_TYPES)))]
    simd = _divisor(rng, channels)
    if simd * in_type.bits == 1:    # a 1-bit output port: tb_stream reads m_axis_tdata as a vector
        simd = channels
    return SlidingWindowLayer(name, ifm, channels, kernel, stride, simd, in_type)


def _images(rng, layer, n: int) -> np.ndarray:
    return rng.integers(layer.in_type.lo, layer.in_type.hi + 1, (n, layer.in_elems))


@pytest.mark.parametrize("seed", range(4))
def test_sliding_window_block_matches_reference(tmp_path, seed):
    rng = np.random.default_rng(seed)
    layer = random_window(rng)
    in_beat = _divisor(rng, layer.channels)              # the producer's beat width (e.g. an MVAU's PE)
    design = generate_verilog([layer], tmp_path / "rtl", top="dut", in_beat=in_beat)
    x = _images(rng, layer, 4)
    result = simulate(design, x, layer.run(x), tmp_path / "sim", p_gap=0.3, p_stall=0.4, seed=seed)
    # images follow each other without a gap: one beat a cycle on the longer of the two streams
    assert result["cycles_per_image"] == max(layer.in_elems // in_beat, layer.out_elems // layer.simd)


@pytest.mark.parametrize("seed", range(3))
def test_max_pool_block_matches_reference(tmp_path, seed):
    rng = np.random.default_rng(10 + seed)
    channels = int(rng.choice([2, 4, 6]))
    in_type = ELEM_TYPES[seed]
    pe = _divisor(rng, channels)
    if pe * in_type.bits == 1:      # a 1-bit output port: tb_stream reads m_axis_tdata as a vector
        pe = channels
    layer = PoolLayer("pool", channels, window=int(rng.choice([2, 4, 9])), windows=int(rng.integers(2, 6)),
                      pe=pe, in_type=in_type)
    in_beat = _divisor(rng, layer.channels)              # the sliding window's SIMD
    design = generate_verilog([layer], tmp_path / "rtl", top="dut", in_beat=in_beat)
    x = _images(rng, layer, 4)
    result = simulate(design, x, layer.run(x), tmp_path / "sim", p_gap=0.3, p_stall=0.4, seed=seed)
    # per window: collect its beats (plus the collector's registered ready), or send C / PE beats
    window_beats = layer.window * channels // in_beat
    assert result["cycles_per_image"] == layer.windows * max(window_beats + 1, channels // layer.pe)


def mini_cnv(rng) -> list:
    """A CNV in miniature: conv (UINT8 image, INT2 weights) -> conv-sized max-pool -> a window covering the whole
    map -> XNOR MVAU without activation -> label select; MVAUs over many vectors, beats converted between them."""
    c0, c1 = 3, 8
    swg0 = SlidingWindowLayer("swg0", (6, 6), c0, (3, 3), (1, 1), 1, ElemType(8, False))
    mw0 = 9 * c0
    w0 = rng.integers(-2, 2, (mw0, c1))
    acc0 = np.abs(w0).sum(axis=0) * 255
    thr0 = rng.integers(-acc0 // 8, acc0 // 8 + 1)[:, None]
    mvau0 = MVAULayer("mvau0", mw0, c1, 2, 9, False, ElemType(8, False), ElemType(1, False), w0, thr0,
                      vectors=16)
    swg1 = SlidingWindowLayer("swg1", (4, 4), c1, (2, 2), (2, 2), 4, ElemType(1, False))
    pool = PoolLayer("pool", c1, 4, 4, 4, ElemType(1, False))
    swg2 = SlidingWindowLayer("swg2", (2, 2), c1, (2, 2), (1, 1), 2, ElemType(1, False))
    mvau1 = MVAULayer("mvau1", 4 * c1, 4, 1, 8, True, ElemType(1, False), ElemType(6, False),
                      rng.integers(0, 2, (4 * c1, 4)), None)
    ls = LabelSelectLayer("ls", 4, 1, ElemType(6, False), ElemType(8, False))
    return [swg0, mvau0, swg1, pool, swg2, mvau1, ls]


def test_mini_cnv_chain_and_a_planted_mismatch_is_caught(tmp_path):
    rng = np.random.default_rng(21)
    layers = mini_cnv(rng)
    design = generate_verilog(layers, tmp_path / "rtl", top="cnv")
    strict = subprocess.run(["iverilog", "-g2005", "-Wall", "-o", str(tmp_path / "v2005"), *map(str, design.files)],
                            capture_output=True, text=True)
    assert strict.returncode == 0, strict.stderr                      # plain Verilog-2005
    x = _images(rng, layers[0], 6)
    want = run_layers(layers, x)
    assert len(set(want.ravel().tolist())) > 1                        # the images do not all give one class
    result = simulate(design, x, want, tmp_path / "ok", p_gap=0.2, p_stall=0.3)
    # the slowest block sets the pace: the first MVAU (16 vectors of NF x SF = 4 cycles, collecting 27 beats + 1)
    assert result["cycles_per_image"] == 16 * (layers[1].mw + 1)
    planted = want.copy()
    planted[3, 0] = (planted[3, 0] + 1) % 4
    with pytest.raises(VerificationError, match="image 3"):
        simulate(design, x, planted, tmp_path / "bad")
