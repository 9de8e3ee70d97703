# SPDX-License-Identifier: BSD-3-Clause
"""Verilog-2005 of the convolutional stream blocks: the sliding window generator and the max-pool.

Same ports and stream conventions as :mod:`hwq.rtl.blocks` (``clk``, synchronous active-high ``rst``,
``in_*`` / ``out_*`` valid/ready streams, element ``i`` of a beat in bits ``[i*W +: W]``).

Sliding window (a line buffer): the writer assembles each pixel (C elements, from any producer beat width that
divides C) and stores it as one word of a circular RAM of DEPTH pixels, DEPTH a power of two holding
KH + SH image rows. The reader walks the windows in raster order, the pixels of a window in (ky, kx) order, reads
each pixel word once (a synchronous read, so Yosys can map the RAM to block RAM) and sends it as C / SIMD beats of
SIMD channels. Pixel counters are absolute (modulo 2^AW): the reader reads pixel ``ptr`` once it is written
(``wcnt - ptr > 0``), the writer writes while it does not overrun the oldest pixel the reader still needs, the
current window's top left ``tl`` (``wcnt - tl < DEPTH``). Images follow each other without a gap: the writer fills
the next image while the reader finishes the last windows of the current one.

Max-pool: collects one window (window x C elements) with :func:`hwq.rtl.blocks._collector`, then sends C / PE
beats of PE channel maxima while the next window is collected.

>>> from hwq.rtl.layers import ElemType
>>> from hwq.rtl.layers_conv import SlidingWindowLayer
>>> text = sliding_window_verilog(SlidingWindowLayer("swg", (6, 6), 4, (3, 3), (1, 1), 2, ElemType(1, False)), 4)
>>> text.splitlines()[0]
'module swg ('
"""

from __future__ import annotations

from hwq.rtl.blocks import _collector, _ports, clog2
from hwq.rtl.layers import UnsupportedLayerError
from hwq.rtl.layers_conv import PoolLayer, SlidingWindowLayer


def line_buffer_depth(layer: SlidingWindowLayer) -> int:
    """Pixels the circular buffer holds: a power of two of at least KH + SH rows, so that the writer can fill the
    rows of the next row of windows while the reader is still on the current one."""
    (kh, kw), (sh, _), w = layer.kernel, layer.stride, layer.ifm[1]
    return 1 << clog2(max((kh + sh) * w, (kh - 1) * w + kw + 1))


