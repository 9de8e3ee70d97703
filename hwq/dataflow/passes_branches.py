# SPDX-License-Identifier: BSD-3-Clause
"""hwq's passes for average pools and branching graphs (residual adds, concatenations) in the FINN build.

Average pools (docs/dataflow.md, "Pools, residual adds, concatenations"):

- A float ``GlobalAveragePool`` (``nn.AdaptiveAvgPool2d(1)`` followed by a quantizer) becomes FINN's
  ``GlobalAccPool`` (the integer sum) during streamlining, so that its ``1/(H*W)`` Mul is streamlined into the
  next thresholds like any other scale (``finn_compat.streamline``); finn-plus 1.6.1 converts it only in
  ``convert_to_hw``, after streamlining, and leaves that Mul as a node no HW layer takes.
- Brevitas' ``TruncAvgPool2d`` exports ``AveragePool -> Trunc``, which finn-plus converts into its
  ``QuantAvgPool2d`` (a sum shifted right) and then into a ``Pool`` HW layer. Before that (on the QONNX graph):
  :class:`GlobalAveragePoolTruncToAveragePool` gives ``TruncAdaptiveAvgPool2d``'s ``GlobalAveragePool -> Trunc``
  the same form (an AveragePool over the whole map); :class:`NarrowWideningTrunc` rewrites a Trunc whose output
  is wider than its input (Brevitas' ``TruncTo8bit`` after a sum of fewer than 8 bits: a left shift, which
  finn-plus's conversion drops, so its pool came out 2^d too small) as the identity Trunc it equals; and
  :func:`check_pool_truncs` refuses, naming the user's node, what FINN's pool cannot compute: rounding (Brevitas'
  default ``RoundTo8bit``; FINN's pool shifts, i.e. FLOOR) and a sum that Brevitas clamps to the Trunc's input
  width (FINN's pool does not clamp).

Branching graphs: :func:`has_joins` says whether finn_compat's streamlining runs finn-plus's ``StreamlinePlus``,
which moves the quantizer scales of both inputs of a residual ``Add`` (or a ``Concat``) past the join into the
next thresholds; finn-plus's ``convert_to_hw`` then makes the fork a ``DuplicateStreams`` and the join an
``ElementwiseAdd`` (finn-plus 1.6.1 has no ``AddStreams``) or a ``StreamingConcat``.

>>> model = prepare_average_pools(model)   # doctest: +SKIP   (on the QONNX graph, before qonnx_to_finn)
"""

from __future__ import annotations

import numpy as np
from onnx import helper
from qonnx.core.datatype import DataType
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.custom_op.registry import getCustomOp
from qonnx.transformation.base import Transformation
from qonnx.util.basic import get_by_name

from hwq.dataflow.errors import MappingError
from hwq.dataflow.provenance import user_node

JOIN_OPS = ("Add", "Concat")
POOL_OPS = ("AveragePool", "GlobalAveragePool")
# Trunc (v2) inputs: x, scale, zero point, input bit width, output scale, output bit width.
_SCALE, _ZERO, _IN_BITS, _OUT_SCALE, _OUT_BITS = 1, 2, 3, 4, 5


def has_joins(model: ModelWrapper) -> bool:
    """True when a node joins two computed tensors (a residual Add, a Concat), not a tensor and a constant."""
    return any(n.op_type in JOIN_OPS and sum(model.get_initializer(i) is None for i in n.input) > 1
               for n in model.graph.node)


def _pool_truncs(model: ModelWrapper):
    """``(pool, trunc)`` for every average pool whose only consumer is a Trunc (Brevitas' TruncAvgPool2d and
    TruncAdaptiveAvgPool2d)."""
    for node in model.graph.node:
        if node.op_type in POOL_OPS:
            consumers = model.find_consumers(node.output[0]) or []
            if len(consumers) == 1 and consumers[0].op_type == "Trunc":
                yield node, consumers[0]


def _int(model: ModelWrapper, name: str) -> int:
    return int(np.asarray(model.get_initializer(name)).reshape(-1)[0])


