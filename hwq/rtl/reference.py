# SPDX-License-Identifier: BSD-3-Clause
"""Integer-exact NumPy reference models of the hardware layers hwq generates Verilog for.

One place for the arithmetic of the HW layers: the generator's tests, the cocotb testbenches and the open build's
software run all call these functions. They follow finn-plus's own Python execution of the same nodes
(``MVAU.execute_node``, qonnx's ``multithreshold``, ``LabelSelect``'s ONNX TopK) and are checked against it in
``tests/test_rtl_reference.py``. Everything is ``int64``.

>>> import numpy as np
>>> xnor_popcount(np.array([[1, 0, 1]]), np.array([[1], [1], [1]]))
array([[2]])
>>> adder_distance(np.array([[1, -2]]), np.array([[1, 0], [-2, 3]]))
array([[ 0, -6]])
>>> thresholds(np.array([[5, -3]]), np.array([[0, 4], [-3, 9]]))
array([[2, 1]])
>>> label_select(np.array([[3, 9, 9, 1]]))
array([[1]])
>>> sliding_window(np.arange(4)[None], (2, 2), 1, (2, 1), (1, 1))     # a 2x2 image, 2x1 windows
array([[0, 2, 1, 3]])
>>> max_pool(np.array([[1, 5, 4, 2]]), channels=2, window=2)
array([[4, 5]])
>>> fm_padding(np.array([[1, 2]]), (1, 2), 1, (1, 0, 0, 1))            # a 1x2 image, one row on top, one column right
array([[0, 0, 0, 1, 2, 0]])
>>> global_acc_pool(np.array([[1, 2, 3, 4]]), channels=2)
array([[4, 6]])
>>> quant_avg_pool(np.array([[3, 1, 3, 2]]), channels=1, window=4, shift=2)
array([[2]])
>>> add_streams(np.array([[1, -2]]), np.array([[3, 3]]))
array([[4, 1]])
>>> concat([np.array([[1, 2, 3, 4]]), np.array([[9, 8]])], channels=(2, 1))    # two pixels
array([[1, 2, 9, 3, 4, 8]])
"""

from __future__ import annotations

import numpy as np

from hwq.classes import top_classes
from hwq.errors import VerificationError


def _ints(a, what: str) -> np.ndarray:
    if isinstance(a, ConstMatrix):
        return a.ints
    arr = np.asarray(a)
    if arr.dtype.kind in "iub":         # already integers: nothing to check
        return arr.astype(np.int64, copy=False)
    as_int = np.rint(arr).astype(np.int64)
    if not np.array_equal(as_int, arr):
        raise VerificationError(f"{what}: expected integer values")
    return as_int


def _is_bits(a: np.ndarray) -> bool:
    return a.size == 0 or (int(a.min()) >= 0 and int(a.max()) <= 1)


#: Largest integer magnitude below which float32 (2**24) and float64 (2**53) represent every integer exactly.
_EXACT_FLOAT = ((np.float32, 2 ** 24), (np.float64, 2 ** 53))


class ConstMatrix:
    """A constant integer matrix (a layer's weights), checked and prepared once rather than on every call: its
    int64 values, whether they are bits, its column sums, its largest magnitude and its floating-point copies.
    Every function here that takes weights takes one of these as well as an array.

    >>> w = ConstMatrix(np.array([[1, 0], [1, 1]]), "weights"); w.bits, w.col_sums.tolist(), w.max_abs
    (True, [2, 1], 1)
    """

    def __init__(self, values, what: str = "weights") -> None:
        self.ints = _ints(values, what)
        self.bits = _is_bits(self.ints)
        self.col_sums = self.ints.sum(axis=0)
        self.max_abs = int(np.abs(self.ints).max()) if self.ints.size else 0
        self._floats: dict = {}

    @property
    def shape(self) -> tuple[int, ...]:
        return self.ints.shape

    def xnor_stack(self) -> np.ndarray:
        """``[w; 1 - w]`` in float32, for :func:`xnor_popcount`."""
        if "xnor" not in self._floats:
            self._floats["xnor"] = np.concatenate([self.ints, 1 - self.ints]).astype(np.float32)
        return self._floats["xnor"]

    def as_float(self, dtype) -> np.ndarray:
        if dtype not in self._floats:
            self._floats[dtype] = self.ints.astype(dtype)
        return self._floats[dtype]


