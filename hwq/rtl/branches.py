# SPDX-License-Identifier: BSD-3-Clause
"""Verilog-2005 of the branch blocks: duplicate (a fork), add and concat (joins).

Same conventions as :mod:`hwq.rtl.blocks` (``clk``, synchronous active-high ``rst``, valid/ready streams, element
``i`` of a beat in bits ``[i*W +: W]``); a block with several inputs has ports ``in0_*``, ``in1_*``, ..., one with
several outputs ``out0_*``, ``out1_*``, .... Unlike the compute blocks these stream through without collecting a
vector: each input first passes a skid register (:func:`skid_buffer`: ``in_ready`` comes from a register, so no
combinational path runs from a block's ``out_ready`` back to its ``in_ready``, as in the compute blocks, whose
collectors' ``in_ready`` is registered; the ready paths stay short and a testbench may sample ``in_ready``
before it drives ``out_ready`` in the same cycle), then a beat-width converter (:func:`_rebeat`: nothing when the
producer's beat is the block's, else a buffer of lcm(producer beat, block beat) elements), so a block runs at one
beat a cycle when the widths match.

- Duplicate: one output register per branch; a beat is taken when every branch register is free or being read,
  so a stalled branch stops the fork only once its register is full (the shortcut FIFO, :mod:`hwq.rtl.fifo`,
  keeps that from deadlocking a residual).
- Add: a beat of PE sums when both inputs have a beat and the output register is free; each input element is
  sign- or zero-extended to the output type (FINN's declared width), so the sum is exact.
- Concat: per vector, C_k / SIMD beats of input k in turn (k = 0, 1, ...), each element extended to the output type.

>>> from hwq.rtl.layers import ElemType
>>> from hwq.rtl.layers_branch import DuplicateLayer
>>> duplicate_verilog(DuplicateLayer("dup", 4, 2, 3, ElemType(2, False)), (4,)).splitlines()[0]
'module dup ('
"""

from __future__ import annotations

from math import lcm

from hwq.rtl.blocks import _extend, clog2
from hwq.rtl.layers import ElemType, UnsupportedLayerError
from hwq.rtl.layers_branch import AddLayer, ConcatLayer, DuplicateLayer


def _port_names(prefix: str, n: int) -> list[str]:
    return [prefix] if n == 1 else [f"{prefix}{k}" for k in range(n)]


def multi_ports(name: str, in_widths: list[int], out_widths: list[int]) -> list[str]:
    """Module header with one input stream per ``in_widths`` entry and one output per ``out_widths`` entry:
    ``in_*`` / ``out_*`` when there is one, ``in0_*``, ``in1_*``, ... when there are several."""
    L = [f"module {name} (", "    input wire clk,", "    input wire rst,"]
    for p, w in zip(_port_names("in", len(in_widths)), in_widths):
        L += [f"    input wire [{w - 1}:0] {p}_data,", f"    input wire {p}_valid,", f"    output wire {p}_ready,"]
    outs = list(zip(_port_names("out", len(out_widths)), out_widths))
    for i, (p, w) in enumerate(outs):
        last = i == len(outs) - 1
        L += [f"    output reg [{w - 1}:0] {p}_data,", f"    output reg {p}_valid,",
              f"    input wire {p}_ready" + ("" if last else ",")]
    return L + [");"]


def skid_buffer(prefix: str, src: str, width: int) -> list[str]:
    """Lines taking stream ``src`` (``{src}_data/_valid/_ready``) into ``{prefix}_data`` / ``{prefix}_valid``;
    the caller assigns ``{prefix}_ready``. ``{src}_ready`` is a register's output (the skid register is empty): a
    beat that arrives while the consumer is not ready waits in the skid register, so the stream still moves a beat
    a cycle."""
    K = prefix
    return [f"    // {K}: skid register, so that {src}_ready does not depend on the consumer's ready",
            f"    wire {K}_ready;",
            f"    reg [{width - 1}:0] {K}_skid;",
            f"    reg {K}_held;",
            f"    assign {src}_ready = !{K}_held;",
            f"    wire {K}_valid = {K}_held || {src}_valid;",
            f"    wire [{width - 1}:0] {K}_data = {K}_held ? {K}_skid : {src}_data;",
            "    always @(posedge clk) begin",
            f"        if (rst) {K}_held <= 1'b0;",
            f"        else if (!{K}_held && {src}_valid && !{K}_ready) {K}_held <= 1'b1;",
            f"        else if ({K}_held && {K}_ready) {K}_held <= 1'b0;",
            f"        if (!{K}_held) {K}_skid <= {src}_data;",
            "    end"]


