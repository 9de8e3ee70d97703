# SPDX-License-Identifier: BSD-3-Clause
"""FINN's fully connected reference networks: TFC, SFC and LFC (3 hidden layers of 64, 256, 1024).

Layout (Brevitas bnn_pynq ``FC``): 8-bit input quantizer, dropout, then per hidden layer
``linear -> BatchNorm1d -> activation quantizer -> dropout``, and a final ``linear -> TensorNorm``.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from hwq.models.tensor_norm import TensorNorm
from hwq.quant import UniformFamily


class FC(nn.Module):
    def __init__(
        self, family: UniformFamily, wbits: int, abits: int, image_shape: tuple[int, ...],
        hidden: tuple[int, ...], num_classes: int, dropout: float,
    ) -> None:
        super().__init__()
        in_features = math.prod(image_shape)
        #: The exported graph's input: FC networks take a flat vector, so the graph needs no reshape.
        self.input_shape = (in_features,)
        layers: list[nn.Module] = [family.input_quant(), nn.Dropout(dropout)]
        for width in hidden:
            layers += [
                family.linear(in_features, width, wbits),
                nn.BatchNorm1d(width),
                family.act(abits, width),
                nn.Dropout(dropout),
            ]
            in_features = width
        layers += [family.classifier(in_features, num_classes, wbits), TensorNorm()]
        self.features = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() > 2:  # images (N, C, H, W); a Python branch, so the exported graph stays flat
            x = x.flatten(1)
        return self.features(x)
