# SPDX-License-Identifier: BSD-3-Clause
"""Verilog-2005 of the stream blocks of :mod:`hwq.rtl.layers_stream`: thresholds, padding, global and windowed
average pools.

Same ports and stream conventions as :mod:`hwq.rtl.blocks` (``clk``, synchronous active-high ``rst``, ``in_*`` /
``out_*`` valid/ready streams, element ``i`` of a beat in bits ``[i*W +: W]``).

Thresholds, padding and the global pool work on the producer's beats as they come (``in_beat`` elements, which
must divide the channels of a pixel): a *source* stage turns each input beat into one beat of the same width
(thresholded values; a beat of the image or an all-zero beat of padding; on a pixel's last visit the channel sums),
and a *re-beat* stage (:func:`_rebeat`) hands them on as beats of the layer's own PE / SIMD. The re-beat stage
collects ``lcm(in, out) / in`` beats into a group and sends it as ``lcm / out`` beats while the next group comes
in, holding one more group when the consumer stalls; its ``in_ready`` is a register, so no ready path runs
combinationally through a block. A block therefore runs at one beat a cycle on its longer stream.

The windowed average (QuantAvgPool) is the max-pool block of :mod:`hwq.rtl.window` with a sum and a shift in
place of the maximum: it collects a window from the sliding window generator, then sends C / PE beats of PE sums.

>>> from hwq.rtl.layers import ElemType
>>> from hwq.rtl.layers_stream import FMPaddingLayer
>>> fm_padding_verilog(FMPaddingLayer("pad", (4, 4), 2, (1, 1, 1, 1), 1, ElemType(1, False)), 2).splitlines()[0]
'module pad ('
"""

from __future__ import annotations

from math import lcm

import numpy as np

from hwq.rtl.blocks import _adder_tree, _element, _extend, _hex, _pack, _ports, clog2
from hwq.rtl.layers import ElemType, UnsupportedLayerError
from hwq.rtl.layers_stream import FMPaddingLayer, GlobalAccPoolLayer, QuantAvgPoolLayer, ThresholdingLayer
from hwq.rtl.window import window_pool_verilog


def _check_beat(layer, in_beat: int, channels: int) -> None:
    if in_beat < 1 or channels % in_beat:
        raise UnsupportedLayerError(f"{layer.name}: its producer's {in_beat} elements per beat do not divide "
                                    f"the {channels} channels of a pixel")


def _rebeat(a: int, b: int, eb: int) -> list[str]:
    """Lines of the re-beat stage: the source's ``s_valid`` / ``s_data`` (``a`` elements of ``eb`` bits) and its
    ``s_ready`` (a register) -> ``out_data`` / ``out_valid`` (``b`` elements a beat) under ``out_ready``."""
    g = lcm(a, b)
    ka, kb = g // a, g // b
    gw, aw, bw = g * eb, a * eb, b * eb
    group = "s_data" if ka == 1 else f"{{s_data, ibuf[{gw - 1}:{aw}]}}"
    return [
        f"    // re-beat: {ka} beat(s) of {a} element(s) -> {kb} beat(s) of {b}, one group of {g} held in reserve",
        f"    reg [{gw - 1}:0] ibuf, obuf;",
        "    reg ifull, ov;",
        f"    reg [{clog2(ka) - 1}:0] ic;",
        f"    reg [{clog2(kb) - 1}:0] oc;",
        "    assign s_ready = !ifull;",
        "    wire s_fire = s_valid && !ifull;",
        f"    wire s_last = ic == {ka - 1};",
        f"    wire [{gw - 1}:0] group = {group};",
        "    wire o_pop = ov && out_ready;",
        f"    wire o_done = o_pop && oc == {kb - 1};",
        "    wire o_free = !ov || o_done;",
        "    always @(posedge clk) begin",
        "        if (rst) begin",
        "            ifull <= 1'b0; ov <= 1'b0; ic <= 0; oc <= 0;",
        "        end else begin",
        f"            if (o_pop) oc <= o_done ? {clog2(kb)}'d0 : oc + 1'b1;",
        f"            if (s_fire) ic <= s_last ? {clog2(ka)}'d0 : ic + 1'b1;",
        "            if (ifull && o_free) begin",
        "                ov <= 1'b1; ifull <= 1'b0;",
        "            end else if (s_fire && s_last) begin",
        "                if (o_free) ov <= 1'b1; else ifull <= 1'b1;",
        "            end else if (o_done) begin",
        "                ov <= 1'b0;",
        "            end",
        "        end",
        "        if (s_fire) ibuf <= group;",
        "        if (ifull && o_free) obuf <= ibuf;",
        "        else if (s_fire && s_last && o_free) obuf <= group;",
        "    end",
        "    always @* out_valid = ov;",
        "    always @* out_data = " + ("obuf;" if kb == 1 else f"obuf[oc * {bw} +: {bw}];"),
    ]