def _int_range(bits: int, signed: bool, narrow: bool) -> tuple[int, int]:
    if signed:
        return -(2 ** (bits - 1)) + int(narrow), 2 ** (bits - 1) - 1
    return 0, 2 ** bits - 1 - int(narrow)


def _attr(node, name: str, default: int) -> int:
    attr = get_by_name(node.attribute, name)
    return default if attr is None else int(attr.i)


class GlobalAveragePoolTruncToAveragePool(Transformation):
    """``GlobalAveragePool -> Trunc`` on a square map becomes ``AveragePool(kernel = stride = the map) -> Trunc``,
    the same average, in the form finn-plus converts into its QuantAvgPool (node and tensor names are kept)."""

    def apply(self, model: ModelWrapper) -> tuple[ModelWrapper, bool]:
        for pool, trunc in list(_pool_truncs(model)):
            if pool.op_type != "GlobalAveragePool":
                continue
            shape = model.get_tensor_shape(pool.input[0])
            if shape is None or len(shape) != 4 or shape[2] != shape[3]:
                raise MappingError(f"node '{pool.name}' (GlobalAveragePool) before '{trunc.name}' (Trunc): FINN's "
                                   f"quantized average pool needs a square 2D map, got shape {shape}")
            size = int(shape[2])
            new = helper.make_node("AveragePool", [pool.input[0]], [pool.output[0]], name=pool.name,
                                   kernel_shape=[size, size], strides=[size, size], pads=[0, 0, 0, 0])
            index = list(model.graph.node).index(pool)
            model.graph.node.remove(pool)
            model.graph.node.insert(index, new)
        return model, False


class NarrowWideningTrunc(Transformation):
    """A Trunc after an average pool whose output is wider than its input (``d`` more bits) becomes the identity
    Trunc at the input width: exactly the same values.

    Brevitas' ``TruncTo8bit`` after a sum of ``b < 8`` bits multiplies the integer sum by ``2^d`` (``d = 8 - b``)
    and divides the scale by ``2^d``; the clamp to the 8-bit range is the clamp of the sum to its ``b``-bit range,
    and ``(y 2^d)(s 2^-d) = y s`` exactly in floating point (powers of two). finn-plus's
    ``AvgPoolAndTruncv2ToQuantAvgPool`` keeps the output scale but not the factor ``2^d``."""

    def apply(self, model: ModelWrapper) -> tuple[ModelWrapper, bool]:
        for _, trunc in list(_pool_truncs(model)):
            in_bits, out_bits = _int(model, trunc.input[_IN_BITS]), _int(model, trunc.input[_OUT_BITS])
            if out_bits <= in_bits:
                continue
            # new initializers: the old ones may be shared with another node
            bits = model.make_new_valueinfo_name()
            model.set_initializer(bits, np.asarray(float(in_bits), dtype=np.float32))
            scale = model.make_new_valueinfo_name()
            model.set_initializer(scale, np.asarray(model.get_initializer(trunc.input[_SCALE]), dtype=np.float32))
            trunc.input[_OUT_BITS] = bits
            trunc.input[_OUT_SCALE] = scale
        return model, False


