# SPDX-License-Identifier: BSD-3-Clause
"""BiTAT's per-layer transformation as plain tensor functions (no layers, no Brevitas).

A layer's weights are viewed as ``G`` groups (``G = 1`` for dense layers and ordinary convolutions, ``G = C`` for
a depthwise convolution) of ``rows x n`` matrices acting on input vectors (or conv patches) ``x`` in ``R^n``.
For every group the layer keeps the input correlation ``C = E[x x^T]``; its eigenvectors ``U`` are an orthonormal
basis in which the output error of a weight perturbation separates exactly::

    E || (W - Wq) x ||^2 = sum_j lambda_j || ((W - Wq) U)[:, j] ||^2

The importance-weighted binarization error replaces ``lambda`` by a trained importance vector ``s``:

>>> import torch
>>> w = torch.tensor([[[0.5, -0.2]]])                  # one group, one row, n = 2
>>> u, s = torch.eye(2).expand(1, 2, 2), torch.ones(1, 2)
>>> round(float(weighted_binarization_error(w, u, s)), 4)  # alpha = 0.35: (0.15^2 + 0.15^2)
0.045
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

#: Added to the correlation's diagonal before the eigendecomposition, so a dead input (all zeros) still has a
#: well-defined eigenvector instead of a degenerate, numerically noisy eigenspace.
EIG_JITTER = 1e-6


def patches(x: torch.Tensor, groups: int, kernel_size: tuple[int, int] | None = None,
            stride: int | tuple = 1, padding: int | tuple = 0, dilation: int | tuple = 1,
            max_samples: int = 1024) -> torch.Tensor:
    """The layer's input vectors as ``(G, n, S)``: flattened inputs (dense) or unfolded patches (conv).

    At most ``max_samples`` vectors are kept (evenly strided), since the correlation is a running average and a
    subsample of every batch estimates it well at a fraction of the cost of unfolding whole feature maps.
    """
    if kernel_size is None:
        cols = x.reshape(-1, x.shape[-1]).t()  # (n, S)
        cols = cols[:, :: max(1, cols.shape[1] // max_samples)][:, :max_samples]
        return cols.unsqueeze(0)
    # Keep only as many whole images as the sample needs: unfolding 3x3 patches multiplies memory by 9.
    n_img = max(1, min(x.shape[0], -(-max_samples // max(1, x.shape[-1] * x.shape[-2]))))
    x = x[:n_img].contiguous()
    if tuple(kernel_size) == (1, 1) and _pair(stride) == (1, 1) and _pair(padding) == (0, 0):
        cols = x.flatten(2)  # a pointwise conv's patches are the pixels' channel vectors
    else:
        cols = F.unfold(x, kernel_size, dilation=dilation, padding=padding, stride=stride)  # (N, Cin*k*k, L)
    cols = cols.permute(1, 0, 2).reshape(cols.shape[1], -1)
    cols = cols[:, :: max(1, cols.shape[1] // max_samples)][:, :max_samples]
    return cols.reshape(groups, cols.shape[0] // groups, cols.shape[1])


def _pair(v: int | tuple) -> tuple[int, int]:
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


def correlation(cols: torch.Tensor, diagonal: bool = False) -> torch.Tensor:
    """``E[x x^T]`` per group from ``(G, n, S)`` samples: ``(G, n, n)``, or its diagonal ``(G, n)``."""
    if diagonal:
        return (cols * cols).mean(-1)
    return cols @ cols.transpose(1, 2) / cols.shape[-1]


def eigenbasis(corr: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(U, lambda)``: orthonormal eigenvectors (columns) and eigenvalues of each group's correlation."""
    n = corr.shape[-1]
    eye = torch.eye(n, dtype=corr.dtype, device=corr.device)
    sym = 0.5 * (corr + corr.transpose(1, 2)) + EIG_JITTER * eye
    # eigh in float64: float32 eigenvectors of nearly degenerate correlations drift from orthonormality.
    lam, u = torch.linalg.eigh(sym.double())
    return u.to(corr.dtype), lam.to(corr.dtype)


def cayley(raw: torch.Tensor) -> torch.Tensor:
    """The orthonormal ``(I - A)^-1 (I + A)`` of the skew-symmetric ``A = (raw - raw^T) / 2`` (``raw`` = 0: I)."""
    a = 0.5 * (raw - raw.transpose(-1, -2))
    eye = torch.eye(raw.shape[-1], dtype=raw.dtype, device=raw.device).expand_as(raw)
    return torch.linalg.solve(eye - a, eye + a)


def orthonormality_error(u: torch.Tensor) -> float:
    """``max |U^T U - I|`` over all groups."""
    eye = torch.eye(u.shape[-1], dtype=u.dtype, device=u.device)
    return float((u.transpose(-1, -2) @ u - eye).abs().max())


def importance_from_eigenvalues(lam: torch.Tensor, power: float, floor: float, ceil: float) -> torch.Tensor:
    """The initial importance: ``lambda ** power`` scaled to mean 1 per group and clamped to ``[floor, ceil]``.

    ``power < 1`` tempers the eigenvalue spread (the top eigenvalue of raw pixels is orders of magnitude above the
    rest; importance that extreme would ignore every other direction).
    """
    s = lam.clamp_min(0.0) ** power
    s = s / s.mean(-1, keepdim=True).clamp_min(1e-12)
    s = s.clamp(floor, ceil)
    return s / s.mean(-1, keepdim=True)


