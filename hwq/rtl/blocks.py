# SPDX-License-Identifier: BSD-3-Clause
"""Verilog-2005 text of one block per layer: an MVAU (XNOR-popcount, integer, adder or binary weight planes) and a
label selector.

An adder MVAU (AdderNet, ``MVAULayer.adder``) is the integer MVAU with ``-|x - w|`` in place of each SIMD lane's
product: a subtraction and a conditional negation, no multiplier; the accumulators and thresholds are the same.
A plane MVAU (``MVAULayer.planes``, :func:`plane_mvau_verilog`) is the integer MVAU with K bipolar dot products
per PE and their sum scaled by a per-channel integer basis in place of the integer products.

Every block has the same ports: ``clk``, ``rst`` (synchronous, active high), an input stream ``in_data`` /
``in_valid`` / ``in_ready`` and an output stream ``out_data`` / ``out_valid`` / ``out_ready``. Element ``i`` of a
beat sits in bits ``[i*W +: W]`` (element 0 in the LSBs). A block first collects a whole input vector (the beats of
its producer, any width that divides it), then computes it in ``cycles`` steps while the next vector is collected.

MVAU pipeline, all stages advancing together while the output register is free or read:
issue (nf, sf counters) -> weight ROM read and input slice -> per-PE adder trees, a register after every
``tree_levels_per_stage`` adder levels (the control signals delayed alongside) -> accumulators -> thresholds into
the output register. Pipelining adds latency, not cycles per image: the stages advance in lock step.

>>> from hwq.rtl.layers import ElemType, LabelSelectLayer
>>> text = label_select_verilog(LabelSelectLayer("ls", 10, 2, ElemType(7, False), ElemType(8, False)), in_beat=5)
>>> text.splitlines()[0]
'module ls ('
"""

from __future__ import annotations

import numpy as np

from hwq.rtl.layers import ElemType, LabelSelectLayer, MVAULayer


def clog2(n: int) -> int:
    """Bits of a counter that counts ``0..n-1`` (at least 1)."""
    return max(1, (n - 1).bit_length())


def _element(word: str, i: int, bits: int) -> str:
    """Element ``i`` (``bits`` wide) of the packed ``word``, element 0 in the LSBs."""
    return f"{word}[{i * bits + bits - 1}:{i * bits}]" if bits > 1 else f"{word}[{i}]"


def _extend(word: str, i: int, t: ElemType, bits: int) -> str:
    """Element ``i`` (of type ``t``) of ``word``, sign- or zero-extended to ``bits`` (>= its width)."""
    expr = _element(word, i, t.bits)
    if bits == t.bits:
        return expr
    if t.signed:
        return f"{{{{{bits - t.bits}{{{word}[{i * t.bits + t.bits - 1}]}}}}, {expr}}}"
    return f"{{{bits - t.bits}'d0, {expr}}}"


def _value(x: str, t: ElemType) -> str:
    """The signed value of the element ``x`` (of type ``t``): itself, zero-extended, or -1/+1 for a bipolar bit."""
    if t.bipolar:
        return f"$signed({{~{x}, 1'b1}})"
    return f"$signed({x})" if t.signed else f"$signed({{1'b0, {x}}})"


def _hex(value: int, bits: int) -> str:
    return f"{bits}'h{value & ((1 << bits) - 1):x}"


def _pack(values, bits: int) -> int:
    word = 0
    for i, v in enumerate(values):
        word |= (int(v) & ((1 << bits) - 1)) << (i * bits)
    return word


def _ports(name: str, in_w: int, out_w: int) -> list[str]:
    return [f"module {name} (",
            "    input wire clk,",
            "    input wire rst,",
            f"    input wire [{in_w - 1}:0] in_data,",
            "    input wire in_valid,",
            "    output wire in_ready,",
            f"    output reg [{out_w - 1}:0] out_data,",
            "    output reg out_valid,",
            "    input wire out_ready",
            ");"]


