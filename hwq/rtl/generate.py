# SPDX-License-Identifier: BSD-3-Clause
"""Generate the Verilog-2005 accelerator of a folded HW-layer graph: one block per layer and a top level.

The top level ``<top>`` chains the blocks with valid/ready streams and exposes AXI-stream-style ports:
``s_axis_tdata`` (the first layer's SIMD input elements per beat, element 0 in the LSBs), ``s_axis_tvalid`` /
``s_axis_tready``, ``m_axis_tdata`` / ``m_axis_tvalid`` / ``m_axis_tready`` (the last layer's output beats; the class
index for a graph that ends in LabelSelect). ``rst`` is synchronous and active high.

>>> from hwq.rtl.generate import generate_verilog                          # doctest: +SKIP
>>> design = generate_verilog(layers, "build-rtl-tmp/tfc", top="tfc")      # doctest: +SKIP
>>> design.in_beat, design.cycles_bound                                     # doctest: +SKIP
(16, 8)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from hwq.rtl.blocks import TREE_LEVELS_PER_STAGE, label_select_verilog, mvau_verilog
from hwq.rtl.blocks_stream import (fm_padding_verilog, global_acc_pool_verilog, quant_avg_pool_verilog,
                                   thresholding_verilog)
from hwq.rtl.layers import LabelSelectLayer, MVAULayer, UnsupportedLayerError
from hwq.rtl.layers_conv import PoolLayer, SlidingWindowLayer
from hwq.rtl.layers_stream import FMPaddingLayer, GlobalAccPoolLayer, QuantAvgPoolLayer, ThresholdingLayer
from hwq.rtl.window import max_pool_verilog, sliding_window_verilog


@dataclass(frozen=True)
class Design:
    """A generated accelerator: its files and the facts a testbench or synthesis run needs."""

    top: str
    files: list[Path]
    #: Elements per input beat and bits per input element.
    in_beat: int
    in_bits: int
    in_signed: bool
    #: Input beats per image.
    in_beats: int
    #: Elements per output beat, bits per output element, output beats per image.
    out_beat: int
    out_bits: int
    out_signed: bool
    out_beats: int
    #: The folding bound: the slowest layer's cycles per image.
    cycles_bound: int
    layer_cycles: dict[str, int] = field(default_factory=dict)
    #: Adder levels between the MVAU trees' pipeline registers (0: combinational); see hwq.rtl.blocks.
    tree_levels_per_stage: int = TREE_LEVELS_PER_STAGE

    def to_dict(self) -> dict:
        return {k: (str(v) if k == "top" else [str(f) for f in v] if k == "files" else v)
                for k, v in vars(self).items()}


def _block(layer, in_beat: int, tree_levels_per_stage: int = TREE_LEVELS_PER_STAGE) -> str:
    if isinstance(layer, MVAULayer):
        return mvau_verilog(layer, in_beat, tree_levels_per_stage)
    if isinstance(layer, LabelSelectLayer):
        return label_select_verilog(layer, in_beat)
    if isinstance(layer, SlidingWindowLayer):
        return sliding_window_verilog(layer, in_beat)
    if isinstance(layer, PoolLayer):
        return max_pool_verilog(layer, in_beat)
    if isinstance(layer, ThresholdingLayer):
        return thresholding_verilog(layer, in_beat)
    if isinstance(layer, FMPaddingLayer):
        return fm_padding_verilog(layer, in_beat)
    if isinstance(layer, GlobalAccPoolLayer):
        return global_acc_pool_verilog(layer, in_beat)
    if isinstance(layer, QuantAvgPoolLayer):
        return quant_avg_pool_verilog(layer, in_beat)
    raise UnsupportedLayerError(f"{getattr(layer, 'name', layer)}: no Verilog block for {type(layer).__name__}")


def _width(layer) -> int:
    return layer.out_beat * layer.out_type.bits


def top_verilog(layers, top: str, in_beat: int) -> str:
    """The top level chaining ``layers`` (their modules must be generated alongside)."""
    first, last = layers[0], layers[-1]
    L = [f"module {top} (",
         "    input wire clk,",
         "    input wire rst,",
         f"    input wire [{in_beat * first.in_type.bits - 1}:0] s_axis_tdata,",
         "    input wire s_axis_tvalid,",
         "    output wire s_axis_tready,",
         f"    output wire [{_width(last) - 1}:0] m_axis_tdata,",
         "    output wire m_axis_tvalid,",
         "    input wire m_axis_tready",
         ");"]
    for i, layer in enumerate(layers[:-1]):
        L += [f"    wire [{_width(layer) - 1}:0] d{i};", f"    wire v{i}, r{i};"]
    for i, layer in enumerate(layers):
        src = ("s_axis_tdata", "s_axis_tvalid", "s_axis_tready") if i == 0 else (f"d{i-1}", f"v{i-1}", f"r{i-1}")
        last = i == len(layers) - 1
        dst = ("m_axis_tdata", "m_axis_tvalid", "m_axis_tready") if last else (f"d{i}", f"v{i}", f"r{i}")
        L += [f"    {layer.name} u_{layer.name} (.clk(clk), .rst(rst),",
              f"        .in_data({src[0]}), .in_valid({src[1]}), .in_ready({src[2]}),",
              f"        .out_data({dst[0]}), .out_valid({dst[1]}), .out_ready({dst[2]}));"]
    L += ["endmodule", ""]
    return "\n".join(L)


def generate_verilog(layers, out_dir, top: str = "accel",
                     tree_levels_per_stage: int = TREE_LEVELS_PER_STAGE, in_beat: int | None = None) -> Design:
    """Write ``<out_dir>/<top>.v`` (all blocks and the top level) and return the :class:`Design`.

    ``in_beat``: elements per input beat; None means the first layer's SIMD (or PE), as FINN feeds it.
    """
    if not layers:
        raise UnsupportedLayerError(f"{top}: no layers to generate")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    first, last = layers[0], layers[-1]
    if in_beat is None:
        in_beat = first.simd if isinstance(first, (MVAULayer, SlidingWindowLayer, FMPaddingLayer)) else first.pe
    parts = [f"// {top}: generated by hwq.rtl (Verilog-2005); do not edit\n`default_nettype none\n"]
    beat = in_beat
    for layer in layers:
        parts.append(_block(layer, beat, tree_levels_per_stage))
        beat = layer.out_beat
    parts.append(top_verilog(layers, top, in_beat))
    parts.append("`default_nettype wire\n")
    path = out_dir / f"{top}.v"
    path.write_text("\n".join(parts))
    cycles = {layer.name: layer.cycles for layer in layers}
    return Design(top=top, files=[path], in_beat=in_beat, in_bits=first.in_type.bits,
                  in_signed=first.in_type.signed, in_beats=first.in_elems // in_beat, out_beat=last.out_beat,
                  out_bits=last.out_type.bits, out_signed=last.out_type.signed,
                  out_beats=last.out_elems // last.out_beat, cycles_bound=max(cycles.values()),
                  layer_cycles=cycles, tree_levels_per_stage=tree_levels_per_stage)
