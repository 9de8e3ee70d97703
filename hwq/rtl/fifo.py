# SPDX-License-Identifier: BSD-3-Clause
"""The FIFO on a residual's shortcut: the block, and the rule that sizes it so that the branches never deadlock.

A fork (DuplicateStreams) sends each beat to all its branches at once, and a join (add, concat) takes vector v
from all its inputs together. Without buffering, a long branch that must take in many elements before it gives
its first output (a sliding window's line buffer, an MVAU's input vector) stalls the fork as soon as the short
branch (the shortcut) is full, and the join waits forever for the long branch: a deadlock. The FIFO lets the
shortcut hold what the long branch holds.

Sizing rule (:func:`shortcut_depths`), per join input k: the elements the blocks strictly between the fork and
the join can hold on each input's path (``buffer_elems`` of each block, converted to the fork's elements by the
ratio of elements per image, FIFOs of inner joins included), the longest path's minus path k's own, converted to
path k's elements, plus the join's own skew on k (``skew_elems``: a concat reads its inputs one after the other,
so each must hold a vector while the others are read; an add reads both at once: none). If that is more than
zero, the FIFO gets it plus two of the join's vectors on k (beat-width converters and the register stages the
``buffer_elems`` figures round off), in beats of k's producer, rounded up to a power of two. A path that holds as
much as the longest, into an add, gets no FIFO. Since the shortcut then holds everything the long branch can, the
fork is never stopped by a full shortcut while the long branch can still take data: no deadlock, and no
throughput lost to the fork either.

>>> from hwq.rtl.layers import ElemType
>>> f = FifoLayer("add_fifo1", depth=16, beat=2, elems=64, elem_type=ElemType(4, True))
>>> f.cycles, f.buffer_elems
(32, 34)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hwq.rtl.blocks import _ports, clog2
from hwq.rtl.graph import GRAPH_INPUT, LayerGraph, Source, buffer_elems, n_inputs, port_elems
from hwq.rtl.layers import ElemType


@dataclass(frozen=True, eq=False)
class FifoLayer:
    """A FIFO of ``depth`` beats of ``beat`` elements (plus its output register) on a stream of ``elems``
    elements per image."""

    name: str
    depth: int
    beat: int
    elems: int
    elem_type: ElemType

    @property
    def in_type(self) -> ElemType:
        return self.elem_type

    @property
    def out_type(self) -> ElemType:
        return self.elem_type

    @property
    def in_elems(self) -> int:
        return self.elems

    @property
    def out_elems(self) -> int:
        return self.elems

    @property
    def in_beat(self) -> int:
        return self.beat

    @property
    def out_beat(self) -> int:
        return self.beat

    @property
    def cycles(self) -> int:
        return self.elems // self.beat

    @property
    def buffer_elems(self) -> int:
        return (self.depth + 1) * self.beat

    def run(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(x, dtype=np.int64).copy()


def fifo_verilog(layer: FifoLayer, in_beat: int) -> str:
    """Verilog of a FIFO: a RAM of ``depth`` beats (read synchronously, so Yosys can use block RAM) and the
    output register it reads into."""
    if in_beat != layer.beat:
        raise ValueError(f"{layer.name}: a FIFO of {layer.beat}-element beats fed {in_beat} elements a beat")
    w, d = layer.beat * layer.elem_type.bits, layer.depth
    a = clog2(d)
    assert d == 1 << a, "FIFO depth must be a power of two"
    L = _ports(layer.name, w, w)
    L += [f"    // {layer.name}: FIFO of {d} beats of {w} bits and the output register",
          f"    reg [{w - 1}:0] mem [0:{d - 1}];",
          f"    reg [{a}:0] wp, rp;                       // one bit more than the address: full vs empty",
          f"    wire [{a}:0] count = wp - rp;",
          f"    assign in_ready = count != {a + 1}'d{d};",
          "    wire wr = in_valid && in_ready;",
          f"    wire rd = (count != {a + 1}'d0) && (!out_valid || out_ready);",
          f"    always @(posedge clk) if (wr) mem[wp[{a - 1}:0]] <= in_data;",
          f"    always @(posedge clk) if (rd) out_data <= mem[rp[{a - 1}:0]];",
          "    always @(posedge clk) begin",
          "        if (rst) begin",
          "            wp <= 0; rp <= 0; out_valid <= 1'b0;",
          "        end else begin",
          "            if (wr) wp <= wp + 1'b1;",
          "            if (rd) rp <= rp + 1'b1;",
          "            if (rd) out_valid <= 1'b1;",
          "            else if (out_ready) out_valid <= 1'b0;",
          "        end",
          "    end",
          "endmodule", ""]
    return "\n".join(L)


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def _stream_beat(graph: LayerGraph, src: Source, in_beat: int) -> int:
    return in_beat if src.layer is None else graph.layer(src.layer).out_beat


def shortcut_depths(graph: LayerGraph, in_beat: int) -> dict[tuple[str, int], int]:
    """FIFO depth in beats for every join input that needs one: (join name, input port) -> depth. See the
    module docstring for the rule; ``in_beat`` is the graph input's elements per beat."""
    order = {layer.name: i for i, layer in enumerate(graph)}
    depths: dict[tuple[str, int], int] = {}
    for join in graph:
        if n_inputs(join) < 2:
            continue
        feeds = graph.feeds[join.name]
        upstream = [graph.ancestors(src) for src in feeds]
        common = set.intersection(*upstream)
        fork = max(common, key=order.get) if common else None
        fork_elems = graph.stream_elems(GRAPH_INPUT if fork is None else Source(fork))

        def held(names: set[str]) -> int:
            """Elements (of the fork's stream) the layers ``names`` and the FIFOs already sized at their inputs
            can hold."""
            total = 0
            for name in names:
                layer = graph.layer(name)
                total += _ceil_div(buffer_elems(layer) * fork_elems, layer.in_elems)
                for p in range(n_inputs(layer)):
                    if (name, p) in depths:
                        fifo = (depths[(name, p)] + 1) * _stream_beat(graph, graph.feeds[name][p], in_beat)
                        total += _ceil_div(fifo * fork_elems, port_elems(layer, p))
            return total

        holds = [held(names - common) for names in upstream]
        skew = getattr(join, "skew_elems", (0,) * len(feeds))
        for port, src in enumerate(feeds):
            elems = port_elems(join, port)
            need = _ceil_div((max(holds) - holds[port]) * elems, fork_elems) + skew[port]
            if need <= 0:
                continue
            vector = elems // int(getattr(join, "vectors", 1))
            need += 2 * vector
            beats = _ceil_div(need, _stream_beat(graph, src, in_beat))
            depths[(join.name, port)] = 1 << clog2(max(beats, 2))
    return depths


def insert_fifos(graph: LayerGraph, in_beat: int) -> LayerGraph:
    """``graph`` with a :class:`FifoLayer` (named ``<join>_fifo<port>``) before every join input that
    :func:`shortcut_depths` gives a depth; the same graph when none needs one."""
    depths = shortcut_depths(graph, in_beat)
    if not depths:
        return graph
    layers, feeds = [], {}
    for layer in graph:
        sources = list(graph.feeds[layer.name])
        for port, src in enumerate(sources):
            if (layer.name, port) in depths:
                fifo = FifoLayer(f"{layer.name}_fifo{port}", depths[(layer.name, port)],
                                 _stream_beat(graph, src, in_beat), graph.stream_elems(src),
                                 graph.in_type if src.layer is None else graph.layer(src.layer).out_type)
                layers.append(fifo)
                feeds[fifo.name] = (src,)
                sources[port] = Source(fifo.name, 0, src.tensor)
        layers.append(layer)
        feeds[layer.name] = tuple(sources)
    return LayerGraph(layers, feeds, graph.output)
