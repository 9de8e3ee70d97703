# SPDX-License-Identifier: BSD-3-Clause
"""Generate the Verilog-2005 accelerator of a folded HW-layer graph: one block per layer and a top level.

The top level ``<top>`` wires the blocks of a :class:`~hwq.rtl.graph.LayerGraph` (a chain, or a DAG with
residual branches and concats) with valid/ready streams, each stream its own ``d_*`` / ``v_*`` / ``r_*`` wires,
and exposes AXI-stream-style ports: ``s_axis_tdata`` (the first layer's SIMD input elements per beat, element 0 in
the LSBs), ``s_axis_tvalid`` / ``s_axis_tready``, ``m_axis_tdata`` / ``m_axis_tvalid`` / ``m_axis_tready`` (the
last layer's output beats; the class index for a graph that ends in LabelSelect). ``rst`` is synchronous and
active high. Before generating, a FIFO goes on every join input whose branch holds less than the other
(:func:`hwq.rtl.fifo.insert_fifos`: a residual's shortcut), so that the branches never deadlock.

A layer type the generator does not know can bring its own block: a ``verilog(in_beats)`` method returning the
module text (``in_beats``: its producers' elements per beat, one per input port).

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
from hwq.rtl.branches import add_verilog, concat_verilog, duplicate_verilog
from hwq.rtl.fifo import FifoLayer, fifo_verilog, insert_fifos
from hwq.rtl.graph import LayerGraph, Source, as_graph, n_outputs, port_type
from hwq.rtl.layers import LabelSelectLayer, MVAULayer, UnsupportedLayerError
from hwq.rtl.layers_branch import AddLayer, ConcatLayer, DuplicateLayer
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
    #: The FIFOs the generator put on join inputs (residual shortcuts): name -> depth in beats.
    fifos: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {k: (str(v) if k == "top" else [str(f) for f in v] if k == "files" else v)
                for k, v in vars(self).items()}


def _block(layer, in_beats: tuple[int, ...], tree_levels_per_stage: int = TREE_LEVELS_PER_STAGE) -> str:
    if isinstance(layer, MVAULayer):
        return mvau_verilog(layer, in_beats[0], tree_levels_per_stage)
    if isinstance(layer, LabelSelectLayer):
        return label_select_verilog(layer, in_beats[0])
    if isinstance(layer, SlidingWindowLayer):
        return sliding_window_verilog(layer, in_beats[0])
    if isinstance(layer, PoolLayer):
        return max_pool_verilog(layer, in_beats[0])
    if isinstance(layer, DuplicateLayer):
        return duplicate_verilog(layer, in_beats)
    if isinstance(layer, AddLayer):
        return add_verilog(layer, in_beats)
    if isinstance(layer, ConcatLayer):
        return concat_verilog(layer, in_beats)
    if isinstance(layer, FifoLayer):
        return fifo_verilog(layer, in_beats[0])
    if isinstance(layer, ThresholdingLayer):
        return thresholding_verilog(layer, in_beats[0])
    if isinstance(layer, FMPaddingLayer):
        return fm_padding_verilog(layer, in_beats[0])
    if isinstance(layer, GlobalAccPoolLayer):
        return global_acc_pool_verilog(layer, in_beats[0])
    if isinstance(layer, QuantAvgPoolLayer):
        return quant_avg_pool_verilog(layer, in_beats[0])
    if hasattr(layer, "verilog"):
        return layer.verilog(in_beats)
    raise UnsupportedLayerError(f"{getattr(layer, 'name', layer)}: no Verilog block for {type(layer).__name__}")


def _width(layer) -> int:
    return layer.out_beat * layer.out_type.bits


def _first_beat(layer) -> int:
    """Elements per beat FINN feeds ``layer`` with: its ``in_beat``, else its SIMD, else its PE."""
    for key in ("in_beat", "simd", "pe"):
        if getattr(layer, key, None):
            return int(getattr(layer, key))
    raise UnsupportedLayerError(f"{layer.name}: give generate_verilog the input beat (no SIMD or PE)")


def _wire(src: Source) -> str:
    return src.layer if src.port == 0 else f"{src.layer}_o{src.port}"


def top_verilog(layers, top: str, in_beat: int) -> str:
    """The top level wiring the blocks of ``layers`` (a :class:`LayerGraph` or a chain as a list; their modules
    must be generated alongside): each stream its own data/valid/ready wires."""
    graph = as_graph(layers)
    first, port = graph.input_port
    last = graph.output_layer
    L = [f"module {top} (",
         "    input wire clk,",
         "    input wire rst,",
         f"    input wire [{in_beat * port_type(first, port).bits - 1}:0] s_axis_tdata,",
         "    input wire s_axis_tvalid,",
         "    output wire s_axis_tready,",
         f"    output wire [{_width(last) - 1}:0] m_axis_tdata,",
         "    output wire m_axis_tvalid,",
         "    input wire m_axis_tready",
         ");"]

    def signals(src: Source) -> tuple[str, str, str]:
        if src.layer is None:
            return "s_axis_tdata", "s_axis_tvalid", "s_axis_tready"
        if src == graph.output:
            return "m_axis_tdata", "m_axis_tvalid", "m_axis_tready"
        w = _wire(src)
        return f"d_{w}", f"v_{w}", f"r_{w}"

    for layer in graph:
        for p in range(n_outputs(layer)):
            src = Source(layer.name, p)
            if src != graph.output:
                d, v, r = signals(src)
                L += [f"    wire [{_width(layer) - 1}:0] {d};", f"    wire {v}, {r};"]
    for layer in graph:
        ins = [signals(s) for s in graph.feeds[layer.name]]
        outs = [signals(Source(layer.name, p)) for p in range(n_outputs(layer))]
        conns = []
        for name, (d, v, r) in zip(["in"] if len(ins) == 1 else [f"in{k}" for k in range(len(ins))], ins):
            conns.append(f".{name}_data({d}), .{name}_valid({v}), .{name}_ready({r})")
        for name, (d, v, r) in zip(["out"] if len(outs) == 1 else [f"out{k}" for k in range(len(outs))], outs):
            conns.append(f".{name}_data({d}), .{name}_valid({v}), .{name}_ready({r})")
        L += [f"    {layer.name} u_{layer.name} (.clk(clk), .rst(rst),"]
        L += [f"        {c}," for c in conns[:-1]] + [f"        {conns[-1]});"]
    L += ["endmodule", ""]
    return "\n".join(L)


def generate_verilog(layers, out_dir, top: str = "accel",
                     tree_levels_per_stage: int = TREE_LEVELS_PER_STAGE, in_beat: int | None = None,
                     shortcut_fifos: bool = True) -> Design:
    """Write ``<out_dir>/<top>.v`` (all blocks and the top level) and return the :class:`Design`.

    ``layers``: a :class:`~hwq.rtl.graph.LayerGraph` or a chain as a list. ``in_beat``: elements per input
    beat; None means the first layer's SIMD (or PE), as FINN feeds it. ``shortcut_fifos``: put the FIFOs
    :func:`hwq.rtl.fifo.insert_fifos` sizes on join inputs (False only to show that a residual then deadlocks).
    """
    if not layers:
        raise UnsupportedLayerError(f"{top}: no layers to generate")
    graph: LayerGraph = as_graph(layers)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    first, port = graph.input_port
    if in_beat is None:
        in_beat = _first_beat(first)
    if shortcut_fifos:
        graph = insert_fifos(graph, in_beat)
    last = graph.output_layer
    parts = [f"// {top}: generated by hwq.rtl (Verilog-2005); do not edit\n`default_nettype none\n"]
    for layer in graph:
        beats = tuple(in_beat if s.layer is None else graph.layer(s.layer).out_beat for s in graph.feeds[layer.name])
        parts.append(_block(layer, beats, tree_levels_per_stage))
    parts.append(top_verilog(graph, top, in_beat))
    parts.append("`default_nettype wire\n")
    path = out_dir / f"{top}.v"
    path.write_text("\n".join(parts))
    cycles = {layer.name: layer.cycles for layer in graph if not isinstance(layer, FifoLayer)}
    in_type = port_type(first, port)
    return Design(top=top, files=[path], in_beat=in_beat, in_bits=in_type.bits, in_signed=in_type.signed,
                  in_beats=graph.in_elems // in_beat, out_beat=last.out_beat, out_bits=last.out_type.bits,
                  out_signed=last.out_type.signed, out_beats=last.out_elems // last.out_beat,
                  cycles_bound=max(layer.cycles for layer in graph), layer_cycles=cycles,
                  tree_levels_per_stage=tree_levels_per_stage,
                  fifos={layer.name: layer.depth for layer in graph if isinstance(layer, FifoLayer)})