def _collector(vec_w: int, beat_w: int) -> list[str]:
    """Collect ``vec_w // beat_w`` beats into ``vbuf``; beat 0 ends up in the LSBs."""
    k = vec_w // beat_w
    shift = "in_data" if k == 1 else f"{{in_data, vbuf[{vec_w - 1}:{beat_w}]}}"
    return [
        f"    // input collector: {k} beat(s) of {beat_w} bits -> one {vec_w}-bit vector",
        f"    reg [{vec_w - 1}:0] vbuf;",
        "    reg vbuf_full;",
        f"    reg [{clog2(k) - 1}:0] beat;",
        "    wire load;",
        "    assign in_ready = !vbuf_full;",
        "    always @(posedge clk) begin",
        "        if (rst) begin",
        "            vbuf_full <= 1'b0;",
        "            beat <= 0;",
        "        end else begin",
        "            if (in_valid && !vbuf_full) begin",
        f"                vbuf <= {shift};",
        f"                if (beat == {k - 1}) begin",
        "                    beat <= 0;",
        "                    vbuf_full <= 1'b1;",
        "                end else begin",
        "                    beat <= beat + 1'b1;",
        "                end",
        "            end",
        "            if (load) vbuf_full <= 1'b0;",
        "        end",
        "    end",
    ]


#: Adder levels between pipeline registers in an MVAU's adder trees (0: combinational trees). 2 by measurement
#: (benchmarks/rtl_blocks.md): on the XNOR block one register per level gave no more Fmax than one per two levels
#: (UP5K 65.0 vs 67.2 MHz, ECP5-25F 312 vs 309) for twice the registers; on the MNIST ECP5-85F design with 2 the
#: critical path is the weight ROM's output, no longer the tree.
TREE_LEVELS_PER_STAGE = 2


def tree_levels(n_terms: int) -> int:
    """Adder levels of a pairwise tree over ``n_terms`` terms (``ceil(log2 n)``; 0 for a single term)."""
    return (n_terms - 1).bit_length()


def pipeline_stages(levels: int, every: int) -> int:
    """Registers a chain of ``levels`` adder levels gets with a register after every ``every`` levels (never
    after the last one: the stage that follows already registers the sum)."""
    return (levels - 1) // every if every and levels else 0


def _stage_register(prefix: str, level: list[tuple[str, int]], signed: bool) -> tuple[list[str], list]:
    """Registers (advancing with ``en``) holding every term of ``level``; returns (lines, registered level)."""
    sgn = "signed " if signed else ""
    lines, out = [], []
    for i, (expr, w) in enumerate(level):
        name = f"{prefix}_{i}"
        lines += [f"    reg {sgn}[{w - 1}:0] {name};", f"    always @(posedge clk) if (en) {name} <= {expr};"]
        out.append((name, w))
    return lines, out


def _adder_tree(prefix: str, terms: list[tuple[str, int]], signed: bool, max_w: int, every: int = 0,
                levels_before: int = 0, levels_after: int = 0) -> tuple[list[str], str, int]:
    """Wires summing ``terms`` (expression, width) pairwise, level by level, with a register stage after every
    ``every`` levels (0: none); returns (lines, name of the sum, register stages).

    ``levels_before`` / ``levels_after`` count the logic levels around the tree (a multiplier before, a
    subtraction after) so that registers also split them; trees with the same term count and surroundings get
    the same number of stages, so parallel trees stay aligned.
    """
    lines, level, n = [], list(terms), 0
    total = levels_before + tree_levels(len(terms)) + levels_after
    done, stages = levels_before, 0
    sgn = "signed " if signed else ""

    def register_if_due(level):
        nonlocal stages
        if every and done and done % every == 0 and done < total:
            regs, level = _stage_register(f"{prefix}_r{stages}", level, signed)
            lines.extend(regs)
            stages += 1
        return level

    level = register_if_due(level)
    while len(level) > 1:
        nxt = []
        for i in range(0, len(level) - 1, 2):
            (a, wa), (b, wb) = level[i], level[i + 1]
            w = min(max(wa, wb) + 1, max_w)
            name = f"{prefix}_{n}"
            n += 1
            lines.append(f"    wire {sgn}[{w - 1}:0] {name} = {a} + {b};")
            nxt.append((name, w))
        if len(level) % 2:
            nxt.append(level[-1])
        done += 1
        level = register_if_due(nxt)
    # aligned with mvau_pipeline_stages (the levels before this tree registered where they were computed)
    assert levels_after > 1 or stages == pipeline_stages(total, every) - pipeline_stages(levels_before, every)
    return lines, level[0][0], stages