def _rebeat(prefix: str, src: str, in_beat: int, beat: int, bits: int, vector: int, where: str) -> list[str]:
    """Lines converting stream ``src`` (``{src}_data/_valid/_ready``, ``in_beat`` elements of ``bits`` a beat) into
    ``{prefix}_data`` / ``{prefix}_valid`` of ``beat`` elements; the caller assigns ``{prefix}_ready``.
    Both beat widths must divide ``vector`` (so their lcm does, and groups never straddle vectors)."""
    if vector % in_beat or vector % beat:
        raise UnsupportedLayerError(f"{where}: its producer's {in_beat} elements per beat and its own {beat} must "
                                    f"both divide the {vector} elements of a vector")
    P, bw, ow = prefix, in_beat * bits, beat * bits
    if in_beat == beat:
        return [f"    wire {P}_ready;", f"    wire [{ow - 1}:0] {P}_data = {src}_data;",
                f"    wire {P}_valid = {src}_valid;", f"    assign {src}_ready = {P}_ready;"]
    group = lcm(in_beat, beat)
    gi, go = group // in_beat, group // beat
    gw = group * bits
    write = f"{P}_buf <= {src}_data;" if gi == 1 else f"{P}_buf[{P}_ic * {bw} +: {bw}] <= {src}_data;"
    return [f"    // {P}: {in_beat}-element beats -> {beat}-element beats through a buffer of {group} elements",
            f"    wire {P}_ready;",
            f"    reg [{gw - 1}:0] {P}_buf;",
            f"    reg {P}_full;",
            f"    reg [{clog2(gi) - 1}:0] {P}_ic;",
            f"    reg [{clog2(go) - 1}:0] {P}_oc;",
            f"    wire {P}_valid = {P}_full;",
            f"    wire [{ow - 1}:0] {P}_data = " + (f"{P}_buf;" if go == 1 else f"{P}_buf[{P}_oc * {ow} +: {ow}];"),
            f"    wire {P}_drain = {P}_full && {P}_ready && {P}_oc == {go - 1};",
            f"    assign {src}_ready = !{P}_full || {P}_drain;      // refill while the last slice leaves",
            f"    wire {P}_in = {src}_valid && {src}_ready;",
            "    always @(posedge clk) begin",
            f"        if ({P}_in) {write}",
            "        if (rst) begin",
            f"            {P}_full <= 1'b0; {P}_ic <= 0; {P}_oc <= 0;",
            "        end else begin",
            f"            if ({P}_in) {P}_ic <= ({P}_ic == {gi - 1}) ? 0 : {P}_ic + 1'b1;",
            f"            if ({P}_full && {P}_ready) {P}_oc <= ({P}_oc == {go - 1}) ? 0 : {P}_oc + 1'b1;",
            f"            if ({P}_in && {P}_ic == {gi - 1}) {P}_full <= 1'b1;",
            f"            else if ({P}_drain) {P}_full <= 1'b0;",
            "        end",
            "    end"]


def duplicate_verilog(layer: DuplicateLayer, in_beats: tuple[int, ...]) -> str:
    """Verilog of a fork into ``n_outputs`` identical streams of ``pe`` elements a beat."""
    n, w = layer.n_outputs, layer.pe * layer.in_type.bits
    outs = _port_names("out", n)
    L = multi_ports(layer.name, [in_beats[0] * layer.in_type.bits], [w] * n)
    L += [f"    // {layer.name}: {n} copies of {layer.vectors} x {layer.channels} {layer.in_type.bits}-bit elements, "
          f"{layer.pe} a beat; one output register per branch"]
    L += skid_buffer("k", "in", in_beats[0] * layer.in_type.bits)
    L += _rebeat("s", "k", in_beats[0], layer.pe, layer.in_type.bits, layer.channels, layer.name)
    L += ["    assign s_ready = " + " && ".join(f"(!{o}_valid || {o}_ready)" for o in outs) + ";",
          "    wire take = s_valid && s_ready;",
          "    always @(posedge clk) begin",
          "        if (rst) begin"]
    L += [f"            {o}_valid <= 1'b0;" for o in outs]
    L += ["        end else begin"]
    L += [f"            {o}_valid <= take || ({o}_valid && !{o}_ready);" for o in outs]
    L += ["        end"]
    L += [f"        if (take) {o}_data <= s_data;" for o in outs]
    L += ["    end", "endmodule", ""]
    return "\n".join(L)