def check_pool_truncs(model: ModelWrapper) -> None:
    """Refuse the quantized average pools FINN's Pool layer cannot compute exactly (a one-line MappingError
    naming the user's Trunc and pool): rounding (FINN shifts right: FLOOR), a non-zero zero point, and a sum
    that can leave the Trunc's input bit width (Brevitas clamps it there, FINN's pool does not)."""
    for pool, trunc in _pool_truncs(model):
        where = f"node '{trunc.name}' (Trunc) after '{pool.name}' ({pool.op_type})"
        mode_attr = get_by_name(trunc.attribute, "rounding_mode")
        mode = mode_attr.s.decode().upper() if mode_attr is not None else "FLOOR"
        if mode != "FLOOR":
            raise MappingError(f"{where} rounds ({mode}); FINN's average pool shifts the sum right (FLOOR): "
                               "quantize the pool with trunc_quant=TruncTo8bit (brevitas.quant.scaled_int)")
        if model.get_initializer(trunc.input[_ZERO]) is None or np.any(model.get_initializer(trunc.input[_ZERO])):
            raise MappingError(f"{where} has a non-zero zero point; FINN's average pool has none")
        producer = model.find_producer(pool.input[0])
        if producer is None or producer.op_type != "Quant":
            continue
        window = _window(model, pool)
        q_lo, q_hi = _int_range(_int(model, producer.input[3]), bool(_attr(producer, "signed", 1)),
                                bool(_attr(producer, "narrow", 0)))
        in_bits = _int(model, trunc.input[_IN_BITS])
        lo, hi = _int_range(in_bits, bool(_attr(trunc, "signed", 1)), bool(_attr(trunc, "narrow", 0)))
        if window * q_lo < lo or window * q_hi > hi:
            raise MappingError(
                f"{where}: the sum of {window} values in {q_lo}..{q_hi} ({window * q_lo}..{window * q_hi}) "
                f"exceeds the Trunc's {in_bits}-bit input range {lo}..{hi}, where Brevitas clamps it and FINN's "
                "pool does not; quantize the pool's input unsigned (e.g. after a ReLU) or with fewer bits")


def _window(model: ModelWrapper, pool) -> int:
    if pool.op_type == "GlobalAveragePool":
        return int(np.prod(model.get_tensor_shape(pool.input[0])[2:]))
    return int(np.prod(get_by_name(pool.attribute, "kernel_shape").ints))


def prepare_average_pools(model: ModelWrapper) -> ModelWrapper:
    """The QONNX-level passes above, in order: every pool's Trunc is checked, a TruncAdaptiveAvgPool2d becomes an
    AveragePool, and widening Truncs are narrowed to what they compute."""
    check_pool_truncs(model)
    model = model.transform(GlobalAveragePoolTruncToAveragePool())
    return model.transform(NarrowWideningTrunc())


class ClipThresholdsToInputRange(Transformation):
    """Clip a standalone Thresholding layer's thresholds to its integer input's range ``lo..hi+1`` (exact:
    ``x >= t`` is always true for ``t <= lo`` and never for ``t > hi``).

    A signed quantizer after an unsigned sum (an average pool of ReLU outputs) has thresholds below 0, and
    finn-plus's ``Thresholding.minimize_weight_bit_width`` asserts non-negative thresholds on an unsigned input
    before its ``RoundAndClipThresholds`` would clip them (finn_compat runs this pass first)."""

    def apply(self, model: ModelWrapper) -> tuple[ModelWrapper, bool]:
        for node in model.graph.node:
            if node.op_type.split("_")[0] != "Thresholding":
                continue
            idt = model.get_tensor_datatype(node.input[0])
            thresholds = model.get_initializer(node.input[1])
            if not idt.is_integer() or thresholds is None:
                continue
            clipped = np.clip(thresholds, idt.min(), idt.max() + 1).astype(np.float32)
            if np.any(clipped != thresholds):
                model.set_initializer(node.input[1], clipped)
        return model, False


