# SPDX-License-Identifier: BSD-3-Clause
"""FINN's analytical cost formulas as plain Python on integers: no ONNX graph, no FINN import.

Each function restates one method of finn-plus 1.6.1 (``site-packages/finn/custom_op/fpgadataflow/``); the
docstring names the file and method, and the variable names follow FINN's (P = PE, Q = SIMD, W / A = weight /
input bits). ``tests/test_cost_model.py`` compares the results with FINN's own estimates of built models.

>>> mvau_lut(Mvau(mw=64, mh=64, w=2, a=2, a_signed=True, acc=8, out=2), pe=16, simd=16)
3749
"""

from __future__ import annotations

import math
from dataclasses import dataclass

#: ``finn.util.basic.MAX_ALLOWED_AP_INT_W``: the widest HLS stream SetFolding lets a weight stream grow to.
MAX_ALLOWED_AP_INT_W = 8191
#: ``SetFolding(mvau_wwidth_max=36)``, FINN's default: the widest weight slice per PE while SIMD grows.
MVAU_WWIDTH_MAX = 36


def dsp_block(part: str) -> str:
    """``finn.util.basic.get_dsp_block``: DSP58 on Versal, DSP48E1 on 7-series, DSP48E2 otherwise."""
    if part[0:4].lower() in ("xcvc", "xcve", "xcvp", "xcvm", "xqvc", "xqvm") or part[0:5].lower() in ("xqrvc", "xcv80"):
        return "DSP58"
    return "DSP48E1" if part[2] == "7" else "DSP48E2"


#: ``finn.util.basic.get_dsp_datapath_limits``: (activation, weight, accumulator) widths the DSP-based RTL MVU takes.
DSP_LIMITS = {"DSP58": (24, 27, 58), "DSP48E2": (18, 27, 48), "DSP48E1": (18, 25, 48)}


@dataclass(frozen=True)
class Mvau:
    """One matrix-vector-activation unit: an MW x MH weight matrix applied to ``vectors`` input vectors.

    ``w``/``a``: weight and input bit-widths; ``acc``: accumulator bits; ``out``: output bits (thresholds 2^out - 1),
    None without thresholds (the classifier); ``rtl``: FINN specialises it to the DSP-based ``MVAU_rtl``."""

    mw: int
    mh: int
    w: int
    a: int
    a_signed: bool
    acc: int
    out: int | None
    vectors: int = 1
    rtl: bool = False
    #: +-1 weights stored as FINN's INT2 (``w == 2``): one bit of information per weight.
    bipolar_weights: bool = False


def mvau_cycles(layer: Mvau, pe: int, simd: int) -> int:
    """``MVAU.get_exp_cycles`` (matrixvectoractivation.py): (MH / PE) * (MW / SIMD) * vectors."""
    return int((layer.mh / pe) * (layer.mw / simd) * layer.vectors)


def mvau_wmem(layer: Mvau, pe: int, simd: int) -> int:
    """``MVAU.calc_wmem``: the weight memory's depth."""
    return layer.mw * layer.mh // (pe * simd)


def mvau_lut(layer: Mvau, pe: int, simd: int) -> int:
    """``MVAU_hls.lut_estimation`` (hls/matrixvectoractivation_hls.py; FINN-R, Blott et al. 2018) for
    ``mem_mode=internal_decoupled``, ``ram_style=auto``, ``ram_style_thresholds=auto``, ``resType=lut`` (what
    hwq's builds use): ``300 + 1.1 * P * (multipliers + adder tree + accumulator)``; the thresholds' LUTs count
    only for distributed threshold memories (not these). ``MVAU_rtl.lut_estimation`` is 0 (it uses DSPs)."""
    if layer.rtl:
        return 0
    P, Q, W, A = pe, simd, layer.w, layer.a
    c0, c1, c2 = 300, 1.1, 0
    mult_luts = Q * (2 * math.ceil((W + A) / 6) - 1) * (W + A)
    addertree_luts = (W + A) * (2 * Q - 1)
    acc_luts = accumulator_bits(layer)
    return int(c0 + c1 * (P * (mult_luts + addertree_luts + acc_luts)) + c2)


