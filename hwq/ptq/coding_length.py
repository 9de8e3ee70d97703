# SPDX-License-Identifier: BSD-3-Clause
"""Mixed precision from the lossy coding length (Ma et al. 2007, as Attention Round uses it to give layers bits).

The coding length of ``m`` vectors of dimension ``n`` (the columns of ``X``, ``n x m``) at distortion ``eps`` is
``L = (m + n) / 2 * log2 det(I + n / (eps^2 m) X X^T)``: the bits needed to code them up to ``eps``. A layer's weight
(``out x in...``) gives ``m = out`` vectors (one per output channel) of ``n = in...`` values; ``eps`` is relative to
the weight's RMS, so the measure compares the *shape* of layers' weights, not their magnitude.

Allocation rule (the paper gives the measure, not the rule; this one is ours, see docs/mixed_precision.md): each
layer starts at the lowest bits; then, while the budget of ``budget_bits`` average bits per weight allows, the layer
with the largest ``(L / weights) * 4^-bits`` gets one more bit. ``4^-bits`` is how a uniform quantizer's squared
error falls with each bit, so this is greedy reverse water-filling with the coding length per weight as each
layer's importance: a layer whose weights take more bits to code gets more bits.

>>> import torch
>>> torch.manual_seed(0) and None
>>> rich, poor = torch.randn(16, 16), torch.randn(16, 1) @ torch.randn(1, 16)   # full rank vs rank 1
>>> coding_length(rich) > coding_length(poor)
True
>>> allocate_bits({"rich": rich, "poor": poor}, budget_bits=3.0)
{'rich': 4, 'poor': 2}
"""

from __future__ import annotations

import math
from typing import Mapping

import torch

from hwq.ptq.config import PTQ_MAX_BITS, PTQ_MIN_BITS


def coding_length(weight: torch.Tensor, eps: float = 0.5) -> float:
    """Ma et al.'s lossy coding length (bits) of ``weight``'s output channels, ``eps`` relative to its RMS."""
    x = weight.detach().reshape(weight.shape[0], -1).to(torch.float64).T  # n x m: one column per output channel
    n, m = x.shape
    rms = float(x.pow(2).mean().sqrt())
    if rms == 0.0:
        return 0.0
    x = x / rms
    # det(I_n + c X X^T) = det(I_m + c X^T X): the smaller Gram matrix gives the same value.
    gram = x.T @ x if m <= n else x @ x.T
    c = n / (eps * eps * m)
    _, logdet = torch.linalg.slogdet(torch.eye(gram.shape[0], dtype=gram.dtype) + c * gram)
    return float((m + n) / 2.0 * logdet / math.log(2.0))


def allocate_bits(
    weights: Mapping[str, torch.Tensor], budget_bits: float, eps: float = 0.5,
    min_bits: int = PTQ_MIN_BITS, max_bits: int = PTQ_MAX_BITS,
) -> dict[str, int]:
    """Layer name -> weight bits whose average over all weights stays within ``budget_bits`` (module docstring)."""
    sizes = {name: w.numel() for name, w in weights.items()}
    per_weight = {name: coding_length(w, eps) / sizes[name] for name, w in weights.items()}
    return allocate_by_importance(per_weight, sizes, budget_bits, min_bits, max_bits)


def allocate_by_importance(
    importance: Mapping[str, float], sizes: Mapping[str, int], budget_bits: float,
    min_bits: int = PTQ_MIN_BITS, max_bits: int = PTQ_MAX_BITS,
) -> dict[str, int]:
    """The greedy rule of the module docstring on given importances (ties: the layer named first)."""
    bits = {name: min_bits for name in importance}
    allowed = budget_bits * sum(sizes.values())
    spent = min_bits * sum(sizes.values())
    while True:
        open_layers = [n for n in importance if bits[n] < max_bits and spent + sizes[n] <= allowed + 1e-9]
        if not open_layers:
            return bits
        best = max(open_layers, key=lambda n: importance[n] * 4.0 ** -bits[n])
        bits[best] += 1
        spent += sizes[best]