def _delay_line(signals: list[tuple[str, int]], stages: int, reset: set[str]) -> tuple[list[str], dict[str, str]]:
    """``stages`` registers per signal (advancing with ``en``; those in ``reset`` clear on ``rst``); returns
    (lines, signal -> its delayed name)."""
    lines, now = [], {s: s for s, _ in signals}
    for d in range(1, stages + 1):
        for s, w in signals:
            name = f"{s}_d{d}"
            lines.append(f"    reg [{w - 1}:0] {name};" if w > 1 else f"    reg {name};")
            if s in reset:
                lines.append(f"    always @(posedge clk) if (rst) {name} <= 1'b0; else if (en) {name} <= {now[s]};")
            else:
                lines.append(f"    always @(posedge clk) if (en) {name} <= {now[s]};")
            now[s] = name
    return lines, now


def mvau_pipeline_stages(layer: MVAULayer, every: int = TREE_LEVELS_PER_STAGE) -> int:
    """Register stages the adder trees of ``layer``'s block get (its latency over the combinational block)."""
    if layer.planes is not None:   # the dots' trees, then the scaled sums' (plane_mvau_verilog)
        return pipeline_stages(sum(_plane_levels(layer)), every)
    _, levels_before, levels_after = _tree_shape(layer)
    return pipeline_stages(levels_before + tree_levels(layer.simd) + levels_after, every)


def _tree_shape(layer: MVAULayer) -> tuple[bool, int, int]:
    """(+-1 weights?, logic levels before the tree, after it): integer products count as a level, and the
    +-1 weights' ``2 * masked - sum`` subtraction as one after; XNOR and masking fold into the first adder's LUTs."""
    wb, _ = _weight_code(layer)
    bipolar_w = not layer.xnor and not layer.adder and wb == 1
    return bipolar_w, int(not layer.xnor and not bipolar_w), int(bipolar_w)


def _weight_code(layer: MVAULayer) -> tuple[int, np.ndarray]:
    """Bits per stored weight and the stored codes: XNOR bits, one bit for +-1 weights (1 = +1), else INTn."""
    w = layer.weights
    if layer.xnor:
        return 1, w
    if layer.adder:  # always signed codes, read with $signed: the subtraction is signed
        return ElemType.for_range(min(int(w.min()), -1), max(int(w.max()), 0)).bits, w
    if np.all(np.abs(w) == 1):
        return 1, (w > 0).astype(np.int64)
    return ElemType.for_range(min(int(w.min()), 0), max(int(w.max()), 0)).bits, w


def _acc_type(layer: MVAULayer, signed: bool) -> tuple[ElemType, int, int]:
    """The accumulator type (signed when ``signed`` or its range needs it) and the exact range it holds."""
    lo, hi = layer.acc_range()
    acc_t = ElemType.for_range(lo, hi)
    if signed and not acc_t.signed:
        acc_t = ElemType(acc_t.bits + 1, True)
    return acc_t, lo, hi