def const_matrix(values, what: str = "weights") -> ConstMatrix:
    """``values`` as a :class:`ConstMatrix` (one already is returned as it is)."""
    return values if isinstance(values, ConstMatrix) else ConstMatrix(values, what)


def exact_int_matmul(a: np.ndarray, b) -> np.ndarray:
    """``a @ b`` of integer matrices (``b`` an array or a :class:`ConstMatrix`), computed by BLAS in floating point
    where that is exact, else by NumPy's integer product (no BLAS, many times slower).

    Exact because every product and every partial sum is an integer below ``max|a| * max|b| * K``: when that bound
    is below 2**24 (float32) or 2**53 (float64), every intermediate is representable, so the result is the same
    integer whatever order or thread count the BLAS sums in (no machine-dependent rounding).

    >>> exact_int_matmul(np.array([[3, -1]]), np.array([[2], [5]]))
    array([[1]])
    >>> exact_int_matmul(np.array([[2 ** 40]]), np.array([[2 ** 20]]))      # past 2**53: NumPy's integer product
    array([[1152921504606846976]])
    """
    b = const_matrix(b)
    if a.size == 0 or b.ints.size == 0:
        return np.zeros((a.shape[0], b.shape[1]), dtype=np.int64)
    bound = int(np.abs(a).max()) * b.max_abs * a.shape[1]
    for dtype, limit in _EXACT_FLOAT:
        if bound < limit:
            return (a.astype(dtype) @ b.as_float(dtype)).astype(np.int64)
    return a @ b.ints


def xnor_popcount(x, w) -> np.ndarray:
    """Binary MVAU (``binaryXnorMode``): ``out[n, j] = #{i : x[n, i] == w[i, j]}`` for bits x (N, MW), w (MW, MH).

    For bits, ``[x == w] = x w + (1 - x)(1 - w)``, so the count is the product of ``[x, 1 - x]`` (N, 2 MW) with
    ``[w; 1 - w]`` (2 MW, MH): one matrix product instead of an (N, MW, MH) comparison, the same integers (values
    other than bits take the comparison).
    """
    x, w = _ints(x, "xnor input"), const_matrix(w, "xnor weights")
    if not (w.bits and _is_bits(x)):
        return (x[:, :, None] == w.ints[None, :, :]).sum(axis=1).astype(np.int64)
    # one product of [x, 1 - x] with [w; 1 - w]: 0/1 terms summing to at most MW, exact in float32 below 2**24
    if x.shape[1] >= _EXACT_FLOAT[0][1]:
        return x.shape[1] - x.sum(axis=1)[:, None] - w.col_sums[None, :] + 2 * exact_int_matmul(x, w)
    stacked = np.concatenate([x, 1 - x], axis=1).astype(np.float32)
    return (stacked @ w.xnor_stack()).astype(np.int64)


def matmul(x, w) -> np.ndarray:
    """Quantized MVAU: the integer product ``x @ w`` for x (N, MW), w (MW, MH)."""
    return exact_int_matmul(_ints(x, "MVAU input"), const_matrix(w, "MVAU weights"))


def weight_planes(x, planes, basis) -> np.ndarray:
    """An MVAU in binary weight planes (``hwq.rtl.planes``): ``sum_k basis[:, k] * (x @ (2 * planes[k] - 1))``, the
    K bipolar dot products scaled by each column's basis, for x (N, MW), planes (K, MW, MH) bits, basis (MH, K).
    It equals :func:`matmul` with the weights the planes stand for.

    >>> planes = np.array([[[1], [0]], [[1], [1]]])        # K=2 planes of a 2x1 matrix: (+1, -1) and (+1, +1)
    >>> weight_planes(np.array([[5, 7]]), planes, np.array([[1, 2]])), matmul([[5, 7]], [[3], [1]])
    (array([[22]]), array([[22]]))
    """
    x = _ints(x, "MVAU input")
    signs = 2 * _ints(planes, "weight planes") - 1
    basis = _ints(basis, "plane basis")
    return sum(basis[:, k] * exact_int_matmul(x, signs[k]) for k in range(len(signs)))