def mvau_distributed_memory_lut(layer: Mvau, pe: int, simd: int) -> int:
    """The LUTs ``MVAU_hls.lut_estimation`` adds when the memories are LUTs (``ram_style=distributed``,
    ``ram_style_thresholds=distributed``): ``c2 = P * Q * W * ceil(WMEM / 64)`` for the weights, and
    ``1.1 * P * (2^B - 1) * acc * (ceil(TMEM / 64) + 1)`` for the thresholds and their comparators."""
    weights = pe * simd * layer.w * math.ceil(mvau_wmem(layer, pe, simd) / 64)
    if layer.out is None:
        return int(weights)
    steps, acc = 2 ** layer.out - 1, accumulator_bits(layer)
    thresholds = steps * acc * math.ceil((layer.mh // pe) / 64) + steps * acc
    return int(weights + 1.1 * pe * thresholds)


def accumulator_bits(layer: Mvau) -> int:
    """The accumulator width ``lut_estimation`` uses: ``min(accDataType, bound)``, FINN's bound
    ``alpha = log2(MW) + W + A - 1 - signed(input)`` (Colbert et al. 2023, arXiv:2301.13376)."""
    alpha = math.log(layer.mw, 2) + layer.w + layer.a - 1 - int(layer.a_signed)
    return int(min(layer.acc, math.ceil(alpha + math.log(1 + pow(2, -alpha), 2) + 1)))


def mvau_bram18(layer: Mvau, pe: int, simd: int) -> int:
    """``MVAU.bram_estimation`` (matrixvectoractivation.py; FINN-R): RAMB18s of the weight memory (depth omega,
    width PE * SIMD * W) in SDP mode, for ``internal_decoupled`` / ``ram_style=auto``."""
    P, Q, W = pe, simd, layer.w
    omega = (layer.mw * layer.mh) / (Q * P)
    mem_width = Q * W * P
    if mem_width == 1:
        return math.ceil(omega / 16384)
    if mem_width == 2:
        return math.ceil(omega / 8192)
    if mem_width <= 4:
        return math.ceil(omega / 4096) * math.ceil(mem_width / 4)
    if mem_width <= 9:
        return math.ceil(omega / 2048) * math.ceil(mem_width / 9)
    if mem_width <= 18 or omega > 512:
        return math.ceil(omega / 1024) * math.ceil(mem_width / 18)
    return math.ceil(omega / 512) * math.ceil(mem_width / 36)


def mvau_dsp(layer: Mvau, pe: int, simd: int, block: str) -> int:
    """``MVAU_rtl.dsp_estimation`` (rtl/matrixvectoractivation_rtl.py); the HLS MVAU with ``resType=lut`` uses 0."""
    if not layer.rtl:
        return 0
    return int(pe * math.ceil(simd / 3)) if block == "DSP58" else int(math.ceil(pe / 4) * simd)


def rtl_mvau_possible(w: int, a: int, a_signed: bool, acc: int, thresholds: bool, block: str) -> bool:
    """``specialize_layers._determine_impl_style`` and ``_mvu_rtl_possible`` for an MVAU with signed, narrow-range
    weights (hwq's weight quantizers): the RTL MVU when there are no thresholds, weights and inputs have at least
    4 bits and fit the DSP datapath."""
    max_act, max_weight, max_acc = DSP_LIMITS[block]
    return (not thresholds and w >= 4 and a >= 4 and (a - int(a_signed)) < max_act and w <= max_weight
            and acc <= max_acc)


@dataclass(frozen=True)
class Window:
    """A sliding-window generator (``ConvolutionInputGenerator_rtl``) of a k x k window with ``stride`` over a
    square ``ifm`` x ``ifm`` map of ``channels`` ``bits``-bit values; ``depthwise`` for a pool's window."""

    channels: int
    ifm: int
    ofm: int
    kernel: int
    stride: int
    bits: int
    depthwise: bool = False


def window_parallel(layer: Window, parallel_window: bool) -> bool:
    """``ConvolutionInputGenerator_rtl.select_impl_style`` == "parallel"."""
    return parallel_window or layer.kernel == 1


def window_buffer_depth(layer: Window, simd: int, parallel_window: bool = False) -> int:
    """``ConvolutionInputGenerator_rtl.get_buffer_depth`` (rtl/convolutioninputgenerator_rtl.py), no dilation."""
    k, w, s, cf = layer.kernel, layer.ifm, layer.stride, layer.channels // simd
    if window_parallel(layer, parallel_window):
        return ((k - 1) * w + (k - 1)) * cf + 1 + 1
    return (((k - 1) * w + (k - 1) + 1) * cf + max(0, ((s - 1) - k * k) * cf)
            + max(0, ((s - 1) * w - k * k) * cf))


def window_cycles(layer: Window, simd: int, parallel_window: bool = False) -> int:
    """``ConvolutionInputGenerator_rtl.get_exp_cycles`` for a 2-D square window, no dilation."""
    k, s, cf = layer.kernel, layer.stride, layer.channels // simd
    if window_parallel(layer, parallel_window):
        return layer.ifm * layer.ifm * cf + 2
    buffer_min_size = ((k - 1) * layer.ifm + (k - 1) + 1) * cf
    max_cycles = max(layer.ofm * k * k * cf, s * layer.ifm * cf)
    if layer.depthwise:
        max_cycles += layer.ofm * (s - 1) * (cf - 1)
    cycles = buffer_min_size + layer.ofm * max_cycles
    if layer.depthwise:
        cycles += (s - 1) * layer.ifm * cf
    return int(cycles)


def window_lut(layer: Window, simd: int, parallel_window: bool = False) -> int:
    """``ConvolutionInputGenerator_rtl.lut_estimation`` with ``ram_style=distributed`` (FINN's default for it):
    ``300 + buffer width * ceil(buffer depth / 38)``; its BRAM estimate is then 0."""
    return 300 + int(simd * layer.bits * math.ceil(window_buffer_depth(layer, simd, parallel_window) / 38))


def pool_cycles(channels: int, kernel: int, ofm: int, pe: int) -> int:
    """``Pool.get_exp_cycles`` (pool.py): (channels * k * k / PE) * output pixels; its resource estimates are 0."""
    return int((channels * kernel * kernel / pe) * ofm * ofm)


def label_select_cycles(labels: int, pe: int) -> int:
    """``LabelSelect.get_exp_cycles`` (labelselect.py): labels / PE; its resource estimates are 0."""
    return int(labels / pe)


def divisors(n: int) -> list[int]:
    """``set_folding.divisors``: 1..n that divide n, ascending."""
    return [x for x in range(1, n + 1) if n % x == 0]