class MakeQuantAvgPoolNHWC(Transformation):
    """``Transpose(0, 3, 1, 2) -> QuantAvgPool2d (NCHW)`` becomes ``QuantAvgPool2d (NHWC) -> Transpose(0, 3, 1, 2)``,
    the same values: a pool on a residual shortcut (ReActNet's strided shortcut) otherwise keeps the main path in
    NCHW, and StreamlinePlus's transpose movers cannot meet its Transposes across the adds and concats (finn-plus's
    ``MakeMaxPoolNHWC`` does this for MaxPool only). A Transpose that forks is left to ``MoveTransposePastFork``.
    """

    def apply(self, model: ModelWrapper) -> tuple[ModelWrapper, bool]:
        for node in list(model.graph.node):
            if node.op_type != "QuantAvgPool2d" or getCustomOp(node).get_nodeattr("data_layout") != "NCHW":
                continue
            transpose = model.find_producer(node.input[0])
            if transpose is None or transpose.op_type != "Transpose" or model.is_fork_node(transpose) \
                    or list(get_by_name(transpose.attribute, "perm").ints) != [0, 3, 1, 2]:
                continue
            batch, channels, height, width = model.get_tensor_shape(node.output[0])
            mid = model.make_new_valueinfo_name()
            model.set_tensor_shape(mid, [batch, height, width, channels])
            model.set_tensor_datatype(mid, model.get_tensor_datatype(node.output[0]))
            pooled, transposed = node.output[0], transpose.input[0]
            node.input[0], node.output[0] = transposed, mid
            transpose.input[0], transpose.output[0] = mid, pooled
            getCustomOp(node).set_nodeattr("data_layout", "NHWC")
            # keep the node list topologically sorted: the Transpose now follows the pool
            model.graph.node.remove(transpose)
            model.graph.node.insert(list(model.graph.node).index(node) + 1, transpose)
            return model, True
        return model, False


def streamline_plus_unrounded() -> Transformation:
    """finn-plus's ``StreamlinePlus`` without its final ``RoundAndClipThresholds`` (the minimize steps round and
    clip later), so that :class:`RoundHalfEvenAtTies` still sees the thresholds as streamlining computed them,
    with its ``MoveMulPastJoinAdd`` comparing per-channel constants without raising (finn_compat workaround 5), and
    with :class:`MakeQuantAvgPoolNHWC` among its transpose movers."""
    from finn.transformation.streamline.round_thresholds import RoundAndClipThresholds
    from finn.transformation.streamline.streamline_plus import StreamlinePlus
    from qonnx.transformation.composed import ComposedTransformation

    from finn.transformation.streamline.reorder import MoveIdenticalOpPastJoinOp, MoveMulPastJoinAdd

    class MoveEqualMulPastJoinAdd(MoveMulPastJoinAdd):
        """finn-plus's ``MoveMulPastJoinAdd``, comparing the two Muls' constants whole: its ``!=`` on per-channel
        constants (a batch norm's scale on one input of a residual add) raises "The truth value of an array with
        more than one element is ambiguous"."""

        def are_producers_identical(self, model, producers):
            if not MoveIdenticalOpPastJoinOp.are_producers_identical(self, model, producers):
                return False
            first = model.get_initializer(producers[0].input[1])
            return first is not None and all(
                np.array_equal(first, model.get_initializer(p.input[1])) for p in producers)

    def fixed(transformation):
        if isinstance(transformation, ComposedTransformation):
            inner = [fixed(t) for t in transformation.transformations]
            if any(type(t).__name__ == "AbsorbTransposeIntoMultiThreshold" for t in inner):
                inner.insert(0, MakeQuantAvgPoolNHWC())  # with the other transpose movers
            return ComposedTransformation(inner)
        return MoveEqualMulPastJoinAdd() if type(transformation) is MoveMulPastJoinAdd else transformation

    steps = StreamlinePlus().transformations
    assert isinstance(steps[-1], RoundAndClipThresholds), "finn-plus's StreamlinePlus changed: revisit hwq's copy"
    return ComposedTransformation([fixed(t) for t in steps[:-1]])


#: How close (relative) a streamlined threshold must be to an integer to be that integer's tie: a few float32
#: steps, what streamlining's products and quotients of scales leave (59.999996 for a tie at 60).
TIE_TOLERANCE = 1e-6


