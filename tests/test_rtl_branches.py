# SPDX-License-Identifier: BSD-3-Clause
"""Graphs with branches (residual add, concat) in the open backend: the graph reader, the duplicate / add / concat
blocks, the shortcut FIFO, against the NumPy reference (and finn's execution) in cocotb + Icarus."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass

import numpy as np
import pytest
from onnx import TensorProto, helper
from qonnx.core.datatype import DataType
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.core.onnx_exec import execute_onnx
from qonnx.util.basic import qonnx_make_model

from hwq.errors import VerificationError
from hwq.rtl.blocks import _ports
from hwq.rtl.branches import skid_buffer
from hwq.rtl.fifo import FifoLayer, shortcut_depths
from hwq.rtl.generate import generate_verilog
from hwq.rtl.graph import LayerGraph, Source
from hwq.rtl.layers import ElemType, LabelSelectLayer, MVAULayer, UnsupportedLayerError, layers_from_model, run_layers
from hwq.rtl.layers_branch import AddLayer, ConcatLayer, DuplicateLayer
from hwq.rtl.simulate import simulate, simulate_block
from tests.test_rtl_blocks import _divisor

U2, U3, I3 = ElemType(2, False), ElemType(3, False), ElemType(3, True)


@dataclass(frozen=True, eq=False)
class StallLayer:
    """A pass-through block for tests that passes a beat only when its 16-bit LFSR's low bit is set (about every
    other cycle, in a pattern set by ``seed``): back-pressure inside one branch of a graph. Its input has a skid
    register, like every block, so ``in_ready`` does not depend on ``out_ready``."""

    name: str
    elems: int
    beat: int
    elem_type: ElemType
    seed: int = 0xACE1

    in_type = property(lambda self: self.elem_type)
    out_type = property(lambda self: self.elem_type)
    in_elems = property(lambda self: self.elems)
    out_elems = property(lambda self: self.elems)
    out_beat = property(lambda self: self.beat)
    cycles = property(lambda self: 2 * self.elems // self.beat)
    buffer_elems = property(lambda self: 2 * self.beat)

    def run(self, x):
        return np.asarray(x, dtype=np.int64)

    def verilog(self, in_beats) -> str:
        assert in_beats == (self.beat,)
        w = self.beat * self.elem_type.bits
        return "\n".join(_ports(self.name, w, w) + skid_buffer("k", "in", w) + [
            "    reg [15:0] lfsr;",
            "    assign k_ready = lfsr[0] && (!out_valid || out_ready);",
            "    always @(posedge clk) begin",
            f"        if (rst) lfsr <= 16'h{self.seed & 0xFFFF or 1:x};",
            "        else lfsr <= {lfsr[14:0], lfsr[15] ^ lfsr[13] ^ lfsr[12] ^ lfsr[10]};",
            "        if (rst) out_valid <= 1'b0;",
            "        else if (k_valid && k_ready) out_valid <= 1'b1;",
            "        else if (out_ready) out_valid <= 1'b0;",
            "        if (k_valid && k_ready) out_data <= k_data;",
            "    end", "endmodule", ""])


def _mvau(rng, name, mw, mh, pe, simd, vectors, in_type, out_type, n_thr=None):
    """An integer MVAU (INT2 weights) with thresholds to ``out_type`` (unsigned), or none (``out_type`` None)."""
    w = rng.integers(-2, 2, (mw, mh))
    if out_type is None:
        lo = int(np.minimum(w * in_type.lo, w * in_type.hi).sum(axis=0).min())
        hi = int(np.maximum(w * in_type.lo, w * in_type.hi).sum(axis=0).max())
        return MVAULayer(name, mw, mh, pe, simd, False, in_type, ElemType.for_range(lo, hi), w, None, vectors=vectors)
    n_thr = n_thr or out_type.hi
    span = int(np.abs(w).sum(axis=0).max()) * max(abs(in_type.lo), in_type.hi)
    thr = np.sort(rng.integers(-span // 3, span // 3 + 1, (mh, n_thr)), axis=1)
    return MVAULayer(name, mw, mh, pe, simd, False, in_type, out_type, w, thr, vectors=vectors)


def _strict_verilog_2005(design, tmp_path) -> None:
    strict = subprocess.run(["iverilog", "-g2005", "-Wall", "-o", str(tmp_path / "v2005"), *map(str, design.files)],
                            capture_output=True, text=True)
    assert strict.returncode == 0, strict.stderr


# --- the blocks, each with random folding and independent back-pressure per branch -------------------------------
ELEM_TYPES = [U2, I3, ElemType(4, False), ElemType(5, True), ElemType(1, False)]


def _type(rng) -> ElemType:
    return ELEM_TYPES[int(rng.integers(len(ELEM_TYPES)))]


@pytest.mark.parametrize("seed", range(3))
def test_duplicate_block_alone_each_branch_stalled_on_its_own(tmp_path, seed):
    rng = np.random.default_rng(30 + seed)
    channels, vectors, outputs = int(rng.choice([2, 4, 6])), int(rng.integers(2, 6)), int(rng.integers(2, 4))
    t = _type(rng)
    dup = DuplicateLayer("dup", channels, _divisor(rng, channels), vectors, t, outputs)
    in_beat = _divisor(rng, channels)
    x = rng.integers(t.lo, t.hi + 1, (5, dup.in_elems))
    want = dup.run(x)
    assert len(want) == outputs and all(np.array_equal(w, x) for w in want)
    result = simulate_block(dup, (in_beat,), [x], list(want), tmp_path, p_gap=0.3, p_stall=0.4, seed=seed)
    # free-running, one beat a cycle on the wider side (a converter between other widths costs more)
    if in_beat == dup.pe:
        assert result["cycles_per_image"] == dup.cycles


@pytest.mark.parametrize("seed", range(4))
def test_add_block_alone_with_random_types_beats_and_independent_inputs(tmp_path, seed):
    rng = np.random.default_rng(40 + seed)
    channels, vectors = int(rng.choice([2, 4, 6, 8])), int(rng.integers(2, 6))
    ta, tb = _type(rng), _type(rng)
    union = ElemType.for_range(min(0, ta.lo, tb.lo), max(ta.hi, tb.hi))
    add = AddLayer("add", channels, _divisor(rng, channels), vectors, (ta, tb), ElemType(union.bits + 1, union.signed))
    beats = (_divisor(rng, channels), _divisor(rng, channels))        # two producers, two beat widths
    a = rng.integers(ta.lo, ta.hi + 1, (6, add.out_elems))
    b = rng.integers(tb.lo, tb.hi + 1, (6, add.out_elems))
    want = add.run(a, b)
    assert want.min() >= add.out_type.lo and want.max() <= add.out_type.hi
    simulate_block(add, beats, [a, b], [want], tmp_path, p_gap=0.3, p_stall=0.4, seed=seed)


@pytest.mark.parametrize("seed", range(4))
def test_concat_block_alone_with_random_channels_types_and_beats(tmp_path, seed):
    rng = np.random.default_rng(50 + seed)
    simd = int(rng.choice([1, 2]))
    n = int(rng.integers(2, 4))
    channels = tuple(simd * int(rng.integers(1, 4)) for _ in range(n))
    types = tuple(_type(rng) for _ in range(n))
    cat = ConcatLayer("cat", channels, simd, int(rng.integers(2, 5)), types)
    beats = tuple(_divisor(rng, c) for c in channels)
    xs = [rng.integers(t.lo, t.hi + 1, (5, e)) for t, e in zip(types, cat.in_elems_per_port)]
    want = cat.run(*xs)
    assert want.shape == (5, cat.out_elems)
    simulate_block(cat, beats, xs, [want], tmp_path, p_gap=0.3, p_stall=0.4, seed=seed)


@pytest.mark.parametrize("seed", range(3))
def test_duplicate_and_concat_blocks_with_random_folding_and_stalled_branches(tmp_path, seed):
    """Duplicate into 2-3 branches, each stalled by its own pseudo-random pattern, concatenated again: every
    branch moves on its own, and the concat takes each input's channels in turn."""
    rng = np.random.default_rng(seed)
    channels, vectors, outputs = int(rng.choice([2, 4, 6])), int(rng.integers(2, 6)), int(rng.integers(2, 4))
    t = [U2, I3, ElemType(4, False)][seed]
    dup = DuplicateLayer("dup", channels, _divisor(rng, channels), vectors, t, outputs)
    stalls = [StallLayer(f"stall{k}", dup.out_elems, dup.pe, t, seed=0x1234 * (k + 1) + seed) for k in range(outputs)]
    cat = ConcatLayer("cat", (channels,) * outputs, _divisor(rng, channels), vectors, (t,) * outputs)
    feeds = {s.name: [Source("dup", k)] for k, s in enumerate(stalls)}
    feeds["cat"] = [Source(s.name) for s in stalls]
    graph = LayerGraph([dup, *stalls, cat], feeds)
    in_beat = _divisor(rng, channels)                   # the producer's beat: the duplicate converts it to PE
    design = generate_verilog(graph, tmp_path / "rtl", top="dut", in_beat=in_beat)
    _strict_verilog_2005(design, tmp_path)
    # the concat reads its inputs in turn: each holds a vector (plus two, in beats of the duplicate) meanwhile
    assert design.fifos == {f"cat_fifo{k}": 1 << (3 * channels // dup.pe - 1).bit_length() for k in range(outputs)}
    x = rng.integers(t.lo, t.hi + 1, (5, dup.in_elems))
    want = run_layers(graph, x)
    assert want.shape == (5, outputs * dup.in_elems)
    simulate(design, x, want, tmp_path / "sim", p_gap=0.3, p_stall=0.4, seed=seed)


@pytest.mark.parametrize("seed", range(3))
def test_add_block_with_random_folding_and_a_stalled_input(tmp_path, seed):
    """Add of a stream and a stalled copy of it, beat widths converted on both inputs (duplicate PE, add PE,
    concat SIMD all random), signed and unsigned inputs extended to FINN's output type."""
    rng = np.random.default_rng(10 + seed)
    channels, vectors = int(rng.choice([2, 4, 6, 8])), int(rng.integers(2, 6))
    t = [U3, I3, ElemType(1, False)][seed]
    dup = DuplicateLayer("dup", channels, _divisor(rng, channels), vectors, t)
    stall = StallLayer("stall", dup.out_elems, dup.pe, t, seed=0xBEEF + seed)
    out_type = ElemType(t.bits + 1, t.signed)            # FINN's: one bit more
    add = AddLayer("add", channels, _divisor(rng, channels), vectors, (t, t), out_type)
    graph = LayerGraph([dup, stall, add], {"stall": [Source("dup", 1)], "add": [Source("dup", 0), Source("stall")]})
    design = generate_verilog(graph, tmp_path / "rtl", top="dut", in_beat=_divisor(rng, channels))
    x = rng.integers(t.lo, t.hi + 1, (6, dup.in_elems))
    want = run_layers(graph, x)
    np.testing.assert_array_equal(want, 2 * x)
    simulate(design, x, want, tmp_path / "sim", p_gap=0.3, p_stall=0.4, seed=seed)


@pytest.mark.parametrize("seed", range(2))
def test_fifo_block_alone_with_random_depth_and_back_pressure(tmp_path, seed):
    rng = np.random.default_rng(20 + seed)
    t = [I3, ElemType(5, False)][seed]
    beat = int(rng.choice([1, 2, 3]))
    fifo = FifoLayer("fifo", int(rng.choice([2, 4, 16])), beat, beat * int(rng.integers(3, 20)), t)
    design = generate_verilog([fifo], tmp_path / "rtl", top="dut")
    x = rng.integers(t.lo, t.hi + 1, (6, fifo.in_elems))
    result = simulate(design, x, x, tmp_path / "sim", p_gap=0.3, p_stall=0.4, seed=seed)
    assert result["cycles_per_image"] == fifo.cycles                 # a beat a cycle, free-running


# --- residual graphs -----------------------------------------------------------------------------------------------
def residual(rng, *, stall: bool, channels: int = 8, vectors: int = 6) -> LayerGraph:
    """Duplicate -> [MVAU with thresholds -> (stall) -> MVAU with thresholds] + shortcut -> add -> MVAU with
    thresholds over every pixel -> label select: a residual block of 1x1 convolutions on ``vectors`` pixels."""
    c = channels
    dup = DuplicateLayer("dup", c, 2, vectors, U2)
    m0 = _mvau(rng, "m0", c, c, 2, 2, vectors, U2, U2)
    m1 = _mvau(rng, "m1", c, c, 4, 4, vectors, U2, U2)
    add = AddLayer("add", c, 2, vectors, (U2, U2), U3)
    head = _mvau(rng, "head", vectors * c, 4, 2, c, 1, U3, ElemType(4, False), n_thr=15)
    ls = LabelSelectLayer("ls", 4, 1, ElemType(4, False), ElemType(8, False))
    long = [m0, StallLayer("stall", m0.out_elems, m0.out_beat, U2, seed=0x5EED)] if stall else [m0]
    feeds = {"m0": [Source("dup", 0)], "add": [Source("m1"), Source("dup", 1)]}
    return LayerGraph([dup, *long, m1, add, head, ls], feeds)


def test_shortcut_fifo_holds_what_the_long_branch_holds():
    """The rule: the long branch's MVAUs hold 3 vectors each (collector, the vector computed, results in flight):
    48 elements; plus two of the add's vectors, 64 elements = 32 beats of the duplicate's 2."""
    graph = residual(np.random.default_rng(0), stall=False)
    assert shortcut_depths(graph, in_beat=2) == {("add", 1): 32}
    chain = LayerGraph([graph[1], graph[2]], {"m0": [Source(None)]})
    assert shortcut_depths(chain, in_beat=2) == {}


@pytest.mark.parametrize("stall", [False, True])
def test_residual_with_back_pressure_in_one_branch_is_bit_exact_and_never_deadlocks(tmp_path, stall):
    rng = np.random.default_rng(3)
    graph = residual(rng, stall=stall)
    design = generate_verilog(graph, tmp_path / "rtl", top="res")
    _strict_verilog_2005(design, tmp_path)
    assert design.fifos == {"add_fifo1": 64 if stall else 32}     # the stall block holds 2 beats more
    assert "add_fifo1 u_add_fifo1" in design.files[0].read_text()
    x = rng.integers(0, 4, (8, graph.in_elems))
    want = run_layers(graph, x)
    assert len(set(want.ravel().tolist())) > 1
    result = simulate(design, x, want, tmp_path / "sim", p_gap=0.2, p_stall=0.3, seed=int(stall))
    if not stall:   # the slowest block sets the pace, the shortcut costs nothing: m0, 6 pixels x NF 4 x SF 4
        assert result["cycles_per_image"] == design.cycles_bound == 96


def test_residual_without_the_shortcut_fifo_hangs_and_says_so(tmp_path):
    """The same residual without its FIFO: the duplicate fills the shortcut while m0 still collects its first
    vector, and the add waits for m1 forever. The bench stops it with a clear message."""
    rng = np.random.default_rng(3)
    graph = residual(rng, stall=False)
    design = generate_verilog(graph, tmp_path / "rtl", top="res", shortcut_fifos=False)
    assert design.fifos == {}
    x = rng.integers(0, 4, (2, graph.in_elems))
    with pytest.raises(VerificationError, match=r"res: RTL simulation stopped: .*the design hangs: no beat in or "
                                                r"out for \d+ cycles after \d+ of 48 input beats and 0 of 2 output"):
        simulate(design, x, run_layers(graph, x), tmp_path / "sim")


def test_nested_residual_sizes_both_fifos_and_is_bit_exact(tmp_path):
    """A residual inside the long branch of another: the inner shortcut gets its FIFO, the outer one holds what
    the whole inner residual holds (its FIFO included), and a stall inside the inner long branch deadlocks
    neither."""
    rng = np.random.default_rng(9)
    c, v = 4, 6
    outer = DuplicateLayer("outer", c, 2, v, U2)
    inner = DuplicateLayer("inner", c, 1, v, U2)
    m0 = _mvau(rng, "m0", c, c, 1, 2, v, U2, U2)
    stall = StallLayer("stall", m0.out_elems, m0.out_beat, U2, seed=0x0F0F)
    add_in = AddLayer("add_in", c, 2, v, (U2, U2), U3)
    m1 = _mvau(rng, "m1", c, c, 2, 2, v, U3, U2)
    add_out = AddLayer("add_out", c, 1, v, (U2, U2), U3)
    head = _mvau(rng, "head", c, 3, 1, 2, v, U3, U2)          # per pixel, with thresholds
    graph = LayerGraph([outer, inner, m0, stall, add_in, m1, add_out, head],
                       {"inner": [Source("outer", 0)], "m0": [Source("inner", 0)],
                        "add_in": [Source("stall"), Source("inner", 1)], "add_out": [Source("m1"), Source("outer", 1)]})
    depths = shortcut_depths(graph, in_beat=2)
    assert set(depths) == {("add_in", 1), ("add_out", 1)}
    assert depths[("add_out", 1)] > depths[("add_in", 1)]          # the outer shortcut holds the inner residual
    design = generate_verilog(graph, tmp_path / "rtl", top="nested")
    x = rng.integers(0, 4, (6, graph.in_elems))
    want = run_layers(graph, x)
    assert len(set(want.ravel().tolist())) > 1
    simulate(design, x, want, tmp_path / "sim", p_gap=0.2, p_stall=0.3)


def test_residual_with_line_buffers_in_both_branches(tmp_path):
    """Duplicate -> [3x3 sliding window -> MVAU -> MVAU] + [3x3 sliding window -> max-pool] -> add: both branches
    fill a line buffer before their first output; the long one holds two MVAUs more, which its FIFO covers, with a
    stall inside the long branch and random back-pressure."""
    from hwq.rtl.layers_conv import PoolLayer, SlidingWindowLayer

    rng = np.random.default_rng(17)
    c, ifm = 4, (5, 6)
    dup = DuplicateLayer("dup", c, 2, ifm[0] * ifm[1], U2)
    swg_a = SlidingWindowLayer("swg_a", ifm, c, (3, 3), (1, 1), 2, U2)
    swg_b = SlidingWindowLayer("swg_b", ifm, c, (3, 3), (1, 1), 4, U2)
    pixels = swg_a.ofm[0] * swg_a.ofm[1]
    conv = _mvau(rng, "conv", 9 * c, c, 2, 6, pixels, U2, U2)
    stall = StallLayer("stall", conv.out_elems, conv.out_beat, U2, seed=0x7777)
    mix = _mvau(rng, "mix", c, c, 4, 2, pixels, U2, U2)
    pool = PoolLayer("pool", c, 9, pixels, 2, U2)
    add = AddLayer("add", c, 4, pixels, (U2, U2), U3)
    head = _mvau(rng, "head", c, 2, 1, 4, pixels, U3, U2)
    graph = LayerGraph([dup, swg_a, conv, stall, mix, swg_b, pool, add, head],
                       {"swg_a": [Source("dup", 0)], "swg_b": [Source("dup", 1)],
                        "add": [Source("mix"), Source("pool")]})
    design = generate_verilog(graph, tmp_path / "rtl", top="lines")
    assert list(design.fifos) == ["add_fifo1"]
    x = rng.integers(0, 4, (4, graph.in_elems))
    want = run_layers(graph, x)
    assert len(set(want.ravel().tolist())) > 1
    simulate(design, x, want, tmp_path / "sim", p_gap=0.2, p_stall=0.3)


def test_concat_dag_is_bit_exact_under_back_pressure(tmp_path):
    """Duplicate -> [MVAU 8->4 channels, MVAU 8->6 channels (signed raw)] -> concat -> MVAU -> label select."""
    rng = np.random.default_rng(5)
    vectors = 4
    dup = DuplicateLayer("dup", 8, 4, vectors, U2)
    a = _mvau(rng, "a", 8, 4, 2, 4, vectors, U2, U2)
    b = _mvau(rng, "b", 8, 6, 3, 2, vectors, U2, None)          # no activation: a signed accumulator
    cat = ConcatLayer("cat", (4, 6), 2, vectors, (a.out_type, b.out_type))
    head = _mvau(rng, "head", vectors * 10, 3, 1, 10, 1, cat.out_type, None)
    ls = LabelSelectLayer("ls", 3, 1, head.out_type, ElemType(8, False))
    graph = LayerGraph([dup, a, b, cat, head, ls], {"a": [Source("dup", 0)], "b": [Source("dup", 1)],
                                                     "cat": [Source("a"), Source("b")]})
    assert cat.out_type.signed and cat.out_type.bits == b.out_type.bits
    design = generate_verilog(graph, tmp_path / "rtl", top="concat_dag")
    _strict_verilog_2005(design, tmp_path)
    assert set(design.fifos) == {"cat_fifo0", "cat_fifo1"}     # each input holds a vector while the other goes
    x = rng.integers(0, 4, (8, graph.in_elems))
    want = run_layers(graph, x)
    assert len(set(want.ravel().tolist())) > 1
    simulate(design, x, want, tmp_path / "sim", p_gap=0.2, p_stall=0.3)


# --- FINN HW nodes through the reader ------------------------------------------------------------------------------
def finn_residual(rng, specialised: bool, add_op: str = "ElementwiseAdd") -> ModelWrapper:
    """A residual block as finn-plus makes it: MVAU (UINT2 in, INT2 weights, thresholds) -> DuplicateStreams ->
    [MVAU -> MVAU] + shortcut -> ElementwiseAdd -> MVAU -> LabelSelect, on 4 pixels of 4 channels. With
    ``specialised`` the nodes are the ``*_hls`` ones (after ``specialize_layers``), else the abstract ones finn
    executes."""
    hls = "_hls" if specialised else ""
    fd = dict(domain="finn.custom_op.fpgadataflow.hls" if specialised else "finn.custom_op.fpgadataflow",
              backend="fpgadataflow")
    v, c = [1, 2, 2], 4

    def mvau(name, inp, out, mw, mh, pe, simd, vecs, idt, odt, n_thr):
        return helper.make_node("MVAU" + hls, [inp, f"{name}_W", f"{name}_T"], [out], name=name, MW=mw, MH=mh,
                                PE=pe, SIMD=simd, numInputVectors=vecs, inputDataType=idt, weightDataType="INT2",
                                outputDataType=odt, binaryXnorMode=0, noActivation=0, ActVal=0, **fd)

    if add_op == "ElementwiseAdd":
        add = helper.make_node("ElementwiseAdd" + hls, ["r1", "s1"], ["sum"], name="add", lhs_shape=v + [c],
                               rhs_shape=v + [c], out_shape=v + [c], lhs_dtype="UINT2", rhs_dtype="UINT2",
                               out_dtype="UINT3", lhs_style="input", rhs_style="input", PE=2, **fd)
    else:   # upstream FINN's AddStreams
        add = helper.make_node("AddStreams" + hls, ["r1", "s1"], ["sum"], name="add", NumChannels=c, PE=2,
                               inputDataTypes=["UINT2", "UINT2"], numInputVectors=v, **fd)
    nodes = [
        mvau("stem", "x", "a", 4, c, 2, 2, v, "UINT2", "UINT2", 3),
        helper.make_node("DuplicateStreams" + hls, ["a"], ["s0", "s1"], name="dup", NumChannels=c, PE=2,
                         NumOutputStreams=2, inputDataType="UINT2", numInputVectors=v, **fd),
        mvau("r0", "s0", "r0o", c, c, 1, 2, v, "UINT2", "UINT2", 3),
        mvau("r1", "r0o", "r1", c, c, 2, 4, v, "UINT2", "UINT2", 3),
        add,
        mvau("head", "sum", "h", c, 3, 1, 2, v, "UINT3", "UINT4", 15),
    ]
    graph = helper.make_graph(nodes, "residual", [helper.make_tensor_value_info("x", TensorProto.FLOAT, v + [4])],
                              [helper.make_tensor_value_info("h", TensorProto.FLOAT, v + [3])])
    model = ModelWrapper(qonnx_make_model(graph))
    for t in ("a", "s0", "s1", "r0o", "r1", "sum"):
        model.set_tensor_shape(t, v + [c])
    for name, (mw, mh, n_thr, in_max) in {"stem": (4, c, 3, 3), "r0": (c, c, 3, 3), "r1": (c, c, 3, 3),
                                          "head": (c, 3, 15, 7)}.items():
        w = rng.integers(-2, 2, (mw, mh))
        span = int(np.abs(w).sum(axis=0).max()) * in_max
        model.set_initializer(f"{name}_W", w.astype(np.float32))
        model.set_initializer(f"{name}_T", np.sort(rng.integers(-span // 3, span // 3 + 1, (mh, n_thr)),
                                                   axis=1).astype(np.float32))
        model.set_tensor_datatype(f"{name}_W", DataType["INT2"])
    for t in ("x", "a", "s0", "s1", "r0o", "r1"):
        model.set_tensor_datatype(t, DataType["UINT2"])
    model.set_tensor_datatype("sum", DataType["UINT3"])
    model.set_tensor_datatype("h", DataType["UINT4"])
    return model


def test_finn_residual_graph_is_read_as_a_dag_equal_to_finn_execution_and_simulates(tmp_path):
    rng = np.random.default_rng(11)
    abstract = finn_residual(rng, specialised=False)
    graph = layers_from_model(abstract)
    assert [type(layer).__name__ for layer in graph] == ["MVAULayer", "DuplicateLayer", "MVAULayer", "MVAULayer",
                                                         "AddLayer", "MVAULayer"]
    assert not graph.is_chain
    assert graph.feeds["add"] == (Source("r1"), Source("dup", 1))
    assert [s.tensor for s in graph.feeds["add"]] == ["r1", "s1"]
    assert graph.layer("add").out_type == ElemType(3, False)
    x = rng.integers(0, 4, (10, 16))
    finn = np.stack([execute_onnx(abstract, {"x": xi.reshape(1, 2, 2, 4).astype(np.float32)})["h"].reshape(-1)
                     for xi in x]).astype(np.int64)
    np.testing.assert_array_equal(finn, run_layers(graph, x))
    assert len(set(finn.ravel().tolist())) > 1
    # the specialised graph (what hwq's FINN steps hand the open backend) reads into the same layers
    rng = np.random.default_rng(11)
    hls = layers_from_model(finn_residual(rng, specialised=True))
    np.testing.assert_array_equal(run_layers(hls, x), finn)
    design = generate_verilog(hls, tmp_path / "rtl", top="accel")
    assert list(design.fifos) == ["add_fifo1"]
    simulate(design, x, finn, tmp_path / "sim", p_gap=0.2, p_stall=0.3)


def test_upstream_add_streams_node_reads_like_elementwise_add():
    rng = np.random.default_rng(11)
    graph = layers_from_model(finn_residual(rng, specialised=True, add_op="AddStreams"))
    add = graph.layer("add")
    assert isinstance(add, AddLayer) and (add.channels, add.pe, add.vectors) == (4, 2, 4)
    assert add.out_type == ElemType(3, False)                 # FINN's: UINT2 + UINT2 -> UINT3


def _node_graph(nodes, shapes, out="y"):
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info(out, TensorProto.FLOAT, [1, 4])])
    model = ModelWrapper(qonnx_make_model(graph))
    for name, shape in shapes.items():
        model.set_tensor_shape(name, shape)
    return model


def test_reader_names_the_node_of_an_unsupported_branch():
    fd = dict(domain="finn.custom_op.fpgadataflow.hls", backend="fpgadataflow")
    dup = helper.make_node("DuplicateStreams_hls", ["x"], ["a", "b"], name="fork", NumChannels=4, PE=2,
                           NumOutputStreams=2, inputDataType="UINT2", numInputVectors=[1], **fd)
    add = helper.make_node("ElementwiseAdd_hls", ["a", "bias"], ["y"], name="bias_add", lhs_shape=[1, 4],
                           rhs_shape=[1, 4], out_shape=[1, 4], lhs_dtype="UINT2", rhs_dtype="UINT2",
                           out_dtype="UINT3", lhs_style="input", rhs_style="const", PE=1, **fd)
    model = _node_graph([dup, add], {"a": [1, 4], "b": [1, 4]})
    model.set_initializer("bias", np.ones((1, 4), dtype=np.float32))
    with pytest.raises(UnsupportedLayerError, match="^bias_add: ElementwiseAdd with a constant operand"):
        layers_from_model(model)
    # a stream feeding two nodes without a DuplicateStreams
    ls = dict(Labels=4, PE=1, K=1, inputDataType="UINT2", outputDataType="UINT8", **fd)
    fan = [helper.make_node("LabelSelect_hls", ["x"], ["y"], name="ls0", **ls),
           helper.make_node("LabelSelect_hls", ["x"], ["z"], name="ls1", **ls)]
    with pytest.raises(UnsupportedLayerError, match="input feeds both ls0 and ls1 .*DuplicateStreams"):
        layers_from_model(_node_graph(fan, {}))
    # an output of the fork that goes nowhere
    model = _node_graph([dup, helper.make_node("LabelSelect_hls", ["a"], ["y"], name="ls", **ls)], {"a": [1, 4]})
    with pytest.raises(UnsupportedLayerError, match="output 1 of fork feeds nothing"):
        layers_from_model(model)


def test_chain_stays_a_list_and_needs_no_fifo():
    rng = np.random.default_rng(0)
    layers = [_mvau(rng, "m0", 8, 4, 2, 4, 1, U2, U2), LabelSelectLayer("ls", 4, 1, U2, ElemType(8, False))]
    graph = LayerGraph(layers)
    assert graph.is_chain and isinstance(graph, list) and graph == layers
    assert shortcut_depths(graph, 4) == {}
    assert FifoLayer("f", 2, 1, 4, U2).run([[1, 2, 3, 4]]).tolist() == [[1, 2, 3, 4]]


def test_open_steps_read_check_generate_simulate_and_synthesise_a_residual_graph(tmp_path):
    """The open backend's own steps on the specialised residual graph, with its abstract graph as the checkpoint
    check_reference executes: the manifest's layers say what feeds what, the design records its FIFO, the
    simulation is bit-exact at the folding bound, and Yosys and nextpnr synthesise the DAG for the UP5K."""
    from hwq.dataflow.driver import run_steps
    from hwq.dataflow.progress import quiet
    from hwq.dataflow.steps import HW_GRAPH_STEP
    from hwq.rtl.config import OpenBuildConfig
    from hwq.rtl.steps import OpenBuildContext, open_steps, steps_named

    rng = np.random.default_rng(11)
    abstract = finn_residual(rng, specialised=False)
    abstract.save(str(tmp_path / "hw.onnx"))
    model = finn_residual(np.random.default_rng(11), specialised=True)
    config = OpenBuildConfig(board="icebreaker", verify_samples=6)
    images = rng.integers(0, 4, (6, 16))
    ctx = OpenBuildContext.for_steps(tmp_path / "build", config, images, {HW_GRAPH_STEP: tmp_path / "hw.onnx"})
    report = {"steps": []}
    run_steps(steps_named(open_steps(config, xilinx=False), "read_layers", "place_and_route"), model, ctx, report,
              progress=quiet(), save=False)
    assert report["layers"]["add"]["inputs"] == ["r1", "dup.1"] and report["layers"]["dup"]["inputs"] == ["stem"]
    assert report["reference"]["passed"] and report["design"]["fifos"] == {"add_fifo1": 16}
    sim = report["simulation"]
    # the long branch's r0 sets the pace (4 pixels x NF 4 x SF 2), the shortcut costs nothing
    assert sim["bit_exact"] and sim["cycles_per_image"] == sim["folding_bound_cycles"] == 32
    assert report["yosys"]["counts"]["lut"] > 0
    measured = report["measured"]
    assert measured["fmax_mhz"] > 10 and measured["fps"] == pytest.approx(measured["fmax_mhz"] * 1e6 / 32)
