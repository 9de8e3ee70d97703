# SPDX-License-Identifier: BSD-3-Clause
"""The layers of a design as a graph (DAG): which layer output feeds which layer input, in topological order.

A :class:`LayerGraph` is a ``list`` of layers in topological order, so a chain is just the list it always was
(``graph[0]``, ``for layer in graph``, ``len(graph)`` keep working), plus ``feeds``: for every layer, per input
port, the :class:`Source` of its stream (an output port of an earlier layer, or the graph input), and ``output``,
the source of the graph output. A layer missing from ``feeds`` takes the previous layer's output 0 (the graph
input for the first layer), so ``LayerGraph(layers)`` is the chain of ``layers``.

The per-layer protocol (``in_elems``, ``out_elems``, ``out_beat``, ``cycles``, ``in_type``, ``out_type``,
``run``) is extended minimally for branches (see :mod:`hwq.rtl.layers_branch`):

- a layer with several inputs has ``in_elems_per_port`` and ``in_types`` (one entry per input port); its
  ``in_elems`` is their sum, ``in_type`` the first port's, and ``run(*xs)`` takes one array per port;
- a layer with several outputs has ``n_outputs``; every output carries ``out_elems`` elements of ``out_type`` in
  beats of ``out_beat``, and ``run`` returns a tuple of ``n_outputs`` arrays;
- optional ``buffer_elems``: how many input elements (summed over its inputs) the block can hold at most (its
  collectors, line buffer, pipeline and output register). The generator sizes the FIFO on a residual's shortcut
  from it (:mod:`hwq.rtl.fifo`); a layer without it is assumed to hold a whole image (``in_elems``), which is
  safe but costs a large FIFO;
- optional, for a join: ``skew_elems``, per input port the elements that input must hold while the join reads
  the others (a concat: a vector per input; none for an add, which reads its inputs together).

>>> from hwq.rtl.layers import ElemType
>>> from hwq.rtl.layers_branch import AddLayer, DuplicateLayer
>>> dup = DuplicateLayer("dup", channels=4, pe=2, vectors=3, in_type=ElemType(2, False))
>>> add = AddLayer("add", channels=4, pe=1, vectors=3, in_types=(ElemType(2, False),) * 2,
...                out_type=ElemType(3, False))
>>> g = LayerGraph([dup, add], feeds={"add": [Source("dup", 0), Source("dup", 1)]})
>>> g.is_chain, [l.name for l in g], g.output
(False, ['dup', 'add'], Source(layer='add', port=0))
>>> run_graph(g, np.array([[0, 1, 2, 3] * 3])).tolist()
[[0, 2, 4, 6, 0, 2, 4, 6, 0, 2, 4, 6]]
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from hwq.rtl.layers import UnsupportedLayerError


@dataclass(frozen=True)
class Source:
    """Where a stream comes from: output ``port`` of the layer named ``layer`` (None: the graph input).
    ``tensor`` is the ONNX tensor it carries, when read from a model (not compared)."""

    layer: str | None
    port: int = 0
    tensor: str | None = field(default=None, compare=False, repr=False)

    def label(self) -> str:
        """A readable name: ``layer`` (``layer.N`` for output N > 0), or ``input``."""
        if self.layer is None:
            return "input"
        return self.layer if self.port == 0 else f"{self.layer}.{self.port}"


#: The graph input, the source of the first layer's stream.
GRAPH_INPUT = Source(None)


def n_inputs(layer) -> int:
    """Input streams of ``layer`` (1 unless it declares ``in_elems_per_port``)."""
    return len(getattr(layer, "in_elems_per_port", (None,)))


def n_outputs(layer) -> int:
    """Output streams of ``layer`` (1 unless it declares ``n_outputs``)."""
    return int(getattr(layer, "n_outputs", 1))


def port_elems(layer, port: int) -> int:
    """Elements per image on input ``port`` of ``layer``."""
    return getattr(layer, "in_elems_per_port", (layer.in_elems,))[port]


def port_type(layer, port: int):
    """Element type on input ``port`` of ``layer``."""
    return getattr(layer, "in_types", (layer.in_type,))[port]


def buffer_elems(layer) -> int:
    """Input elements ``layer``'s block can hold at most (``buffer_elems``; a whole image if it does not say)."""
    held = getattr(layer, "buffer_elems", None)
    return layer.in_elems if held is None else int(held)