def _mvau_front(layer: MVAULayer, in_beat: int, wb: int, codes: np.ndarray, summary: str) -> list[str]:
    """Ports, input collector, issue stage and weight ROM of an MVAU block, up to the registered ROM word
    ``s1_w`` (``wb`` bits per weight, PE x SIMD ``codes`` per word, PE-major), input slice ``s1_x`` and the
    control signals ``s1_*``. ``summary`` goes into the block's header comment."""
    pe, simd, nf, sf = layer.pe, layer.simd, layer.nf, layer.sf
    ib = layer.in_type.bits
    L = _ports(layer.name, in_beat * ib, pe * layer.out_type.bits)
    L += [f"    // {layer.name}: MW={layer.mw} MH={layer.mh} PE={pe} SIMD={simd} NF={nf} SF={sf} {summary}"]
    L += _collector(layer.mw * ib, in_beat * ib)
    # issue stage
    L += ["    wire en = !out_valid || out_ready;",
          "    reg busy;",
          f"    reg [{layer.mw * ib - 1}:0] xv;",
          f"    reg [{clog2(nf) - 1}:0] nf_i;",
          f"    reg [{clog2(sf) - 1}:0] sf_i;",
          f"    reg [{clog2(nf * sf) - 1}:0] addr;",
          "    wire issue = busy && en;",
          f"    wire issue_last = issue && nf_i == {nf - 1} && sf_i == {sf - 1};",
          "    assign load = vbuf_full && (!busy || issue_last);",
          "    always @(posedge clk) begin",
          "        if (rst) begin",
          "            busy <= 1'b0; nf_i <= 0; sf_i <= 0; addr <= 0;",
          "        end else begin",
          "            if (issue) begin",
          f"                addr <= (addr == {nf * sf - 1}) ? 0 : addr + 1'b1;",
          f"                if (sf_i == {sf - 1}) begin",
          "                    sf_i <= 0;",
          f"                    nf_i <= (nf_i == {nf - 1}) ? 0 : nf_i + 1'b1;",
          "                end else begin",
          "                    sf_i <= sf_i + 1'b1;",
          "                end",
          "            end",
          "            if (load) busy <= 1'b1;",
          "            else if (issue_last) busy <= 1'b0;",
          "        end",
          "        if (load) xv <= vbuf;",
          "    end"]
    # weight ROM: word (nf, sf) holds PE x SIMD codes, PE-major
    word_w = pe * simd * wb
    L += [f"    reg [{word_w - 1}:0] wrom [0:{nf * sf - 1}];", "    initial begin"]
    for n in range(nf):
        for s in range(sf):
            vals = [codes[s * simd + i, n * pe + p] for p in range(pe) for i in range(simd)]
            L.append(f"        wrom[{n * sf + s}] = {_hex(_pack(vals, wb), word_w)};")
    L += ["    end",
          f"    reg [{word_w - 1}:0] s1_w;",
          "    always @(posedge clk) if (en) s1_w <= wrom[addr];",
          f"    reg [{simd * ib - 1}:0] s1_x;",
          f"    reg [{clog2(nf) - 1}:0] s1_nf;",
          "    reg s1_v, s1_first, s1_last;",
          "    always @(posedge clk) begin",
          "        if (rst) s1_v <= 1'b0; else if (en) s1_v <= busy;",
          "        if (en) begin",
          "            s1_x <= " + ("xv;" if sf == 1 else f"xv[sf_i * {simd * ib} +: {simd * ib}];"),
          "            s1_nf <= nf_i; s1_first <= sf_i == 0; s1_last <= sf_i == " + f"{sf - 1};",
          "        end",
          "    end"]
    return L


def _control_delay(nf: int, stages: int) -> tuple[list[str], dict[str, str]]:
    """The control signals travelling with the sums through the trees' ``stages`` register stages."""
    return _delay_line([("s1_v", 1), ("s1_first", 1), ("s1_last", 1), ("s1_nf", clog2(nf))], stages, {"s1_v"})


def _bipolar_dots(layer: MVAULayer, ab: int, every: int, dots: list[tuple[str, str, object]]) -> list[str]:
    """The dot products of the input slice ``s1_x`` with +-1 weights, one ``ab``-bit signed wire per entry of
    ``dots``: (wire name, tree tag, ``bit(i)`` -> the expression of lane ``i``'s weight bit, 1 for +1).

    Bipolar inputs (bits for -1/+1): XNOR-popcount, ``dot = 2 * #{x == w} - SIMD``. Other inputs:
    ``dot = 2 * (sum of x where w = +1) - (sum of all x)``, the second sum shared by every dot (exact modulo 2^AB,
    and the accumulator's range fits AB bits). Either way: no multiplier, and one subtraction after the tree
    (its logic levels: :func:`_tree_shape`)."""
    simd, ib, in_t = layer.simd, layer.in_type.bits, layer.in_type
    lanes = [_element("s1_x", i, ib) for i in range(simd)]
    L = []
    if in_t.bipolar:
        for name, tag, bit in dots:
            terms = [(f"{{{lanes[i]} ~^ {bit(i)}}}", 1) for i in range(simd)]
            tl, total, _ = _adder_tree(f"t{tag}", terms, False, ab, every, 0, 1)
            L += tl
            L.append(f"    wire signed [{ab - 1}:0] {name} = ($signed({{1'b0, {total}}}) <<< 1) - {ab}'sd{simd};")
        return L
    xs_names = []
    for i in range(simd):
        L.append(f"    wire signed [{ab - 1}:0] xs{i} = {_value(lanes[i], in_t)};")
        xs_names.append((f"xs{i}", ab))
    tl, xsum, _ = _adder_tree("xsum", xs_names, True, ab, every, 0, 1)
    L += tl
    for name, tag, bit in dots:
        terms = []
        for i in range(simd):
            m = f"m{tag}_{i}"
            if in_t.signed_value:
                L.append(f"    wire signed [{ab - 1}:0] {m} = {bit(i)} ? xs{i} : {ab}'sd0;")
                terms.append((m, ab))
            else:  # unsigned pixels: the masked sum grows from IB bits, no sign bits to add
                L.append(f"    wire [{ib - 1}:0] {m} = {bit(i)} ? {lanes[i]} : {ib}'d0;")
                terms.append((m, ib))
        tl, total, _ = _adder_tree(f"t{tag}", terms, in_t.signed_value, ab, every, 0, 1)
        L += tl
        masked = total if in_t.signed_value else f"$signed({{1'b0, {total}}})"
        L.append(f"    wire signed [{ab - 1}:0] {name} = ({masked} <<< 1) - {xsum};")
    return L