def normalized_importance(raw: torch.Tensor) -> torch.Tensor:
    """``softplus(raw)`` scaled to mean 1 per group: only the relative importance of directions matters."""
    s = F.softplus(raw)
    return s / s.mean(-1, keepdim=True)


def inverse_softplus(s: torch.Tensor) -> torch.Tensor:
    """``raw`` with ``softplus(raw) = s`` (for ``s > 0``)."""
    return s + torch.log(-torch.expm1(-s))


def binary_codes(w: torch.Tensor) -> torch.Tensor:
    """``sign(w)`` with ``sign(0) = +1``, as Brevitas' binary quantizer computes it."""
    return torch.where(w >= 0, torch.ones_like(w), -torch.ones_like(w))


def weighted_binarization_error(w: torch.Tensor, u: torch.Tensor | None, s: torch.Tensor) -> torch.Tensor:
    """Mean over groups and rows of ``(w - alpha b)^T U diag(s) U^T (w - alpha b)`` with ``b = sign(w)``.

    ``w``: ``(G, rows, n)``; ``u``: ``(G, n, n)``; ``s``: ``(G, n)``. ``b`` and the per-row scale
    ``alpha = w^T M b / b^T M b`` (the best scale under the metric ``M``; a BatchNorm follows every binary layer and
    absorbs it) are constants, so the gradient only moves ``w`` towards ``alpha b`` along the important directions.
    """
    return weighted_code_error(w, binary_codes(w), u, s)


def apply_metric(w: torch.Tensor, u: torch.Tensor | None, s: torch.Tensor) -> torch.Tensor:
    """``w U diag(s) U^T`` per group; ``u = None`` stands for ``U = I`` (the coordinate basis), computed as
    ``w * s`` without the two ``n x n`` products."""
    if u is None:
        return w * s.unsqueeze(1)
    return ((w @ u) * s.unsqueeze(1)) @ u.transpose(1, 2)


def weighted_code_error(w: torch.Tensor, b: torch.Tensor, u: torch.Tensor | None, s: torch.Tensor) -> torch.Tensor:
    """:func:`weighted_binarization_error` for given codes ``b`` (``+-1``, same shape as ``w``); ``u = None`` is
    the coordinate basis."""
    b = b.detach()
    wu, bu = (w, b) if u is None else (w @ u, b @ u)       # coordinates in the transformed basis
    sw = s.unsqueeze(1)
    alpha = ((wu * sw * bu).sum(-1, keepdim=True) / (bu * sw * bu).sum(-1, keepdim=True).clamp_min(1e-12)).detach()
    ru = wu - alpha * bu
    return (sw * ru * ru).sum(-1).mean()


def importance_aware_codes(w: torch.Tensor, u: torch.Tensor | None, s: torch.Tensor,
                           damp: float = 0.01) -> torch.Tensor:
    """Binary codes chosen to keep the importance-weighted error ``(w - alpha b)^T M (w - alpha b)`` small,
    ``M = U diag(s) U^T``: GPTQ's error feedback (Frantar et al., 2023) on the binary grid ``{-alpha, +alpha}``.

    Columns are binarized one at a time, the most important first (largest ``M_ii``); each column's error is spread
    over the columns not yet binarized through the Cholesky factor of ``M^-1``, so a weight whose sign matters
    little on its own may flip to compensate for its neighbours. ``alpha`` = mean ``|w|`` per row; ``damp`` times
    the mean of ``diag(M)`` is added to the diagonal (``M`` may be near singular). With ``M = I`` (no importance)
    nothing is compensated and the codes are ``sign(w)``.

    ``w``: ``(G, rows, n)``, ``u``: ``(G, n, n)`` or ``None`` (the coordinate basis: ``M`` is diagonal, so no
    column compensates another and the codes are ``sign(w)``), ``s``: ``(G, n)``; returns ``+-1`` codes.
    """
    if u is None:
        return binary_codes(w)
    g, rows, n = w.shape
    w64, m = w.double(), (u.double() * s.double().unsqueeze(1)) @ u.double().transpose(1, 2)
    order = torch.argsort(torch.diagonal(m, dim1=1, dim2=2), dim=-1, descending=True)
    m = torch.gather(torch.gather(m, 1, order.unsqueeze(-1).expand(g, n, n)), 2, order.unsqueeze(1).expand(g, n, n))
    work = torch.gather(w64, 2, order.unsqueeze(1).expand(g, rows, n)).clone()
    eye = torch.eye(n, dtype=m.dtype, device=m.device)
    m = m + damp * torch.diagonal(m, dim1=1, dim2=2).mean(-1)[:, None, None] * eye
    chol = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(m)), upper=True)
    alpha = w64.abs().mean(-1)                                # (G, rows)
    codes = torch.empty_like(work)
    for i in range(n):
        b = binary_codes(work[:, :, i])
        codes[:, :, i] = b
        err = (work[:, :, i] - alpha * b) / chol[:, i, i].unsqueeze(-1)
        work[:, :, i + 1:] -= err.unsqueeze(-1) * chol[:, i, i + 1:].unsqueeze(1)
    out = torch.empty_like(codes)
    out.scatter_(2, order.unsqueeze(1).expand(g, rows, n), codes)
    return out.to(w.dtype)
