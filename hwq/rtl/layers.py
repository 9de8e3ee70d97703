# SPDX-License-Identifier: BSD-3-Clause
"""Read the folded HW-layer graph of a build into plain layer descriptions the Verilog generator works from.

A layer is a frozen dataclass holding integers only: folding (PE, SIMD), element widths, the weight matrix and the
thresholds. ``layers_from_model`` returns a :class:`hwq.rtl.graph.LayerGraph`: the layers in topological order
(a list, so a chain reads as before) and, per layer, which layer outputs feed its inputs (by tensor): residual
branches (DuplicateStreams, AddStreams / ElementwiseAdd) and concats (StreamingConcat) are read by
:mod:`hwq.rtl.layers_branch`. ``run_layers`` executes the graph (or a plain chain) with :mod:`hwq.rtl.reference`;
it is the software model the testbenches compare against.

Every layer has ``name``, ``in_elems`` / ``out_elems`` (per image), ``out_beat`` (elements per output beat),
``cycles`` (its folding bound), ``in_type`` / ``out_type`` and ``run``; layers with several inputs or outputs, and
the optional ``buffer_elems`` the FIFO sizing uses, are described in :mod:`hwq.rtl.graph`.

>>> from qonnx.core.modelwrapper import ModelWrapper                      # doctest: +SKIP
>>> layers = layers_from_model(ModelWrapper("build/intermediate/12_correct_datatypes.onnx"))  # doctest: +SKIP
>>> [l.name for l in layers]                                               # doctest: +SKIP
['MVAU_hls_0', 'MVAU_hls_1', 'MVAU_hls_2', 'MVAU_hls_3', 'LabelSelect_hls_0']
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from hwq.errors import ConfigError
from hwq.rtl import reference


class UnsupportedLayerError(ConfigError):
    """The graph holds a node (or a setting of one) the Verilog generator does not implement."""


@dataclass(frozen=True)
class ElemType:
    """An integer element type on a stream: ``bits`` wide, two's complement when ``signed``.

    ``bipolar``: one bit ``b`` standing for the value ``2b - 1`` (FINN's BIPOLAR stream, which a mixed-precision
    network feeds into an integer MVAU: its ``lo``/``hi`` are the values -1/+1, its elements the bits).
    """

    bits: int
    signed: bool
    bipolar: bool = False

    def __repr__(self) -> str:
        bipolar = ", bipolar=True" if self.bipolar else ""
        return f"ElemType(bits={self.bits}, signed={self.signed}{bipolar})"

    @property
    def lo(self) -> int:
        if self.bipolar:
            return -1
        return -(1 << (self.bits - 1)) if self.signed else 0

    @property
    def hi(self) -> int:
        if self.bipolar:
            return 1
        return (1 << (self.bits - 1)) - 1 if self.signed else (1 << self.bits) - 1

    @property
    def signed_value(self) -> bool:
        """Whether the values it stands for can be negative (signed, or bipolar)."""
        return self.signed or self.bipolar

    @staticmethod
    def for_range(lo: int, hi: int) -> "ElemType":
        """The narrowest type holding ``lo..hi``.

        >>> ElemType.for_range(0, 64), ElemType.for_range(-3, 2)
        (ElemType(bits=7, signed=False), ElemType(bits=3, signed=True))
        """
        if lo >= 0:
            return ElemType(max(1, int(hi).bit_length()), False)
        bits = 1
        while not (-(1 << (bits - 1)) <= lo and hi <= (1 << (bits - 1)) - 1):
            bits += 1
        return ElemType(bits, True)


class PeStream:
    """A layer that reads ``pe`` elements a cycle and writes ``pe`` elements a beat: its class declares ``pe`` and
    ``in_elems``."""

    @property
    def out_beat(self) -> int:
        return self.pe

    @property
    def cycles(self) -> int:
        """The folding bound, as FINN counts it: PE input elements a cycle."""
        return self.in_elems // self.pe


class ElementwiseStream(PeStream):
    """The stream shape of a layer that maps each of ``vectors`` x ``channels`` input elements to one output
    element (thresholds, a stream duplicate): its class declares ``vectors``, ``channels`` and ``pe``."""

    @property
    def in_elems(self) -> int:
        return self.vectors * self.channels

    @property
    def out_elems(self) -> int:
        return self.in_elems


class WindowReduction(PeStream):
    """The stream shape of a pool that reduces each of ``windows`` windows of ``window`` pixels x ``channels``
    (from a sliding window generator) to one pixel: its class declares those fields and ``pe``."""

    @property
    def in_elems(self) -> int:
        return self.windows * self.window * self.channels

    @property
    def out_elems(self) -> int:
        return self.windows * self.channels


@dataclass(frozen=True, eq=False)
class MVAULayer:
    """A matrix-vector-activation unit: ``MH`` outputs of ``MW`` inputs, folded by ``PE`` x ``SIMD``.

    ``vectors`` input vectors per image (FINN's ``numInputVectors``: one per output pixel of a convolution) are
    computed one after the other with the same weights.
    """

    name: str
    mw: int
    mh: int
    pe: int
    simd: int
    xnor: bool
    in_type: ElemType
    out_type: ElemType
    #: Weights (MW, MH), integers (bits 0/1 in XNOR mode).
    weights: np.ndarray
    #: Integer thresholds (MH or 1, T), or None for a layer without activation.
    thresholds: np.ndarray | None
    act_val: int = 0
    vectors: int = 1
    #: An adder MVAU (AdderNet): ``-sum |x - w|`` instead of the dot product; inputs and weights on one grid.
    adder: bool = False
    #: The plane form (``hwq.rtl.planes``, ``hwq.rtl.mvau_form``): K bipolar weight planes (K, MW, MH) bits (1 for
    #: +1) and their per-column basis (MH, K) with ``weights == sum_k basis[:, k] * (2 * planes[k] - 1)``; the
    #: block then computes K bipolar dot products and their scaled sum. None: the integer form.
    planes: np.ndarray | None = None
    plane_basis: np.ndarray | None = None

    def __post_init__(self) -> None:
        if (self.planes is None) != (self.plane_basis is None):
            raise UnsupportedLayerError(f"{self.name}: planes and plane_basis go together")
        if self.planes is not None:
            from hwq.rtl.planes import plane_weights

            if self.xnor or self.adder:
                raise UnsupportedLayerError(f"{self.name}: weight planes are for an integer MVAU, not an "
                                            f"{'XNOR' if self.xnor else 'adder'} one")
            shape = np.shape(self.planes)
            fits = len(shape) == 3 and shape[1:] == (self.mw, self.mh) and \
                np.shape(self.plane_basis) == (self.mh, shape[0])
            if not fits or not np.array_equal(plane_weights(self.planes, self.plane_basis), self.weights):
                raise UnsupportedLayerError(f"{self.name}: the weight planes do not sum to the layer's weights")

    @property
    def nf(self) -> int:
        return self.mh // self.pe

    @property
    def sf(self) -> int:
        return self.mw // self.simd

    @property
    def cycles(self) -> int:
        """The folding bound: cycles per image (NF x SF per input vector)."""
        return self.vectors * self.nf * self.sf

    @property
    def in_elems(self) -> int:
        return self.vectors * self.mw

    @property
    def out_elems(self) -> int:
        return self.vectors * self.mh

    @property
    def out_beat(self) -> int:
        return self.pe

    @property
    def buffer_elems(self) -> int:
        """The input vector being collected, the one being computed, and the results of the one before in the
        adder-tree pipeline and output register (at most a vector's worth)."""
        return 3 * self.mw

    def acc_range(self) -> tuple[int, int]:
        """Exact range of the accumulator over all inputs of ``in_type`` (per the weights, all columns)."""
        if self.xnor:
            return 0, self.mw
        w = self.weights
        if self.adder:  # -|x - w| over x in [lo, hi]: farthest end of the range .. 0 if w is in it, else its gap
            lo_x, hi_x = self.in_type.lo, self.in_type.hi
            far = np.maximum(np.abs(w - lo_x), np.abs(w - hi_x)).sum(axis=0)
            near = (np.maximum(lo_x - w, 0) + np.maximum(w - hi_x, 0)).sum(axis=0)
            return -int(far.max()), -int(near.min())
        lo = np.minimum(w * self.in_type.lo, w * self.in_type.hi).sum(axis=0)
        hi = np.maximum(w * self.in_type.lo, w * self.in_type.hi).sum(axis=0)
        return int(lo.min()), int(hi.max())

    @functools.cached_property
    def const_weights(self) -> reference.ConstMatrix:
        """The weights checked and prepared once, for :meth:`run` (the layer is immutable)."""
        return reference.ConstMatrix(self.weights, f"{self.name} weights")

    @functools.cached_property
    def int_thresholds(self) -> np.ndarray | None:
        """The thresholds as the integers an integer accumulator is compared with, made once (see :meth:`run`)."""
        return None if self.thresholds is None else reference.integer_thresholds(self.thresholds)

    def run(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x).reshape(-1, self.mw)
        if self.in_type.bipolar:  # the stream's bits stand for -1/+1
            x = 2 * x - 1
        out = reference.mvau(x, self.const_weights, self.int_thresholds, xnor=self.xnor, act_val=self.act_val,
                             adder=self.adder, planes=self.planes, plane_basis=self.plane_basis)
        return out.reshape(-1, self.out_elems)


@dataclass(frozen=True, eq=False)
class LabelSelectLayer:
    """Top-1 label selection over ``labels`` values, ``pe`` compared per cycle."""

    name: str
    labels: int
    pe: int
    in_type: ElemType
    out_type: ElemType

    @property
    def cycles(self) -> int:
        return -(-self.labels // self.pe)

    @property
    def in_elems(self) -> int:
        return self.labels

    @property
    def out_elems(self) -> int:
        return 1

    @property
    def out_beat(self) -> int:
        return 1

    @property
    def buffer_elems(self) -> int:
        return 3 * self.labels

    def run(self, x: np.ndarray) -> np.ndarray:
        return reference.label_select(x, 1)


def _elem_type(name: str, where: str, bipolar: bool = False) -> ElemType:
    """The stream type of FINN's datatype ``name``; BIPOLAR only where ``bipolar`` (the integer MVAU reads and
    writes it; the other blocks carry it as nothing they know)."""
    from qonnx.core.datatype import DataType

    dt = DataType[name]
    if name == "BIPOLAR" and bipolar:
        return ElemType(1, False, bipolar=True)
    if name == "BIPOLAR" or not dt.is_integer():
        raise UnsupportedLayerError(f"{where}: element type {name} is not supported by the Verilog generator")
    return ElemType(dt.bitwidth(), dt.signed())


def _mvau(model, node) -> MVAULayer:
    from qonnx.custom_op.registry import getCustomOp

    op = getCustomOp(node)
    attr = op.get_nodeattr
    xnor = bool(attr("binaryXnorMode"))
    w = model.get_initializer(node.input[1])
    if w is None:
        raise UnsupportedLayerError(f"{node.name}: weights are not an initializer")
    weights = reference._ints(w, f"{node.name} weights")
    thr = None
    if not attr("noActivation"):
        thr = model.get_initializer(node.input[2])
        if thr is None:
            raise UnsupportedLayerError(f"{node.name}: thresholds are not an initializer")
        thr = reference.integer_thresholds(thr)
    mw, mh, pe, simd = attr("MW"), attr("MH"), attr("PE"), attr("SIMD")
    if mh % pe or mw % simd:
        raise UnsupportedLayerError(f"{node.name}: PE={pe} must divide MH={mh} and SIMD={simd} must divide MW={mw}")
    # a BIPOLAR output is the threshold count (0/1) as FINN streams it, whatever reads it
    out_type = _elem_type(attr("outputDataType"), node.name, bipolar=thr is not None)
    return MVAULayer(name=node.name, mw=mw, mh=mh, pe=pe, simd=simd, xnor=xnor,
                     in_type=_elem_type(attr("inputDataType"), node.name, bipolar=not xnor), out_type=out_type,
                     weights=weights,
                     thresholds=thr, act_val=int(attr("ActVal")) if thr is not None else 0,
                     vectors=int(np.prod(attr("numInputVectors"))))


def _label_select(node) -> LabelSelectLayer:
    from qonnx.custom_op.registry import getCustomOp

    op = getCustomOp(node)
    if op.get_nodeattr("K") != 1:
        raise UnsupportedLayerError(f"{node.name}: K={op.get_nodeattr('K')} (only K=1 supported)")
    labels, pe = op.get_nodeattr("Labels"), op.get_nodeattr("PE")
    return LabelSelectLayer(name=node.name, labels=labels, pe=pe,
                            in_type=_elem_type(op.get_nodeattr("inputDataType"), node.name),
                            out_type=_elem_type(op.get_nodeattr("outputDataType"), node.name))


def _stream_inputs(model, node) -> list[str]:
    """The node's inputs that are streams (weights and thresholds are initializers)."""
    return [t for t in node.input if t and model.get_initializer(t) is None]


def _topological(model, nodes: list) -> list:
    """``nodes`` in an order where every node comes after the producers of its inputs (FINN keeps graphs
    sorted; this also accepts one that is not)."""
    produced_by = {t: n.name for n in nodes for t in n.output}
    done, order, pending = set(), [], list(nodes)
    while pending:
        ready = [n for n in pending if all(produced_by.get(t) in done or t not in produced_by
                                           for t in _stream_inputs(model, n))]
        if not ready:
            raise UnsupportedLayerError(f"{pending[0].name}: the graph has a cycle")
        order += ready
        done.update(n.name for n in ready)
        pending = [n for n in pending if n.name not in done]
    return order


def layers_from_model(model):
    """The layers of a folded HW-layer graph (``fold`` / ``correct_datatypes`` output) as a
    :class:`hwq.rtl.graph.LayerGraph`: in topological order, each fed by the layer outputs that produce its
    input tensors. A chain is a list of its layers, as before.

    The sliding window and pooling layers live in :mod:`hwq.rtl.layers_conv`, the branch layers (duplicate, add,
    concat) in :mod:`hwq.rtl.layers_branch`.
    """
    from hwq.rtl import layers_branch, layers_conv, layers_stream  # import this module's types: read here
    from hwq.rtl.graph import GRAPH_INPUT, LayerGraph, Source

    readers = {"MVAU": lambda node: _mvau(model, node), "LabelSelect": _label_select,
               "ConvolutionInputGenerator": layers_conv.sliding_window_layer, "Pool": layers_conv.pool_layer,
               "Thresholding": lambda node: layers_stream.thresholding_layer(model, node),
               "FMPadding": layers_stream.fm_padding_layer, "GlobalAccPool": layers_stream.global_acc_pool_layer,
               "Reshape": lambda node: layers_stream.reshape_layer(model, node),
               **dict.fromkeys(("Shuffle", "InnerShuffle", "OuterShuffle"), layers_stream.reordering_layer),
               "DuplicateStreams": layers_branch.duplicate_layer, "AddStreams": layers_branch.add_streams_layer,
               "ElementwiseAdd": lambda node: layers_branch.elementwise_add_layer(model, node),
               "StreamingConcat": layers_branch.concat_layer}
    graph = model.graph
    if len(graph.input) != 1 or len(graph.output) != 1:
        raise UnsupportedLayerError(f"{model.graph.name}: {len(graph.input)} inputs and {len(graph.output)} "
                                    "outputs (one of each supported)")
    sources = {graph.input[0].name: Source(None, 0, graph.input[0].name)}
    layers, feeds = [], {}
    for node in _topological(model, list(graph.node)):
        kind = node.op_type.rsplit("_", 1)[0] if node.op_type.endswith(("_hls", "_rtl")) else node.op_type
        if kind not in readers:
            raise UnsupportedLayerError(f"{node.name}: {node.op_type} has no Verilog generator "
                                        f"({', '.join(readers)})")
        layer = readers[kind](node)
        inputs = _stream_inputs(model, node)
        missing = [t for t in inputs if t not in sources]
        if missing:
            raise UnsupportedLayerError(f"{node.name}: input {missing[0]} comes from no node and is not the "
                                        "graph input")
        if layer is None:   # a node that leaves the stream as it is (a reshape): its output is its input
            sources[node.output[0]] = sources[inputs[0]]
            continue
        feeds[layer.name] = tuple(sources[t] for t in inputs)
        sources.update({t: Source(layer.name, port, t) for port, t in enumerate(node.output)})
        layers.append(layer)
    out = graph.output[0].name
    if out not in sources or sources[out] == GRAPH_INPUT:
        raise UnsupportedLayerError(f"{out}: the graph output comes from no node")
    result = LayerGraph(layers, feeds, sources[out])
    result.tensors = sources
    return result


def run_layers(layers, x) -> np.ndarray:
    """Run the layers (a :class:`~hwq.rtl.graph.LayerGraph`, or a chain as a list) on integer inputs
    (N, in_elems) with the reference models; returns (N, out_elems)."""
    from hwq.rtl.graph import run_graph

    return run_graph(layers, x)