def _mvau_back(layer: MVAULayer, ctl: dict[str, str], signed: bool, acc_t: ElemType, lo: int, hi: int) -> list[str]:
    """Thresholds ROM, accumulators and output register of an MVAU block, from the per-PE sums ``dot{p}``
    (``acc_t`` wide) and the delayed control signals ``ctl``; ends the module."""
    pe, nf, ob, ab = layer.pe, layer.nf, layer.out_type.bits, acc_t.bits
    sgn = "signed " if signed else ""
    L = []
    # thresholds ROM (per nf: PE x T values) read alongside the sums
    thr = layer.thresholds
    nthr = 0 if thr is None else thr.shape[1]
    if nthr:
        tl_ = np.clip(thr, lo, hi + 1)
        full = np.broadcast_to(tl_, (layer.mh, nthr))
        tw = ElemType.for_range(min(lo, int(full.min())), max(hi + 1, int(full.max()))).bits
        tw = max(tw, ab)
        if signed or full.min() < 0:
            tw = max(tw, ElemType.for_range(min(lo, int(full.min()), -1), max(hi + 1, int(full.max()))).bits)
        tword = pe * nthr * tw
        L += [f"    reg [{tword - 1}:0] trom [0:{nf - 1}];", "    initial begin"]
        for n in range(nf):
            vals = [full[n * pe + p, t] for p in range(pe) for t in range(nthr)]
            L.append(f"        trom[{n}] = {_hex(_pack(vals, tw), tword)};")
        L += ["    end", f"    reg [{tword - 1}:0] s2_t, s3_t;",
              f"    always @(posedge clk) if (en) s2_t <= trom[{ctl['s1_nf']}];"]
    L += ["    reg s2_v, s2_first, s2_last, s3_v;"]
    for p in range(pe):
        L.append(f"    reg {sgn}[{ab - 1}:0] s2_p{p}, acc{p};")
    L += ["    always @(posedge clk) begin",
          "        if (rst) begin s2_v <= 1'b0; s3_v <= 1'b0; end",
          f"        else if (en) begin s2_v <= {ctl['s1_v']}; s3_v <= s2_v && s2_last; end",
          "        if (en) begin",
          f"            s2_first <= {ctl['s1_first']}; s2_last <= {ctl['s1_last']};"]
    L += [f"            s2_p{p} <= dot{p};" for p in range(pe)]
    L += ["            if (s2_v) begin"]
    L += [f"                acc{p} <= (s2_first ? {ab}'d0 : acc{p}) + s2_p{p};" for p in range(pe)]
    if nthr:
        L.append("                s3_t <= s2_t;")
    L += ["            end", "        end", "    end"]
    # output register: thresholds (count of acc >= t, plus ActVal) or the accumulator itself
    outs = []
    for p in range(pe):
        if nthr:
            cmp = []
            for t in range(nthr):
                b = (p * nthr + t) * tw
                tv = f"$signed(s3_t[{b + tw - 1}:{b}])" if signed else f"s3_t[{b + tw - 1}:{b}]"
                av = f"acc{p}" if signed or tw == ab else f"{{{tw - ab}'d0, acc{p}}}"
                if signed and tw > ab:
                    av = f"$signed({{{{{tw - ab}{{acc{p}[{ab - 1}]}}}}, acc{p}}})"
                L.append(f"    wire c{p}_{t} = {av} >= {tv};")
                cmp.append((f"c{p}_{t}", 1))
            cw = max(ob, clog2(nthr + 1) + 1)
            tl, total, _ = _adder_tree(f"q{p}", [(f"{{{cw - 1}'d0, {c}}}" if cw > 1 else c, cw) for c, _ in cmp],
                                    False, cw)
            L += tl
            bias = layer.act_val & ((1 << cw) - 1)
            L.append(f"    wire [{cw - 1}:0] o{p} = {total} + {cw}'d{bias};")
            outs.append(f"o{p}[{ob - 1}:0]")
        else:
            outs.append(f"acc{p}[{ob - 1}:0]" if ob <= ab else
                        (f"{{{{{ob - ab}{{acc{p}[{ab - 1}]}}}}, acc{p}}}" if signed else f"{{{ob - ab}'d0, acc{p}}}"))
    L += ["    always @(posedge clk) begin",
          "        if (rst) out_valid <= 1'b0;",
          "        else if (en) out_valid <= s3_v;",
          f"        if (en) out_data <= {{{', '.join(reversed(outs))}}};",
          "    end",
          "endmodule", ""]
    return L