def adder_distance(x, w) -> np.ndarray:
    """Adder MVAU (AdderNet, ``hwq.quant.adder``): ``out[n, j] = -sum_i |x[n, i] - w[i, j]|`` for x (N, MW), w (MW, MH),
    both integers on one grid."""
    x, w = _ints(x, "adder input"), _ints(w, "adder weights")
    return -np.abs(x[:, :, None] - w[None, :, :]).sum(axis=1).astype(np.int64)


def integer_thresholds(thr) -> np.ndarray:
    """Thresholds for integer inputs: ``x >= t`` equals ``x >= ceil(t)`` when x is an integer.

    >>> integer_thresholds(np.array([[0.5, 2.0]]))
    array([[1, 2]])
    """
    thr = np.asarray(thr)
    if thr.dtype.kind in "iu":
        return thr.astype(np.int64, copy=False)
    return np.ceil(thr.astype(np.float64)).astype(np.int64)


def thresholds(acc, thr, act_val: int = 0) -> np.ndarray:
    """FINN's multithreshold on integers: ``out[n, c] = #{t : acc[n, c] >= thr[c, t]} + act_val``.

    ``thr`` is (C, T) or (1, T) (one set of thresholds for every channel), as in qonnx.
    """
    acc = _ints(acc, "threshold input")
    thr = integer_thresholds(thr)
    if thr.shape[0] not in (1, acc.shape[1]):
        raise VerificationError(f"thresholds: {thr.shape[0]} rows for {acc.shape[1]} channels")
    return (acc[:, :, None] >= thr[None, :, :]).sum(axis=2).astype(np.int64) + int(act_val)


def label_select(x, k: int = 1) -> np.ndarray:
    """Indices of the ``k`` largest values per row, largest first; ties go to the lower index (ONNX TopK). The top
    one is the class rule's (:func:`hwq.classes.top_classes`)."""
    x = _ints(x, "label select input")
    if k == 1:
        return top_classes(x)[:, None]
    order = np.argsort(-x, axis=1, kind="stable")
    return order[:, :k].astype(np.int64)


def mvau(x, w, thr=None, *, xnor: bool, act_val: int = 0, adder: bool = False, planes=None,
         plane_basis=None) -> np.ndarray:
    """One MVAU node: the (XNOR-popcount, integer, adder or weight-plane) product, then thresholds unless ``thr``
    is None. ``planes`` / ``plane_basis``: compute the integer product from the planes (:func:`weight_planes`)."""
    if planes is not None:
        acc = weight_planes(x, planes, plane_basis)
    else:
        acc = adder_distance(x, w) if adder else xnor_popcount(x, w) if xnor else matmul(x, w)
    return acc if thr is None else thresholds(acc, thr, act_val)


def sliding_window(x, ifm_dim, channels: int, kernel, stride) -> np.ndarray:
    """FINN's ConvolutionInputGenerator (qonnx ``Im2Col``, no padding, dilation 1) on rows of NHWC images.

    ``x`` is (N, H*W*C); the result is (N, OH*OW*KH*KW*C): the windows in raster order, each window's elements
    in (ky, kx, c) order, which is the row order of the following MVAU's weights. Depthwise generators give the
    same tensor (only finn's hardware stream order differs).
    """
    x = _ints(x, "sliding window input")
    (h, w), (kh, kw), (sh, sw) = ifm_dim, kernel, stride
    img = x.reshape(-1, h, w, channels)
    oh, ow = (h - kh) // sh + 1, (w - kw) // sw + 1
    out = np.empty((len(img), oh, ow, kh, kw, channels), dtype=np.int64)
    for ky in range(kh):
        for kx in range(kw):
            out[:, :, :, ky, kx, :] = img[:, ky:ky + sh * (oh - 1) + 1:sh, kx:kx + sw * (ow - 1) + 1:sw, :]
    return out.reshape(len(img), -1)


