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


def correlation(cols: torch.Tensor) -> torch.Tensor:
    """``E[x x^T]`` per group from ``(G, n, S)`` samples."""
    return cols @ cols.transpose(1, 2) / cols.shape[-1]


def eigenbasis(corr: torch.Tensor, identity: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """``(U, lambda)``: orthonormal eigenvectors (columns) and eigenvalues of each group's correlation.

    With ``identity`` the basis is the standard one and ``lambda`` the diagonal (the no-transformation ablation).
    """
    n = corr.shape[-1]
    eye = torch.eye(n, dtype=corr.dtype, device=corr.device)
    if identity:
        return eye.expand_as(corr).clone(), torch.diagonal(corr, dim1=-2, dim2=-1).clone()
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


def weighted_binarization_error(w: torch.Tensor, u: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """Mean over groups and rows of ``(w - alpha b)^T U diag(s) U^T (w - alpha b)``.

    ``w``: ``(G, rows, n)``; ``u``: ``(G, n, n)``; ``s``: ``(G, n)``. ``b = sign(w)`` and the per-row scale
    ``alpha = w^T M b / b^T M b`` (the best scale under the metric ``M``; a BatchNorm follows every binary layer and
    absorbs it) are constants, so the gradient only moves ``w`` towards ``alpha b`` along the important directions.
    """
    b = binary_codes(w).detach()
    wu, bu = w @ u, b @ u                                  # coordinates in the transformed basis
    sw = s.unsqueeze(1)
    alpha = ((wu * sw * bu).sum(-1, keepdim=True) / (bu * sw * bu).sum(-1, keepdim=True).clamp_min(1e-12)).detach()
    ru = wu - alpha * bu
    return (sw * ru * ru).sum(-1).mean()