class LayerGraph(list):
    """Layers in topological order (a list) with the streams between them (``feeds``, ``output``).

    ``feeds``: layer name -> the sources of its input ports, in port order; a layer not in it takes the previous
    layer's output 0 (the graph input for the first). ``output``: the source of the graph output (default: the
    last layer's output 0). Checked: sources come before their consumer, every output stream has exactly one
    consumer (the graph output counts), and a producer gives as many elements as its consumer takes.
    """

    def __init__(self, layers, feeds: dict | None = None, output: Source | None = None):
        super().__init__(layers)
        if not self:
            raise UnsupportedLayerError("no layers")
        feeds = dict(feeds or {})
        self.feeds: dict[str, tuple[Source, ...]] = {}
        previous = None
        for layer in self:
            sources = feeds.pop(layer.name, None)
            if sources is None:
                sources = (GRAPH_INPUT if previous is None else Source(previous.name),)
            self.feeds[layer.name] = tuple(sources)
            previous = layer
        if feeds:
            raise UnsupportedLayerError(f"feeds name layers that are not in the graph: {', '.join(feeds)}")
        self.output = output or Source(self[-1].name)
        #: ONNX tensor name -> the stream carrying it, for a graph read from a model (``layers_from_model``)
        self.tensors: dict[str, Source] = {}
        self._by_name = {layer.name: layer for layer in self}
        if len(self._by_name) != len(self):
            raise UnsupportedLayerError("two layers have the same name")
        self._check()

    def layer(self, name: str):
        return self._by_name[name]

    def _check(self) -> None:
        seen, consumed = set(), {}
        for layer in self:
            sources = self.feeds[layer.name]
            if len(sources) != n_inputs(layer):
                raise UnsupportedLayerError(f"{layer.name}: {len(sources)} input stream(s), "
                                            f"it takes {n_inputs(layer)}")
            for port, src in enumerate(sources):
                if src.layer is not None and src.layer not in seen:
                    raise UnsupportedLayerError(f"{layer.name}: fed by {src.label()}, which is not an earlier layer")
                if src.layer is not None and src.port >= n_outputs(self.layer(src.layer)):
                    raise UnsupportedLayerError(f"{layer.name}: fed by output {src.port} of {src.layer}, "
                                                f"which has {n_outputs(self.layer(src.layer))}")
                key = (src.layer, src.port)
                if key in consumed:
                    raise UnsupportedLayerError(f"{src.label()} feeds both {consumed[key]} and {layer.name} "
                                                "(a stream has one consumer: split it with DuplicateStreams)")
                consumed[key] = layer.name
                gives = self.stream_elems(src)
                if gives != port_elems(layer, port):
                    raise UnsupportedLayerError(f"{layer.name}: takes {port_elems(layer, port)} values, "
                                                f"{src.label() if src.layer else 'the graph input'} gives {gives}")
            seen.add(layer.name)
        out = (self.output.layer, self.output.port)
        if out in consumed:
            raise UnsupportedLayerError(f"{self.output.label()} feeds both {consumed[out]} and the graph output")
        consumed[out] = "the graph output"
        if (None, 0) not in consumed:
            raise UnsupportedLayerError("no layer takes the graph input")
        for layer in self:
            for port in range(n_outputs(layer)):
                if (layer.name, port) not in consumed:
                    raise UnsupportedLayerError(f"{Source(layer.name, port).label()}: output {port} of "
                                                f"{layer.name} feeds nothing")

    # --- where streams go ----------------------------------------------------------------------------------------
    def stream_elems(self, src: Source) -> int:
        """Elements per image on the stream out of ``src`` (the graph input: what its consumer takes)."""
        if src.layer is None:
            layer, port = self.input_port
            return port_elems(layer, port)
        return self.layer(src.layer).out_elems

    @property
    def input_port(self):
        """(layer, input port) the graph input feeds."""
        for layer in self:
            for port, src in enumerate(self.feeds[layer.name]):
                if src.layer is None:
                    return layer, port
        raise UnsupportedLayerError("no layer takes the graph input")

    @property
    def output_layer(self):
        return self.layer(self.output.layer)

    @property
    def in_elems(self) -> int:
        """Elements per image on the graph input."""
        layer, port = self.input_port
        return port_elems(layer, port)

    @property
    def in_type(self):
        layer, port = self.input_port
        return port_type(layer, port)

    @property
    def is_chain(self) -> bool:
        """Every layer takes the previous layer's only output (the first the graph input), the last gives the
        output."""
        return all(self.feeds[layer.name] == ((GRAPH_INPUT if i == 0 else Source(self[i - 1].name)),)
                   for i, layer in enumerate(self)) and self.output == Source(self[-1].name)

    def consumer(self, src: Source):
        """(layer, port) that takes the stream out of ``src``, or None for the graph output."""
        for layer in self:
            for port, s in enumerate(self.feeds[layer.name]):
                if s == src:
                    return layer, port
        return None

    def ancestors(self, src: Source) -> set[str]:
        """Names of the layers upstream of the stream out of ``src`` (its own layer included)."""
        found, todo = set(), [src]
        while todo:
            s = todo.pop()
            if s.layer is None or s.layer in found:
                continue
            found.add(s.layer)
            todo.extend(self.feeds[s.layer])
        return found

    def edges(self) -> list[tuple[Source, str | None, int]]:
        """Every stream: (source, consumer layer name or None for the graph output, consumer port)."""
        out = [(src, layer.name, port) for layer in self for port, src in enumerate(self.feeds[layer.name])]
        return out + [(self.output, None, 0)]


def as_graph(layers) -> LayerGraph:
    """``layers`` as a :class:`LayerGraph` (a plain list is the chain of its layers)."""
    return layers if isinstance(layers, LayerGraph) else LayerGraph(layers)


def run_graph(graph, x) -> np.ndarray:
    """Run ``graph`` (a :class:`LayerGraph` or a chain as a list) on integer inputs (N, in elems) with the
    layers' reference models; returns the graph output (N, out elems)."""
    graph = as_graph(graph)
    values = run_graph_streams(graph, x)
    return values[(graph.output.layer, graph.output.port)]


def run_graph_streams(graph, x) -> dict[tuple[str | None, int], np.ndarray]:
    """Every stream's values when ``graph`` runs on integer inputs (N, in elems): ``(layer, port)`` -> (N, elems),
    ``(None, 0)`` the input."""
    graph = as_graph(graph)
    values = {(None, 0): np.asarray(x, dtype=np.int64)}
    for layer in graph:
        out = layer.run(*(values[(s.layer, s.port)] for s in graph.feeds[layer.name]))
        outs = out if n_outputs(layer) > 1 else (out,)
        for port, value in enumerate(outs):
            values[(layer.name, port)] = np.asarray(value, dtype=np.int64)
    return values