def mvau_verilog(layer: MVAULayer, in_beat: int, tree_levels_per_stage: int = TREE_LEVELS_PER_STAGE) -> str:
    """Verilog of one MVAU block; ``in_beat`` is how many elements the producer sends per beat, and the adder
    trees get a register after every ``tree_levels_per_stage`` levels (0: combinational). A layer in its plane
    form (``layer.planes``) gets :func:`plane_mvau_verilog`'s block."""
    if layer.planes is not None:
        return plane_mvau_verilog(layer, in_beat, tree_levels_per_stage)
    pe, simd = layer.pe, layer.simd
    ib = layer.in_type.bits
    wb, codes = _weight_code(layer)
    bipolar_w, before, after = _tree_shape(layer)
    every = tree_levels_per_stage
    stages = mvau_pipeline_stages(layer, every)
    acc_t, lo, hi = _acc_type(layer, layer.adder or (not layer.xnor and (layer.in_type.signed_value or wb > 1)))
    signed = acc_t.signed
    ab = acc_t.bits
    sgn = "signed " if signed else ""
    kind = 'XNOR-popcount' if layer.xnor else 'adder' if layer.adder else 'integer'
    L = _mvau_front(layer, in_beat, wb, codes, f"{kind} MVAU, {ib}-bit inputs, {ab}-bit accumulators, "
                                               f"{stages} adder-tree register stage(s)")
    # per-PE adder trees over SIMD products
    if bipolar_w:
        L += _bipolar_dots(layer, ab, every, [(f"dot{p}", str(p), lambda i, p=p: f"s1_w[{p * simd + i}]")
                                              for p in range(pe)])
    for p in range(pe if not bipolar_w else 0):
        terms = []
        for i in range(simd):
            x = _element("s1_x", i, ib)
            wbit = (p * simd + i) * wb
            w = f"s1_w[{wbit + wb - 1}:{wbit}]" if wb > 1 else f"s1_w[{wbit}]"
            if layer.xnor:
                terms.append((f"{{{x} ~^ {w}}}", 1))
                continue
            xs = _value(x, layer.in_type)
            name = f"m{p}_{i}"
            if layer.adder:  # -|x - w|: the difference if negative, else its negation
                dw = max(ib + 1, wb) + 1
                L.append(f"    wire signed [{dw - 1}:0] d{p}_{i} = {xs} - $signed({w});")
                L.append(f"    wire signed [{ab - 1}:0] {name} = d{p}_{i}[{dw - 1}] ? d{p}_{i} : -d{p}_{i};")
            else:
                L.append(f"    wire signed [{ab - 1}:0] {name} = {xs} * $signed({w});")
            terms.append((name, ab))
        tl, total, _ = _adder_tree(f"t{p}", terms, signed, ab, every, before, after)
        L += tl
        L.append(f"    wire {sgn}[{ab - 1}:0] dot{p} = {total};")
    dl, ctl = _control_delay(layer.nf, stages)
    L += dl
    L += _mvau_back(layer, ctl, signed, acc_t, lo, hi)
    return "\n".join(L)