def _tie_tolerance(thresholds: np.ndarray, levels: np.ndarray) -> np.ndarray:
    """How far from an integer a threshold may be and still be a tie, in accumulator units: ``TIE_TOLERANCE``
    relative to the quantizer's value ``v = level + 1/2`` at that step (the reference's rule,
    :mod:`hwq.dataflow.round_ties`), times the thresholds' spacing (accumulator units per level of ``v``).

    Relative to the accumulator instead, a threshold 4 float32 ulps from 78 (``v`` = 4.50003 in the reference, not
    a tie) was taken for one and its level lost (reactnet_tiny, 7 of 1,280 values); one threshold per row (no
    spacing known) keeps that older rule."""
    t = thresholds.astype(np.float64)
    if t.shape[-1] < 2:
        return TIE_TOLERANCE * np.maximum(1.0, np.abs(np.rint(t)))
    spacing = np.abs(t[..., -1:] - t[..., :1]) / (t.shape[-1] - 1)
    return TIE_TOLERANCE * np.maximum(1.0, np.abs(levels + 0.5))[None, :] * spacing


class RoundHalfEvenAtTies(Transformation):
    """Round exact ties to even, as QONNX's ``Quant`` (``ROUND``, NumPy's and PyTorch's round) does.

    finn-plus turns a Quant into thresholds at the half steps ``(m + 1/2) s``, and ``x >= t`` rounds a tie up.
    After an average pool or a residual add whose scales are powers of two apart (an untrained network, or
    power-of-two quantizer scales), the streamlined thresholds on the integer sum are exact integers and a sum
    lands on them: a 2x2 pool of 2-bit values with equal scales before and after averages ``sum / 4``, and a sum
    of 2 is 0.5, which QONNX rounds to 0 and the thresholds to 1 (the gate failed on 26 of 128 values). For a
    MultiThreshold made from a user's ``ROUND`` Quant (:mod:`hwq.dataflow.provenance`) with an integer input, each
    threshold within :func:`_tie_tolerance` of an integer ``n`` is that tie: it becomes ``n + 1/2`` where it steps
    up from an even level (the tie rounds down; ``x >= n + 1/2`` is ``x > n`` for integers) and ``n`` where it
    steps up to an even level (the tie rounds up; 60.000004 would have excluded it). QONNX computes a tie with the
    same float rounding, so a threshold that close to an integer and not a tie is as likely to go either way in
    the reference. ``changed`` counts the thresholds moved."""

    def __init__(self, round_quants: set[str]) -> None:
        super().__init__()
        self.round_quants = set(round_quants)
        self.changed = 0

    @classmethod
    def for_user_graph(cls, user_model: ModelWrapper) -> "RoundHalfEvenAtTies":
        """The pass for the Quant nodes of ``user_model`` (the exported QONNX graph) that round half to even."""
        return cls({n.name for n in user_model.graph.node if n.op_type == "Quant"
                    and (get_by_name(n.attribute, "rounding_mode") is None
                         or get_by_name(n.attribute, "rounding_mode").s.decode().upper() == "ROUND")})

    def apply(self, model: ModelWrapper) -> tuple[ModelWrapper, bool]:
        for node in model.graph.node:
            origin = user_node(node)
            if node.op_type != "MultiThreshold" or origin is None or origin[1] != "Quant" \
                    or origin[0] not in self.round_quants:
                continue
            inst = getCustomOp(node)
            thresholds = model.get_initializer(node.input[1])
            odt = DataType[inst.get_nodeattr("out_dtype")]
            if thresholds is None or not model.get_tensor_datatype(node.input[0]).is_integer() \
                    or inst.get_nodeattr("out_scale") != 1.0 or odt.bitwidth() == 1:
                continue
            levels = inst.get_nodeattr("out_bias") + np.arange(thresholds.shape[-1])  # the level below each step
            if np.any(levels != np.rint(levels)):
                continue
            down = np.broadcast_to((np.rint(levels).astype(np.int64) % 2 == 0)[None, :], thresholds.shape)
            n = np.rint(thresholds.astype(np.float64))
            ties = np.abs(thresholds - n) <= _tie_tolerance(thresholds, levels)
            new = np.where(ties, np.where(down, n + 0.5, n), thresholds).astype(np.float32)
            moved = new != thresholds
            if moved.any():
                self.changed += int(moved.sum())
                model.set_initializer(node.input[1], new)
        return model, False