def max_pool(x, channels: int, window: int) -> np.ndarray:
    """FINN's ``Pool`` with ``Function=MaxPool``: per window of ``window`` pixels (from a sliding window generator,
    (k, c) order), the maximum of each channel. ``x`` is (N, V*window*C), the result (N, V*C)."""
    x = _ints(x, "max pool input")
    return x.reshape(len(x), -1, window, channels).max(axis=2).reshape(len(x), -1)


def fm_padding(x, ifm_dim, channels: int, padding) -> np.ndarray:
    """FINN's ``FMPadding``: zeros around rows of NHWC images; ``padding`` is FINN's ``[top, left, bottom, right]``.

    ``x`` is (N, H*W*C), the result (N, (H+top+bottom)*(W+left+right)*C). The pad value is the number 0; on a 1-bit
    (0/1) stream that encodes bipolar values, 0 is -1 (``docs/dataflow.md``, "Binary MobileNet").
    """
    x = _ints(x, "padding input")
    (h, w), (top, left, bottom, right) = ifm_dim, padding
    img = x.reshape(-1, h, w, channels)
    return np.pad(img, ((0, 0), (top, bottom), (left, right), (0, 0))).reshape(len(img), -1)


def global_acc_pool(x, channels: int) -> np.ndarray:
    """FINN's ``GlobalAccPool``: per image the sum of every pixel, per channel (the 1/N of an average is left to
    the next layer's thresholds). ``x`` is (N, P*C), the result (N, C)."""
    x = _ints(x, "global pool input")
    return x.reshape(len(x), -1, channels).sum(axis=1)


def quant_avg_pool_shift(in_bits: int, out_bits: int, window: int) -> int:
    """The right shift of FINN's QuantAvgPool (qonnx ``QuantAvgPool2d.get_shifts``, finn ``Pool.execute_node``): the
    bits of the largest unsigned ``in_bits`` sum over ``window`` values, less ``out_bits``, at least 0. It is
    computed from the unsigned maximum also for signed inputs, as both do.

    >>> quant_avg_pool_shift(4, 4, 4)          # 15 * 4 = 60 needs 6 bits
    2
    """
    return max(0, int(((1 << in_bits) - 1) * window).bit_length() - out_bits)


def quant_avg_pool(x, channels: int, window: int, shift: int) -> np.ndarray:
    """FINN's ``Pool`` with ``Function=QuantAvgPool`` (Brevitas' TruncAvgPool2d): per window of ``window`` pixels
    ((k, c) order, from a sliding window generator), the sum of each channel shifted right by ``shift`` (an
    arithmetic shift, i.e. rounding towards minus infinity, as NumPy's ``right_shift`` and ``ap_int``'s ``>>``).
    ``x`` is (N, V*window*C), the result (N, V*C)."""
    x = _ints(x, "average pool input")
    return np.right_shift(x.reshape(len(x), -1, window, channels).sum(axis=2), shift).reshape(len(x), -1)
def duplicate(x, n: int = 2) -> tuple[np.ndarray, ...]:
    """FINN's DuplicateStreams: ``n`` copies of the stream."""
    x = _ints(x, "duplicate input")
    return tuple(x.copy() for _ in range(n))


def add_streams(a, b) -> np.ndarray:
    """FINN's AddStreams / ElementwiseAdd of two streams: the elementwise integer sum (the output type holds it)."""
    return _ints(a, "add input 0") + _ints(b, "add input 1")


def concat(xs, channels) -> np.ndarray:
    """FINN's StreamingConcat (channel axis): per vector, ``channels[k]`` elements of each input k in turn.
    Each ``xs[k]`` is (N, V*channels[k]); the result (N, V*sum(channels))."""
    parts = [_ints(x, f"concat input {k}") for k, x in enumerate(xs)]
    n = len(parts[0])
    return np.concatenate([p.reshape(n, -1, c) for p, c in zip(parts, channels)], axis=2).reshape(n, -1)