def add_verilog(layer: AddLayer, in_beats: tuple[int, ...]) -> str:
    """Verilog of the elementwise sum of two streams, ``pe`` sums a beat in ``out_type``."""
    pe, ob = layer.pe, layer.out_type.bits
    a_t, b_t = layer.in_types
    L = multi_ports(layer.name, [in_beats[0] * a_t.bits, in_beats[1] * b_t.bits], [pe * ob])
    L += [f"    // {layer.name}: {layer.vectors} x {layer.channels} sums of a {a_t.bits}-bit and a {b_t.bits}-bit "
          f"element into {ob} bits, {pe} a beat"]
    L += skid_buffer("k0", "in0", in_beats[0] * a_t.bits)
    L += _rebeat("a", "k0", in_beats[0], pe, a_t.bits, layer.channels, layer.name)
    L += skid_buffer("k1", "in1", in_beats[1] * b_t.bits)
    L += _rebeat("b", "k1", in_beats[1], pe, b_t.bits, layer.channels, layer.name)
    L += ["    wire en = !out_valid || out_ready;",
          "    wire fire = a_valid && b_valid && en;",
          "    assign a_ready = b_valid && en;",
          "    assign b_ready = a_valid && en;"]
    sums = []
    for i in range(pe):
        L.append(f"    wire [{ob - 1}:0] sum{i} = {_extend('a_data', i, a_t, ob)} + "
                 f"{_extend('b_data', i, b_t, ob)};")
        sums.append(f"sum{i}")
    L += ["    always @(posedge clk) begin",
          "        if (rst) out_valid <= 1'b0;",
          "        else if (en) out_valid <= fire;",
          f"        if (fire) out_data <= {{{', '.join(reversed(sums))}}};",
          "    end", "endmodule", ""]
    return "\n".join(L)


def concat_verilog(layer: ConcatLayer, in_beats: tuple[int, ...]) -> str:
    """Verilog of a channel concat: per vector, each input's channels in turn, ``simd`` elements a beat."""
    simd, ot = layer.simd, layer.out_type
    n = len(layer.channels)
    L = multi_ports(layer.name, [b * t.bits for b, t in zip(in_beats, layer.in_types)], [simd * ot.bits])
    L += [f"    // {layer.name}: {layer.vectors} vectors of {' + '.join(map(str, layer.channels))} channels into "
          f"{ot.bits}-bit elements, {simd} a beat"]
    for k, (c, t) in enumerate(zip(layer.channels, layer.in_types)):
        if c % simd:
            raise UnsupportedLayerError(f"{layer.name}: SIMD={simd} must divide the {c} channels of input {k}")
        L += skid_buffer(f"k{k}", f"in{k}", in_beats[k] * t.bits)
        L += _rebeat(f"s{k}", f"k{k}", in_beats[k], simd, t.bits, c, layer.name)
        ext = [_extend(f"s{k}_data", i, t, ot.bits) for i in range(simd)]
        L.append(f"    wire [{simd * ot.bits - 1}:0] x{k} = {{{', '.join(reversed(ext))}}};")
    sw, cw = clog2(n), clog2(max(layer.channels) // simd)
    L += [f"    reg [{sw - 1}:0] sel;                  // the input whose channels go out now",
          f"    reg [{cw - 1}:0] cnt;                  // its beat within the vector",
          "    wire en = !out_valid || out_ready;"]
    valid = data = last = None
    for k in reversed(range(n)):      # a multiplexer chain over sel, input 0 last (the innermost default)
        beats = layer.channels[k] // simd
        if valid is None:
            valid, data, last = f"s{k}_valid", f"x{k}", f"{cw}'d{beats - 1}"
        else:
            valid = f"(sel == {sw}'d{k}) ? s{k}_valid : {valid}"
            data = f"(sel == {sw}'d{k}) ? x{k} : {data}"
            last = f"(sel == {sw}'d{k}) ? {cw}'d{beats - 1} : {last}"
    L += [f"    wire cur_valid = {valid};",
          f"    wire [{simd * ot.bits - 1}:0] cur_data = {data};",
          f"    wire [{cw - 1}:0] cur_last = {last};",
          "    wire fire = cur_valid && en;"]
    L += [f"    assign s{k}_ready = sel == {sw}'d{k} && en;" for k in range(n)]
    L += ["    always @(posedge clk) begin",
          "        if (rst) begin",
          "            sel <= 0; cnt <= 0; out_valid <= 1'b0;",
          "        end else begin",
          "            if (en) out_valid <= fire;",
          "            if (fire) begin",
          "                if (cnt == cur_last) begin",
          f"                    cnt <= 0; sel <= (sel == {sw}'d{n - 1}) ? {sw}'d0 : sel + 1'b1;",
          "                end else begin",
          "                    cnt <= cnt + 1'b1;",
          "                end",
          "            end",
          "        end",
          "        if (fire) out_data <= cur_data;",
          "    end", "endmodule", ""]
    return "\n".join(L)
