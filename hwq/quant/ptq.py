# SPDX-License-Identifier: BSD-3-Clause
"""Post-training quantization of weights: per-tensor round-to-nearest on a symmetric grid.

The simplest PTQ, to compare how trained float networks survive weight quantization (HERO's claim): each weight
tensor ``w`` (a layer's matrix or kernel, two or more dimensions) becomes ``round(w / s) * s`` with
``s = max|w| / (2^(bits-1) - 1)``, the narrow signed grid hwq's uniform weights use. Activations are untouched.

>>> import torch
>>> round_to_nearest(torch.tensor([[3.0, -1.2, 0.4, -2.6]]), bits=3).tolist()  # step 3 / (2^2 - 1) = 1
[[3.0, -1.0, 0.0, -3.0]]
"""

from __future__ import annotations

import copy

import torch
from torch import nn


def round_to_nearest(weight: torch.Tensor, bits: int) -> torch.Tensor:
    """``weight`` on the narrow signed ``bits``-bit grid scaled to its largest magnitude."""
    levels = 2 ** (bits - 1) - 1
    scale = weight.abs().max() / levels
    if scale == 0:
        return weight.clone()
    return torch.round(weight / scale).clamp(-levels, levels) * scale


def quantize_weights(model: nn.Module, bits: int) -> nn.Module:
    """A copy of ``model`` whose weight tensors are rounded to ``bits`` bits (:func:`round_to_nearest`)."""
    quantized = copy.deepcopy(model)
    with torch.no_grad():
        for param in quantized.parameters():
            if param.dim() > 1:
                param.copy_(round_to_nearest(param, bits))
    return quantized