def _counter(name: str, n: int, step: str) -> list[str]:
    """A register counting 0..n-1 (wrapping) on ``step``; ``{name}_wrap`` is high when it wraps."""
    return [f"    reg [{clog2(n) - 1}:0] {name};",
            f"    wire {name}_wrap = {name} == {n - 1};",
            f"    always @(posedge clk) if (rst) {name} <= 0; "
            f"else if ({step}) {name} <= {name}_wrap ? {clog2(n)}'d0 : {name} + 1'b1;"]


# --- thresholds ----------------------------------------------------------------------------------------------------
def _threshold_codes(layer: ThresholdingLayer) -> tuple[np.ndarray, ElemType]:
    """The thresholds clipped to ``lo .. hi + 1`` of the input (below: always met, above: never), which changes
    no output, and the type they are compared in (the input's, one bit wider where ``hi + 1`` needs it)."""
    lo, hi = layer.in_type.lo, layer.in_type.hi
    thr = np.clip(layer.thresholds, lo, hi + 1)
    return thr, ElemType.for_range(lo, hi + 1)


def thresholding_verilog(layer: ThresholdingLayer, in_beat: int) -> str:
    """Verilog of a standalone threshold block; ``in_beat`` is how many elements the producer sends per beat
    (each is compared with all its channel's thresholds in the cycle it arrives)."""
    c, a, ib, ob = layer.channels, in_beat, layer.in_type.bits, layer.out_type.bits
    _check_beat(layer, a, c)
    thr, cmp_t = _threshold_codes(layer)
    n_thr, cw, cf = thr.shape[1], cmp_t.bits, c // a
    sgn = "signed " if cmp_t.signed else ""
    L = _ports(layer.name, a * ib, layer.pe * ob)
    kind = "signed" if layer.in_type.signed else "unsigned"
    L += [f"    // {layer.name}: {layer.vectors} x {c} channels of {ib}-bit {kind} values, {n_thr} threshold(s) "
          f"each, ActVal {layer.act_val}, {ob}-bit outputs"
          f"{' (BIPOLAR as 0/1)' if layer.bipolar else ''}; {a} in, {layer.pe} out per beat",
          "    wire s_ready;",
          "    wire s_valid = in_valid;",
          "    assign in_ready = s_ready;",
          "    wire in_fire = in_valid && s_ready;"]
    per_channel = thr.shape[0] > 1
    if per_channel and cf > 1:   # one ROM word of a x T thresholds per channel block, read as the beat arrives
        L += _counter("cb", cf, "in_fire")
        word_w = a * n_thr * cw
        L += [f"    reg [{word_w - 1}:0] trom [0:{cf - 1}];", "    initial begin"]
        for blk in range(cf):
            vals = [thr[blk * a + i, t] for i in range(a) for t in range(n_thr)]
            L.append(f"        trom[{blk}] = {_hex(_pack(vals, cw), word_w)};")
        L += ["    end", f"    wire [{word_w - 1}:0] tw = trom[cb];"]

    def threshold(i: int, t: int) -> str:
        if not per_channel:
            return _literal(int(thr[0, t]), cw, cmp_t.signed)
        if cf == 1:
            return _literal(int(thr[i, t]), cw, cmp_t.signed)
        b = (i * n_thr + t) * cw
        return f"$signed(tw[{b + cw - 1}:{b}])" if cmp_t.signed else f"tw[{b + cw - 1}:{b}]"

    width = max(ob, clog2(n_thr + 1) + 1)
    outs = []
    for i in range(a):
        L.append(f"    wire {sgn}[{cw - 1}:0] x{i} = {_extend('in_data', i, layer.in_type, cw)};")
        terms = []
        for t in range(n_thr):
            L.append(f"    wire c{i}_{t} = x{i} >= {threshold(i, t)};")
            terms.append((f"{{{width - 1}'d0, c{i}_{t}}}", width))
        tl, total, _ = _adder_tree(f"q{i}", terms, False, width)
        L += tl
        L.append(f"    wire [{width - 1}:0] y{i} = {total} + {width}'d{layer.act_val & ((1 << width) - 1)};")
        outs.append(f"y{i}[{ob - 1}:0]")
    L.append(f"    wire [{a * ob - 1}:0] s_data = {{{', '.join(reversed(outs))}}};")
    L += _rebeat(a, layer.pe, ob)
    L += ["endmodule", ""]
    return "\n".join(L)


def _literal(value: int, bits: int, signed: bool) -> str:
    if signed:
        return f"-{bits}'sd{-value}" if value < 0 else f"{bits}'sd{value}"
    return f"{bits}'d{value}"


