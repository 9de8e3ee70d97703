# SPDX-License-Identifier: BSD-3-Clause
"""The branch layers of a folded HW graph: DuplicateStreams (a fork), AddStreams / ElementwiseAdd and
StreamingConcat (joins), and the FIFO the generator puts on a residual's shortcut (:mod:`hwq.rtl.fifo`).

FINN turns a residual block into ``DuplicateStreams`` (one stream in, ``NumOutputStreams`` identical streams out),
the branches, and an elementwise add of the two (upstream FINN's ``AddStreams``: ``NumChannels``, ``PE``,
``inputDataTypes``, ``numInputVectors``; finn-plus 1.6.1 has ``ElementwiseAdd`` instead: ``lhs_shape`` /
``rhs_shape`` / ``out_shape``, ``lhs_dtype`` / ``rhs_dtype`` / ``out_dtype``, ``PE``, both operands streams); a
channel concat becomes ``StreamingConcat`` (``ChannelsPerStream``, ``SIMD``, ``inputDataTypes``,
``numInputVectors``, the output type the union of the inputs'). Each works on ``vectors`` vectors (pixels) of
``channels`` elements. The layers follow the graph protocol of :mod:`hwq.rtl.graph` (several inputs:
``in_elems_per_port``, ``in_types``, ``run(*xs)``; several outputs: ``n_outputs``, ``run`` gives a tuple).

>>> from hwq.rtl.layers import ElemType
>>> cat = ConcatLayer("cat", channels=(2, 4), simd=2, vectors=3, in_types=(ElemType(2, False), ElemType(3, True)))
>>> cat.out_type, cat.in_elems_per_port, cat.out_elems, cat.cycles
(ElemType(bits=3, signed=True), (6, 12), 18, 9)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from onnx import helper

from hwq.rtl import reference
from hwq.rtl.layers import ElemType, ElementwiseStream, UnsupportedLayerError, _elem_type


def union_type(types) -> ElemType:
    """The narrowest type holding every value of ``types`` (FINN's StreamingConcat output type)."""
    return ElemType.for_range(min(0, *(t.lo for t in types)), max(t.hi for t in types))


@dataclass(frozen=True, eq=False)
class DuplicateLayer(ElementwiseStream):
    """``n_outputs`` copies of a stream of ``vectors`` x ``channels`` elements, ``pe`` elements a beat."""

    name: str
    channels: int
    pe: int
    vectors: int
    in_type: ElemType
    n_outputs: int = 2

    @property
    def out_type(self) -> ElemType:
        return self.in_type

    @property
    def buffer_elems(self) -> int:
        """Its skid register and beat-width converter (up to a vector each) and one output register per branch."""
        return 2 * self.channels + self.n_outputs * self.pe

    def run(self, x: np.ndarray) -> tuple[np.ndarray, ...]:
        return reference.duplicate(x, self.n_outputs)


@dataclass(frozen=True, eq=False)
class AddLayer:
    """Elementwise sum of two streams of ``vectors`` x ``channels`` elements, ``pe`` sums a beat, in ``out_type``."""

    name: str
    channels: int
    pe: int
    vectors: int
    in_types: tuple[ElemType, ElemType]
    out_type: ElemType

    @property
    def in_type(self) -> ElemType:
        return self.in_types[0]

    @property
    def in_elems_per_port(self) -> tuple[int, int]:
        return (self.vectors * self.channels,) * 2

    @property
    def in_elems(self) -> int:
        return sum(self.in_elems_per_port)

    @property
    def out_elems(self) -> int:
        return self.vectors * self.channels

    @property
    def out_beat(self) -> int:
        return self.pe

    @property
    def cycles(self) -> int:
        return self.out_elems // self.pe

    @property
    def buffer_elems(self) -> int:
        """A skid register and a beat-width converter per input (up to a vector each) and the output register."""
        return 4 * self.channels + self.pe

    def run(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return reference.add_streams(a, b)


@dataclass(frozen=True, eq=False)
class ConcatLayer:
    """Per vector, the ``channels[k]`` elements of each input stream k in turn, ``simd`` elements a beat."""

    name: str
    channels: tuple[int, ...]
    simd: int
    vectors: int
    in_types: tuple[ElemType, ...]

    @property
    def in_type(self) -> ElemType:
        return self.in_types[0]

    @property
    def out_type(self) -> ElemType:
        return union_type(self.in_types)

    @property
    def in_elems_per_port(self) -> tuple[int, ...]:
        return tuple(self.vectors * c for c in self.channels)

    @property
    def in_elems(self) -> int:
        return sum(self.in_elems_per_port)

    @property
    def out_elems(self) -> int:
        return self.in_elems

    @property
    def out_beat(self) -> int:
        return self.simd

    @property
    def cycles(self) -> int:
        return self.out_elems // self.simd

    @property
    def buffer_elems(self) -> int:
        """A skid register and a beat-width converter per input (up to its channels each) and the output
        register."""
        return 2 * sum(self.channels) + self.simd

    @property
    def skew_elems(self) -> tuple[int, ...]:
        """The inputs are read one after the other: each must hold a vector while the others are read (the
        FIFO sizing of :mod:`hwq.rtl.fifo`)."""
        return self.channels

    def run(self, *xs: np.ndarray) -> np.ndarray:
        return reference.concat(xs, self.channels)


# --- reading FINN nodes --------------------------------------------------------------------------------------------
def _attrs(node) -> dict:
    """A node's attributes as Python values (AddStreams is not a registered op in finn-plus 1.6.1, so the
    attributes are read from the node itself rather than through ``getCustomOp``)."""
    return {a.name: (v.decode() if isinstance(v := helper.get_attribute_value(a), bytes) else
                     [x.decode() if isinstance(x, bytes) else x for x in v] if isinstance(v, list) else v)
            for a in node.attribute}


def _need(node, attrs: dict, *names: str) -> list:
    missing = [n for n in names if n not in attrs]
    if missing:
        raise UnsupportedLayerError(f"{node.name}: {node.op_type} without {', '.join(missing)}")
    return [attrs[n] for n in names]


def _divides(node, fold: str, fold_value: int, total: str, total_value: int) -> None:
    if fold_value < 1 or total_value % fold_value:
        raise UnsupportedLayerError(f"{node.name}: {fold}={fold_value} must divide {total}={total_value}")


def duplicate_layer(node) -> DuplicateLayer:
    """Read a ``DuplicateStreams`` node (hls)."""
    a = _attrs(node)
    channels, pe, idt = _need(node, a, "NumChannels", "PE", "inputDataType")
    _divides(node, "PE", pe, "NumChannels", channels)
    outputs = int(a.get("NumOutputStreams", len(node.output)))
    if outputs != len(node.output) or outputs < 2:
        raise UnsupportedLayerError(f"{node.name}: NumOutputStreams={outputs} with {len(node.output)} outputs")
    return DuplicateLayer(node.name, channels, pe, int(np.prod(a.get("numInputVectors", [1]))),
                          _elem_type(idt, node.name), outputs)


def _checked_add(node, channels, pe, vectors, in_types, out_type) -> AddLayer:
    _divides(node, "PE", pe, "NumChannels", channels)
    lo, hi = in_types[0].lo + in_types[1].lo, in_types[0].hi + in_types[1].hi
    if out_type.lo > lo or out_type.hi < hi:
        raise UnsupportedLayerError(f"{node.name}: the output type ({out_type.bits} bits) cannot hold the sums "
                                    f"{lo}..{hi}")
    return AddLayer(node.name, channels, pe, vectors, tuple(in_types), out_type)


def add_streams_layer(node) -> AddLayer:
    """Read an ``AddStreams`` node (upstream FINN; hls): the output type is FINN's, one bit more than the type
    holding both inputs (``outputDataType`` when the node has one)."""
    a = _attrs(node)
    channels, pe, idts = _need(node, a, "NumChannels", "PE", "inputDataTypes")
    if len(idts) != 2 or len(node.input) != 2:
        raise UnsupportedLayerError(f"{node.name}: AddStreams takes two streams")
    in_types = [_elem_type(t, node.name) for t in idts]
    if "outputDataType" in a:
        out_type = _elem_type(a["outputDataType"], node.name)
    else:   # AddStreams.get_output_datatype: one bit more than the type holding both inputs' ranges
        union = union_type(in_types)
        out_type = ElemType(union.bits + 1, union.signed)
    return _checked_add(node, channels, pe, int(np.prod(a.get("numInputVectors", [1]))), in_types, out_type)


def elementwise_add_layer(model, node) -> AddLayer:
    """Read an ``ElementwiseAdd`` node (finn-plus; hls or rtl) whose operands are two streams of one shape."""
    a = _attrs(node)
    shapes = _need(node, a, "lhs_shape", "rhs_shape", "out_shape")
    if a.get("lhs_style", "input") != "input" or a.get("rhs_style", "input") != "input" or any(
            model.get_initializer(t) is not None for t in node.input):
        raise UnsupportedLayerError(f"{node.name}: ElementwiseAdd with a constant operand has no Verilog block "
                                    "(only the sum of two streams, a residual add)")
    if not (list(shapes[0]) == list(shapes[1]) == list(shapes[2])):
        raise UnsupportedLayerError(f"{node.name}: ElementwiseAdd broadcasts ({list(shapes[0])} + "
                                    f"{list(shapes[1])}); only equal shapes are supported")
    *vecs, channels = [int(s) for s in shapes[2]]
    ldt, rdt, odt = _need(node, a, "lhs_dtype", "rhs_dtype", "out_dtype")
    in_types = [_elem_type(t, node.name) for t in (ldt, rdt)]
    return _checked_add(node, channels, int(a.get("PE", 1)), int(np.prod(vecs or [1])), in_types,
                        _elem_type(odt, node.name))


def concat_layer(node) -> ConcatLayer:
    """Read a ``StreamingConcat`` node (hls): SIMD must divide every stream's channels (as FINN requires)."""
    a = _attrs(node)
    channels, simd, idts = _need(node, a, "ChannelsPerStream", "SIMD", "inputDataTypes")
    if not (len(channels) == len(idts) == len(node.input) >= 2):
        raise UnsupportedLayerError(f"{node.name}: {len(node.input)} inputs, ChannelsPerStream {list(channels)}, "
                                    f"inputDataTypes {list(idts)}")
    for c in channels:
        _divides(node, "SIMD", simd, "each of ChannelsPerStream", c)
    return ConcatLayer(node.name, tuple(int(c) for c in channels), simd, int(np.prod(a.get("numInputVectors", [1]))),
                       tuple(_elem_type(t, node.name) for t in idts))
