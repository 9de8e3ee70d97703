# SPDX-License-Identifier: BSD-3-Clause
"""A batch norm with one scalar mean, variance, weight and bias for the whole tensor.

FINN's reference networks end with it: a single positive scale and offset never change which class
scores highest, so FINN absorbs it into the final label selection (TopK).
"""

from __future__ import annotations

import torch
from torch import nn


class TensorNorm(nn.Module):
    def __init__(self, eps: float = 1e-4, momentum: float = 0.1) -> None:
        super().__init__()
        self.eps = eps
        self.momentum = momentum
        self.weight = nn.Parameter(torch.ones(1))
        self.bias = nn.Parameter(torch.zeros(1))
        self.register_buffer("running_mean", torch.zeros(1))
        self.register_buffer("running_var", torch.ones(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            mean = x.mean()
            var = x.var(unbiased=False)
            with torch.no_grad():
                self.running_mean.mul_(1 - self.momentum).add_(self.momentum * mean)
                self.running_var.mul_(1 - self.momentum).add_(self.momentum * x.var(unbiased=True))
        else:
            mean, var = self.running_mean, self.running_var
        return (x - mean) / torch.sqrt(var + self.eps) * self.weight + self.bias