# --- padding -------------------------------------------------------------------------------------------------------
def fm_padding_verilog(layer: FMPaddingLayer, in_beat: int) -> str:
    """Verilog of a padding block: walks the padded image's pixels in raster order, ``in_beat`` channels a step,
    taking a beat of the input inside the image and writing an all-zero beat on the border."""
    c, a, ib = layer.channels, in_beat, layer.in_type.bits
    _check_beat(layer, a, c)
    (h, w), (oh, ow) = layer.ifm, layer.ofm
    top, left, _, _ = layer.padding
    L = _ports(layer.name, a * ib, layer.simd * ib)
    L += [f"    // {layer.name}: {h}x{w}x{c} image ({ib}-bit) padded by {list(layer.padding)} (top, left, bottom, "
          f"right) to {oh}x{ow}; pad value 0 (on a 0/1 stream of bipolar values: -1); {a} in, {layer.simd} out "
          f"per beat",
          "    wire s_ready;",
          "    wire step;"]
    L += _counter("ci", c // a, "step")
    L += _counter("ox", ow, "step && ci_wrap")
    L += _counter("oy", oh, "step && ci_wrap && ox_wrap")
    interior = []
    if top:
        interior.append(f"oy >= {top}")
    if top + h < oh:
        interior.append(f"oy < {top + h}")
    if left:
        interior.append(f"ox >= {left}")
    if left + w < ow:
        interior.append(f"ox < {left + w}")
    L += ["    wire interior = " + (" && ".join(interior) if interior else "1'b1") + ";",   # not 'inside' (SV)
          "    wire s_valid = !interior || in_valid;",
          f"    wire [{a * ib - 1}:0] s_data = interior ? in_data : {a * ib}'d0;",
          "    assign in_ready = interior && s_ready;",
          "    assign step = s_valid && s_ready;"]
    L += _rebeat(a, layer.simd, ib)
    L += ["endmodule", ""]
    return "\n".join(L)


# --- global pool ---------------------------------------------------------------------------------------------------
def global_acc_pool_verilog(layer: GlobalAccPoolLayer, in_beat: int) -> str:
    """Verilog of a global sum pool: one accumulator word per block of ``in_beat`` channels (a small RAM),
    added to as the pixels stream in; on the last pixel the sums go out (and the next image starts from 0)."""
    c, a, ib, ob = layer.channels, in_beat, layer.in_type.bits, layer.out_type.bits
    _check_beat(layer, a, c)
    cf, p = c // a, layer.pixels
    L = _ports(layer.name, a * ib, layer.pe * ob)
    L += [f"    // {layer.name}: sum of {p} pixels x {c} channels ({ib}-bit) into {ob}-bit sums; {a} in, "
          f"{layer.pe} out per beat",
          "    wire s_ready;",
          "    wire in_fire;"]
    L += _counter("ci", cf, "in_fire")
    L += _counter("px", p, "in_fire && ci_wrap") if p > 1 else ["    wire px_wrap = 1'b1;"]
    L += [f"    reg [{a * ob - 1}:0] accm [0:{cf - 1}];",
          f"    wire [{a * ob - 1}:0] prev = " + (f"px == 0 ? {a * ob}'d0 : accm[ci];" if p > 1 else f"{a * ob}'d0;")]
    sums = []
    for i in range(a):
        x = _extend("in_data", i, layer.in_type, ob)
        L.append(f"    wire [{ob - 1}:0] sum{i} = {_element('prev', i, ob)} + {x};")
        sums.append(f"sum{i}")
    L += [f"    wire [{a * ob - 1}:0] s_data = {{{', '.join(reversed(sums))}}};",
          "    assign in_ready = !px_wrap || s_ready;",
          "    assign in_fire = in_valid && in_ready;",
          "    wire s_valid = in_valid && px_wrap;",
          "    always @(posedge clk) if (in_fire) accm[ci] <= s_data;"]
    L += _rebeat(a, layer.pe, ob)
    L += ["endmodule", ""]
    return "\n".join(L)


# --- windowed average ----------------------------------------------------------------------------------------------
def quant_avg_pool_verilog(layer: QuantAvgPoolLayer, in_beat: int) -> str:
    """Verilog of FINN's QuantAvgPool over windows from a sliding window generator, ``pe`` channels per cycle:
    the sum of each channel's ``window`` values, shifted right by ``shift`` (arithmetic for signed values); the
    max-pool's frame (:func:`hwq.rtl.window.window_pool_verilog`) with a sum for the maximum."""
    k2, ib, ob = layer.window, layer.in_type.bits, layer.out_type.bits
    sum_t = ElemType.for_range(*layer.sum_range())
    if layer.in_type.signed and not sum_t.signed:
        sum_t = ElemType(sum_t.bits + 1, True)
    sb = max(sum_t.bits, ib)
    sgn = "signed " if layer.in_type.signed else ""

    def average(p: int, xs: str) -> tuple[list[str], str]:
        lines, terms = [], []
        for k in range(k2):
            lines.append(f"    wire {sgn}[{sb - 1}:0] x{p}_{k} = {_extend(xs, p * k2 + k, layer.in_type, sb)};")
            terms.append((f"x{p}_{k}", sb))
        tree, total, _ = _adder_tree(f"s{p}", terms, layer.in_type.signed, sb)
        shifted = f"($signed({total}) >>> {layer.shift})" if layer.in_type.signed else f"({total} >> {layer.shift})"
        return lines + tree + [f"    wire {sgn}[{sb - 1}:0] a{p} = {shifted};"], f"a{p}[{ob - 1}:0]"

    return window_pool_verilog(layer, in_beat, ob, f"sum >> {layer.shift} into {ob} bits", average)