def sliding_window_verilog(layer: SlidingWindowLayer, in_beat: int) -> str:
    """Verilog of one sliding window generator; ``in_beat`` is how many elements the producer sends per beat."""
    c, simd, ib = layer.channels, layer.simd, layer.in_type.bits
    if c % in_beat:
        raise UnsupportedLayerError(f"{layer.name}: its producer's {in_beat} elements per beat do not divide "
                                    f"the {c} channels of a pixel")
    (h, w), (kh, kw), (sh, sw), (oh, ow) = layer.ifm, layer.kernel, layer.stride, layer.ofm
    kin, cf = c // in_beat, c // simd
    bw, pw, ow_bits = in_beat * ib, c * ib, simd * ib
    depth = line_buffer_depth(layer)
    dw = clog2(depth)
    aw = clog2(2 * (h * w + 2 * depth)) + 1          # signed pixel-index differences never wrap
    next_image = h * w - (oh - 1) * sh * w           # from the last row of windows' start to the next image's
    L = _ports(layer.name, bw, ow_bits)
    L += [f"    // {layer.name}: {h}x{w}x{c} image, {kh}x{kw} windows, stride {sh}x{sw} -> {oh}x{ow} windows of "
          f"{kh * kw * c} {ib}-bit elements, {simd} per beat; line buffer {depth} pixels of {pw} bits",
          f"    reg [{pw - 1}:0] mem [0:{depth - 1}];",
          f"    reg [{aw - 1}:0] wcnt, tl, ptr, rowp, orow;",
          f"    wire [{aw - 1}:0] ahead = wcnt - tl;",
          f"    wire [{aw - 1}:0] avail = wcnt - ptr;",
          # writer: assemble a pixel from KIN beats, write it while it does not overrun the window's top left
          f"    assign in_ready = $signed(ahead) < $signed({aw}'d{depth});",
          "    wire wfire = in_valid && in_ready;"]
    if kin == 1:
        L += ["    wire wlast = 1'b1;", "    wire [%d:0] pixel = in_data;" % (pw - 1)]
    else:
        shift = "in_data" if kin == 2 else f"{{in_data, pbuf[{(kin - 1) * bw - 1}:{bw}]}}"
        L += [f"    reg [{clog2(kin) - 1}:0] wbeat;",
              f"    reg [{(kin - 1) * bw - 1}:0] pbuf;",
              f"    wire wlast = wbeat == {kin - 1};",
              f"    wire [{pw - 1}:0] pixel = {{in_data, pbuf}};",
              "    always @(posedge clk) begin",
              "        if (rst) wbeat <= 0;",
              f"        else if (wfire) wbeat <= wlast ? {clog2(kin)}'d0 : wbeat + 1'b1;",
              f"        if (wfire) pbuf <= {shift};",
              "    end"]
    L += ["    always @(posedge clk) if (wfire && wlast) mem[wcnt[%d:0]] <= pixel;" % (dw - 1),
          "    always @(posedge clk) begin",
          "        if (rst) wcnt <= 0;",
          "        else if (wfire && wlast) wcnt <= wcnt + 1'b1;",
          "    end",
          # reader: one pixel word read when it is written and the word register is free (or being emptied)
          "    wire en = !out_valid || out_ready;",
          "    reg pv;",
          f"    reg [{clog2(cf) - 1}:0] cfi;",
          f"    reg [{pw - 1}:0] rdata;",
          f"    wire re = ($signed(avail) > $signed({aw}'d0)) && (!pv || (en && cfi == {cf - 1}));",
          f"    always @(posedge clk) if (re) rdata <= mem[ptr[{dw - 1}:0]];",
          f"    reg [{clog2(kw) - 1}:0] kx;",
          f"    reg [{clog2(kh) - 1}:0] ky;",
          f"    reg [{clog2(ow) - 1}:0] ox;",
          f"    reg [{clog2(oh) - 1}:0] oy;",
          "    always @(posedge clk) begin",
          "        if (rst) begin",
          "            ptr <= 0; rowp <= 0; tl <= 0; orow <= 0; kx <= 0; ky <= 0; ox <= 0; oy <= 0;",
          "        end else if (re) begin",
          f"            if (kx != {kw - 1}) begin",
          "                kx <= kx + 1'b1; ptr <= ptr + 1'b1;",
          "            end else begin",
          "                kx <= 0;",
          f"                if (ky != {kh - 1}) begin           // next row of the window",
          f"                    ky <= ky + 1'b1; ptr <= rowp + {aw}'d{w}; rowp <= rowp + {aw}'d{w};",
          "                end else begin",
          "                    ky <= 0;",
          f"                    if (ox != {ow - 1}) begin       // next window of the row",
          f"                        ox <= ox + 1'b1; tl <= tl + {aw}'d{sw}; rowp <= tl + {aw}'d{sw}; "
          f"ptr <= tl + {aw}'d{sw};",
          "                    end else begin",
          "                        ox <= 0;",
          f"                        if (oy != {oh - 1}) begin   // next row of windows",
          f"                            oy <= oy + 1'b1; orow <= orow + {aw}'d{sh * w}; "
          f"tl <= orow + {aw}'d{sh * w};",
          f"                            rowp <= orow + {aw}'d{sh * w}; ptr <= orow + {aw}'d{sh * w};",
          "                        end else begin              // next image",
          f"                            oy <= 0; orow <= orow + {aw}'d{next_image}; "
          f"tl <= orow + {aw}'d{next_image};",
          f"                            rowp <= orow + {aw}'d{next_image}; ptr <= orow + {aw}'d{next_image};",
          "                        end",
          "                    end",
          "                end",
          "            end",
          "        end",
          "    end",
          # output: the word's CF slices of SIMD channels, channel 0 first
          "    always @(posedge clk) begin",
          "        if (rst) begin",
          "            pv <= 1'b0; cfi <= 0; out_valid <= 1'b0;",
          "        end else begin",
          "            if (en) out_valid <= pv;",
          f"            if (en && pv) cfi <= (cfi == {cf - 1}) ? {clog2(cf)}'d0 : cfi + 1'b1;",
          "            if (re) pv <= 1'b1;",
          f"            else if (en && pv && cfi == {cf - 1}) pv <= 1'b0;",
          "        end",
          "        if (en && pv) out_data <= " + ("rdata;" if cf == 1 else f"rdata[cfi * {ow_bits} +: {ow_bits}];"),
          "    end",
          "endmodule", ""]
    return "\n".join(L)