# --- the plane form ------------------------------------------------------------------------------------------------
def _plane_scale_terms(layer: MVAULayer) -> tuple[list[list[tuple[int, int, int | None]]], int]:
    """Per PE, the terms of its scaled sum ``sum_k basis_k * dot_k``, as shifts of the plane dots: (plane k, shift
    t, None) where bit t of the basis is 1 for every channel the PE computes (a constant shift), (k, t, r) where it
    varies with the channel (masked by bit r of the basis ROM word); bits that are 0 everywhere are left out.
    Returns (terms per PE, basis ROM bits per word)."""
    basis, pe, nf = layer.plane_basis, layer.pe, layer.nf
    bits = max(1, int(basis.max()).bit_length())
    per_pe, rom_bits = [], 0
    for p in range(pe):
        terms = []
        for k in range(basis.shape[1]):
            for t in range(bits):
                bit = (basis[[n * pe + p for n in range(nf)], k] >> t) & 1
                if bit.all():
                    terms.append((k, t, None))
                elif bit.any():
                    terms.append((k, t, rom_bits))
                    rom_bits += 1
        per_pe.append(terms)
    return per_pe, rom_bits


def _plane_levels(layer: MVAULayer) -> tuple[int, int]:
    """Logic levels of a plane block: (dot: adder tree + subtraction, scaled sum: adder levels over the most
    terms any PE has; every PE's sum gets that many, padded with zeros, so the PEs stay aligned)."""
    per_pe, _ = _plane_scale_terms(layer)
    return tree_levels(layer.simd) + 1, tree_levels(max(1, max(map(len, per_pe))))


def plane_mvau_verilog(layer: MVAULayer, in_beat: int, tree_levels_per_stage: int = TREE_LEVELS_PER_STAGE) -> str:
    """Verilog of an MVAU in its plane form (``layer.planes``, ``layer.plane_basis``; :mod:`hwq.rtl.planes`).

    The weight ROM holds K bits per weight (bit k: plane k, 1 for +1) instead of an integer. Per PE and plane a
    bipolar dot product (:func:`_bipolar_dots`: add/subtract, or XNOR-popcount on a bipolar stream), then the
    scaled sum over planes, ``sum_k basis[c, k] * dot_k``, as shifts and adds of the dots: a basis bit that is the
    same for every channel ``c`` the PE computes is a fixed shift, one that varies is masked by a bit of a small
    basis ROM read per output group (NF). No multiplier. Accumulators, thresholds, folding, stream interface and
    pipelining (a register after every ``tree_levels_per_stage`` levels across both trees) are the integer MVAU's.
    """
    pe, simd, nf = layer.pe, layer.simd, layer.nf
    k_planes = layer.planes.shape[0]
    every = tree_levels_per_stage
    stages = mvau_pipeline_stages(layer, every)
    acc_t, lo, hi = _acc_type(layer, True)
    acc_t = ElemType(max(acc_t.bits, simd.bit_length() + 1), True)   # also holds the popcount's -SIMD
    ab = acc_t.bits
    codes = sum(layer.planes[k].astype(np.int64) << k for k in range(k_planes))
    L = _mvau_front(layer, in_beat, k_planes, codes,
                    f"plane MVAU: {k_planes} binary weight planes, {layer.in_type.bits}-bit inputs, {ab}-bit "
                    f"accumulators, {stages} adder-tree register stage(s)")
    L += _bipolar_dots(layer, ab, every, [(f"dot{p}_{k}", f"{p}_{k}",
                                           lambda i, p=p, k=k: f"s1_w[{(p * simd + i) * k_planes + k}]")
                                          for p in range(pe) for k in range(k_planes)])
    dot_levels, _ = _plane_levels(layer)
    dl, ctl = _control_delay(nf, stages)
    L += dl
    per_pe, rom_bits = _plane_scale_terms(layer)
    if rom_bits:   # the varying basis bits of every PE, per output group, read with the dots' delayed NF
        nf_at_dots = _delayed("s1_nf", pipeline_stages(dot_levels, every))
        L += [f"    reg [{rom_bits - 1}:0] brom [0:{nf - 1}];", "    initial begin"]
        for n in range(nf):
            word = 0
            for p, terms in enumerate(per_pe):
                for k, t, r in terms:
                    if r is not None:
                        word |= ((int(layer.plane_basis[n * pe + p, k]) >> t) & 1) << r
            L.append(f"        brom[{n}] = {_hex(word, rom_bits)};")
        L += ["    end", f"    wire [{rom_bits - 1}:0] bsel = brom[{nf_at_dots}];"]
    width = max(1, max(map(len, per_pe)))
    for p, terms in enumerate(per_pe):
        exprs = []
        for k, t, r in terms:
            shifted = f"dot{p}_{k}" if t == 0 else f"(dot{p}_{k} <<< {t})"
            exprs.append((shifted if r is None else f"(bsel[{r}] ? {shifted} : {ab}'sd0)", ab))
        exprs += [(f"{ab}'sd0", ab)] * (width - len(exprs))      # pad: every PE's tree has the same depth
        tl, total, _ = _adder_tree(f"sc{p}", exprs, True, ab, every, levels_before=dot_levels)
        L += tl
        L.append(f"    wire signed [{ab - 1}:0] dot{p} = {total};")
    L += _mvau_back(layer, ctl, True, acc_t, lo, hi)
    return "\n".join(L)


