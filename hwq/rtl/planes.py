# SPDX-License-Identifier: BSD-3-Clause
"""Binary weight planes of an integer weight matrix: each column as a small integer basis times K sign planes.

LQ-Nets (``hwq.quant.lqnet``) trains weights ``s_j * m_j^T e`` with an integer basis ``m_j`` (K values per output
channel) and codes ``e`` in ``{-1, +1}^K``; the export carries only the integers ``m_j^T e``, and so does FINN's
folded graph that the open backend reads. :func:`plane_decomposition` recovers a basis and the planes from those
integers alone, so that any integer MVAU whose columns have this form can be built as K bipolar dot products
(add/subtract, or XNOR-popcount on bipolar inputs) scaled by the basis and summed (``hwq.rtl.blocks``,
``plane_mvau_verilog``). Exactly, for every column ``j``::

    W[:, j] == sum_k basis[j, k] * (2 * planes[k, :, j] - 1)

**How K and the bases are found.** Levels ``b^T e`` are symmetric and all have the parity of ``sum(b)``, so a
column is searched by the set ``A`` of its absolute values. For ``K = 1, 2, ...`` up to ``max_planes`` (4), a
column's candidate bases are the non-decreasing tuples of K non-negative integers whose sum, the top level, is the
column's largest ``|value|``, in lexicographic order; the first whose levels hold ``A`` is the column's. (A larger
top level never gave fewer planes in an exhaustive check of every subset of the levels of every basis of 2 or 3
values up to 8, the top level left out; searching larger sums would cost their number of candidates, ~S^3 for
K = 4.) The layer's K is the largest of its columns' fewest planes (one K for the whole block), and a column that
needs fewer planes gets zeros at the front of its basis (a plane it ignores). A column with values of both
parities, or more distinct magnitudes than ``2^(K-1)``, is no such sum, and a column whose candidates number more
than :data:`MAX_CANDIDATES` is not searched: the error names the layer and the column.

>>> w = np.array([[3, -1], [-1, 1], [1, -3]])
>>> form = plane_decomposition(w, "fc0")
>>> form.k, form.basis.tolist()
(2, [[1, 2], [1, 2]])
>>> bool(np.array_equal(form.weights(), w))
True
>>> try:
...     plane_decomposition(np.array([[0], [1]]), "fc1")
... except PlaneDecompositionError as err:
...     print(err)
fc1: column 0 (|values| 0, 1) is not a sum of at most 4 +-basis values (its values have both parities), so it has no binary weight planes
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from hwq.errors import ConfigError

#: The most planes searched: 4 planes cover up to 8 magnitudes per column (LQ-Nets' weights have at most 4 bits).
MAX_PLANES = 4
#: The most candidate bases searched per column and K (4 planes: a largest |value| up to about 520, where a
#: column that fits none takes a few seconds).
MAX_CANDIDATES = 1_000_000


class PlaneDecompositionError(ConfigError):
    """An integer weight column that is not a sum of K +-basis values for any K up to the limit."""


@dataclass(frozen=True, eq=False)
class PlaneForm:
    """K binary weight planes of an (MW, MH) integer matrix."""

    #: (MH, K) non-negative integers per output column, each row non-decreasing.
    basis: np.ndarray
    #: (K, MW, MH) bits: 1 stands for +1, 0 for -1.
    planes: np.ndarray

    @property
    def k(self) -> int:
        return int(self.basis.shape[1])

    def weights(self) -> np.ndarray:
        """The integer matrix the planes stand for."""
        return plane_weights(self.planes, self.basis)


def plane_weights(planes: np.ndarray, basis: np.ndarray) -> np.ndarray:
    """``sum_k basis[:, k] * (2 * planes[k] - 1)``: the (MW, MH) integers of planes (K, MW, MH), basis (MH, K)."""
    signs = 2 * np.asarray(planes, dtype=np.int64) - 1
    return np.einsum("kij,jk->ij", signs, np.asarray(basis, dtype=np.int64))


def _codes(k: int) -> np.ndarray:
    """All 2^K sign codes (2^K, K), in a fixed order (the first code found for a level is the one used)."""
    return np.array(list(itertools.product((1, -1), repeat=k)), dtype=np.int64)


def _partitions(k: int, total: int) -> int:
    """How many non-decreasing tuples of ``k`` non-negative integers sum to ``total`` (partitions into <= k parts:
    ``p(k, s) = p(k - 1, s) + p(k, s - k)``)."""
    p = [1] * (total + 1)                       # k = 1: one tuple for every sum
    for parts in range(2, k + 1):
        for s in range(parts, total + 1):
            p[s] += p[s - parts]
    return p[total]


def _bases(k: int, total: int) -> np.ndarray:
    """The non-decreasing tuples of ``k`` non-negative integers summing to ``total``, lexicographically: (n, k)."""
    if k == 1:
        return np.array([[total]], dtype=np.int64)
    if k == 2:
        first = np.arange(total // 2 + 1, dtype=np.int64)
        return np.stack([first, total - first], axis=1)
    rows = []
    for first in range(total // k + 1):     # the rest are >= first: shift a (k-1)-tuple of the remainder by it
        rest = _bases(k - 1, total - k * first) + first
        rows.append(np.hstack([np.full((len(rest), 1), first, dtype=np.int64), rest]))
    return np.vstack(rows)


@lru_cache(maxsize=4096)
def _column_basis(magnitudes: tuple[int, ...], k: int) -> tuple[int, ...] | None:
    """The first basis of ``k`` values (search order of the module docstring) whose levels hold ``magnitudes``
    (sorted distinct absolute values), or None."""
    top = magnitudes[-1]
    if (len(magnitudes) > 2 ** (k - 1) or len({m % 2 for m in magnitudes}) > 1
            or _partitions(k, top) > MAX_CANDIDATES):
        return None
    bases, codes, wanted = _bases(k, top), _codes(k), np.array(magnitudes)
    for start in range(0, len(bases), 100_000):         # in chunks: (n, 2^K) levels at a time
        chunk = bases[start:start + 100_000]
        levels = np.abs(chunk @ codes.T)
        holds = (levels[:, :, None] == wanted[None, None, :]).any(axis=1).all(axis=1)
        if holds.any():
            return tuple(int(v) for v in chunk[int(np.argmax(holds))])
    return None


def _fewest_planes(magnitudes: tuple[int, ...], max_planes: int) -> int | None:
    return next((k for k in range(1, max_planes + 1) if _column_basis(magnitudes, k) is not None), None)


def plane_decomposition(weights, name: str, max_planes: int = MAX_PLANES) -> PlaneForm:
    """The :class:`PlaneForm` of the (MW, MH) integer ``weights`` of layer ``name`` with the fewest planes (see the
    module docstring); a one-line :class:`PlaneDecompositionError` naming the layer and column otherwise."""
    w = np.asarray(weights)
    if w.ndim != 2 or not np.array_equal(w, np.rint(w)):
        raise PlaneDecompositionError(f"{name}: weights must be a 2-D integer matrix, got shape {w.shape}")
    w = w.astype(np.int64)
    columns = [tuple(sorted(set(np.abs(w[:, j]).tolist()))) for j in range(w.shape[1])]
    ks = []
    for j, mags in enumerate(columns):
        k = _fewest_planes(mags, max_planes)
        if k is None:
            why = ("its values have both parities" if len({m % 2 for m in mags}) > 1 else
                   f"{len(mags)} magnitudes" if len(mags) > 2 ** (max_planes - 1) else
                   f"largest |value| {mags[-1]} is beyond the search" if _partitions(max_planes, mags[-1]) >
                   MAX_CANDIDATES else "no basis fits")
            shown = ", ".join(map(str, mags[:8])) + (", ..." if len(mags) > 8 else "")
            raise PlaneDecompositionError(f"{name}: column {j} (|values| {shown}) is not a sum of at most "
                                          f"{max_planes} +-basis values ({why}), so it has no binary weight planes")
        ks.append(k)
    k = max(ks)
    basis = np.zeros((w.shape[1], k), dtype=np.int64)
    planes = np.zeros((k, *w.shape), dtype=np.uint8)
    for j, (mags, kj) in enumerate(zip(columns, ks)):
        b = np.array((0,) * (k - kj) + _column_basis(mags, kj), dtype=np.int64)
        basis[j] = b
        codes = _codes(k)
        code_of = {}
        for code in codes:             # the first code in _codes order for each level
            code_of.setdefault(int(code @ b), code)
        planes[:, :, j] = ((np.stack([code_of[int(v)] for v in w[:, j]]) + 1) // 2).T
    form = PlaneForm(basis, planes)
    assert np.array_equal(form.weights(), w)
    return form
