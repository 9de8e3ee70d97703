# SPDX-License-Identifier: BSD-3-Clause
"""Batch-norm re-estimation: the running statistics recomputed from training batches with the final weights.

Oscillating weights leave running statistics that were collected with other quantized weights than the final
ones (Nagel et al. 2022, section 3); re-estimating them is the paper's first remedy. As in its reference code, each
normalisation's statistics are its batch statistics (momentum 1) averaged over the batches, with everything else in
eval mode, so quantizers with a training behaviour (noise, oscillation tracking) run as deployed.
"""

from __future__ import annotations

import torch
from torch import nn


def _norms(model: nn.Module) -> list[nn.Module]:
    """The modules with running statistics: ``nn.BatchNorm*`` and hwq's ``TensorNorm``."""
    return [m for m in model.modules()
            if isinstance(getattr(m, "running_mean", None), torch.Tensor)
            and isinstance(getattr(m, "running_var", None), torch.Tensor) and hasattr(m, "momentum")]


@torch.no_grad()
def reestimate_bn(model: nn.Module, images: torch.Tensor, batch_size: int = 100, batches: int | None = None) -> int:
    """Replace every normalisation's running mean and variance by the average of its batch statistics over
    ``images`` (in ``batch_size`` batches, at most ``batches``); returns how many normalisations were re-estimated.
    The model's train/eval modes and the momenta are restored."""
    norms = _norms(model)
    modes = {m: m.training for m in model.modules()}
    momenta = {m: m.momentum for m in norms}
    sums = {m: [torch.zeros_like(m.running_mean), torch.zeros_like(m.running_var)] for m in norms}
    model.eval()
    for m in norms:
        m.train()
        m.momentum = 1.0
    seen = 0
    try:
        for start in range(0, len(images), batch_size):
            if batches is not None and seen == batches:
                break
            model(images[start:start + batch_size])
            for m in norms:
                sums[m][0] += m.running_mean
                sums[m][1] += m.running_var
            seen += 1
        for m in norms:
            if seen:
                m.running_mean.copy_(sums[m][0] / seen)
                m.running_var.copy_(sums[m][1] / seen)
    finally:
        for m in norms:
            m.momentum = momenta[m]
        for m, training in modes.items():
            m.training = training
    return len(norms)