def _delayed(signal: str, stages: int) -> str:
    """The name :func:`_delay_line` gives ``signal`` after ``stages`` registers."""
    return signal if stages == 0 else f"{signal}_d{stages}"


def label_select_verilog(layer: LabelSelectLayer, in_beat: int) -> str:
    """Verilog of a top-1 label selector comparing ``pe`` values per cycle; ties keep the lower index."""
    ib, ob, pe, n = layer.in_type.bits, layer.out_type.bits, layer.pe, layer.labels
    steps = -(-n // pe)
    iw = max(clog2(n + 1), 1)
    sgn = "signed " if layer.in_type.signed else ""
    lowest = _hex(layer.in_type.lo, ib)
    L = _ports(layer.name, in_beat * ib, ob)
    L += [f"    // {layer.name}: top-1 of {n} {ib}-bit values, {pe} per cycle ({steps} cycles)"]
    L += _collector(n * ib, in_beat * ib)
    pad = steps * pe - n
    L += ["    wire en = !out_valid || out_ready;",
          "    reg busy;",
          f"    reg [{steps * pe * ib - 1}:0] xv;",
          f"    reg [{clog2(steps) - 1}:0] step;",
          f"    reg [{iw - 1}:0] base;",
          f"    reg {sgn}[{ib - 1}:0] best;",
          f"    reg [{iw - 1}:0] best_i;",
          f"    wire last = busy && en && step == {steps - 1};",
          "    assign load = vbuf_full && (!busy || last);",
          f"    wire {sgn}[{ib - 1}:0] b_0 = best;",
          f"    wire [{iw - 1}:0] i_0 = best_i;"]
    for p in range(pe):
        e = f"e_{p}"
        L += [f"    wire {sgn}[{ib - 1}:0] {e} = xv[{p * ib + ib - 1}:{p * ib}];",
              f"    wire take_{p} = (base + {p} < {n}) && ({e} > b_{p});",
              f"    wire {sgn}[{ib - 1}:0] b_{p + 1} = take_{p} ? {e} : b_{p};",
              f"    wire [{iw - 1}:0] i_{p + 1} = take_{p} ? base + {iw}'d{p} : i_{p};"]
    padded = "vbuf" if pad == 0 else f"{{{pad * ib}'d0, vbuf}}"
    L += ["    always @(posedge clk) begin",
          "        if (rst) begin",
          "            busy <= 1'b0; out_valid <= 1'b0; step <= 0;",
          "        end else begin",
          "            if (en) out_valid <= last;",
          "            if (load) begin",
          f"                busy <= 1'b1; step <= 0; base <= 0; xv <= {padded};",
          f"                best <= {lowest}; best_i <= 0;",
          "            end else if (busy && en) begin",
          "                if (last) busy <= 1'b0;",
          "                step <= step + 1'b1;",
          f"                base <= base + {iw}'d{pe};",
          f"                xv <= xv >> {pe * ib};",
          f"                best <= b_{pe}; best_i <= i_{pe};",
          "            end",
          "        end",
          f"        if (last) out_data <= {{{{{max(ob - iw, 0)}{{1'b0}}}}, i_{pe}}};" if ob > iw else
          f"        if (last) out_data <= i_{pe}[{ob - 1}:0];",
          "    end",
          "endmodule", ""]
    return "\n".join(L)
