# SPDX-License-Identifier: BSD-3-Clause
"""Batch augmentation on the device the batch lives on: random crop (zero padding) and horizontal flip."""

from __future__ import annotations

import torch
import torch.nn.functional as F

#: Datasets that are augmented unless the config says otherwise (natural images; digits are not flipped).
AUGMENTED_BY_DEFAULT = {"cifar10"}


def random_crop_flip(images: torch.Tensor, generator: torch.Generator, pad: int = 4) -> torch.Tensor:
    """CIFAR-style augmentation of ``(N, C, H, W)`` images; the same generator gives the same batch."""
    n, _, h, w = images.shape
    padded = F.pad(images, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator).tolist()
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator).tolist()
    flip = torch.rand(n, generator=generator).lt(0.5).tolist()
    out = torch.stack([padded[i, :, dy[i]:dy[i] + h, dx[i]:dx[i] + w] for i in range(n)])
    flip_idx = [i for i, f in enumerate(flip) if f]
    if flip_idx:
        out[flip_idx] = out[flip_idx].flip(-1)
    return out