def window_pool_verilog(layer, in_beat: int, out_bits: int, what: str, reduce) -> str:
    """The frame of a pool over windows from a sliding window generator, ``pe`` channels per cycle, which the
    max-pool and FINN's QuantAvgPool share: collect a window of ``window`` pixels x ``channels``, copy it
    channel-major, and each cycle reduce the ``window`` values of ``pe`` channels. ``reduce(p, xs)`` gets PE lane
    ``p`` and the bus ``xs`` (lane p's value k at element ``p * window + k``, ``in_type`` bits each) and returns
    ``(lines, value)``: the Verilog declaring the lane's result and the expression of its ``out_bits`` bits."""
    c, pe, k2, ib = layer.channels, layer.pe, layer.window, layer.in_type.bits
    vec = k2 * c
    if in_beat < 1 or vec % in_beat:
        raise UnsupportedLayerError(f"{layer.name}: its producer's {in_beat} elements per beat do not divide "
                                    f"a window of {vec} elements")
    steps = c // pe
    L = _ports(layer.name, in_beat * ib, pe * out_bits)
    L += [f"    // {layer.name}: {what} of {k2} pixels x {c} channels ({ib}-bit), {pe} channels per cycle "
          f"({steps} cycles per window)"]
    L += _collector(vec * ib, in_beat * ib)
    # channel-major copy of the window: the k2 values of channel ch sit at (ch * k2 + k), so step s reads one
    # slice of PE * k2 values (a multiplexer; a copy shifted every step mapped to far more LUTs on ECP5)
    perm = [f"vbuf[{(k * c + ch) * ib + ib - 1}:{(k * c + ch) * ib}]" if ib > 1 else f"vbuf[{k * c + ch}]"
            for ch in range(c) for k in range(k2)]
    L += ["    wire en = !out_valid || out_ready;",
          "    reg busy;",
          f"    reg [{vec * ib - 1}:0] xv;",
          f"    wire [{vec * ib - 1}:0] xperm = {{{', '.join(reversed(perm))}}};",
          f"    reg [{clog2(steps) - 1}:0] step;",
          f"    wire [{pe * k2 * ib - 1}:0] xs = "
          + ("xv;" if steps == 1 else f"xv[step * {pe * k2 * ib} +: {pe * k2 * ib}];"),
          f"    wire last = busy && en && step == {steps - 1};",
          "    assign load = vbuf_full && (!busy || last);"]
    outs = []
    for p in range(pe):
        lines, value = reduce(p, "xs")
        L += lines
        outs.append(value)
    L += ["    always @(posedge clk) begin",
          "        if (rst) begin",
          "            busy <= 1'b0; out_valid <= 1'b0; step <= 0;",
          "        end else begin",
          "            if (en) out_valid <= busy;",
          "            if (load) begin",
          "                busy <= 1'b1; step <= 0; xv <= xperm;",
          "            end else if (busy && en) begin",
          "                if (last) busy <= 1'b0;",
          "                step <= step + 1'b1;",
          "            end",
          "        end",
          f"        if (busy && en) out_data <= {{{', '.join(reversed(outs))}}};",
          "    end",
          "endmodule", ""]
    return "\n".join(L)


def max_pool_verilog(layer: PoolLayer, in_beat: int) -> str:
    """Verilog of a max-pool over windows from a sliding window generator, ``pe`` channels per cycle."""
    k2, ib = layer.window, layer.in_type.bits
    sgn = "signed " if layer.in_type.signed else ""

    def maximum(p: int, xs: str) -> tuple[list[str], str]:
        lines = []
        for k in range(k2):
            b = (p * k2 + k) * ib
            lines.append(f"    wire {sgn}[{ib - 1}:0] x{p}_{k} = {xs}[{b + ib - 1}:{b}];")
        lines.append(f"    wire {sgn}[{ib - 1}:0] m{p}_0 = x{p}_0;")
        for k in range(1, k2):
            lines.append(f"    wire {sgn}[{ib - 1}:0] m{p}_{k} = (x{p}_{k} > m{p}_{k - 1}) ? x{p}_{k} : m{p}_{k - 1};")
        return lines, f"m{p}_{k2 - 1}"

    return window_pool_verilog(layer, in_beat, ib, "max", maximum)
