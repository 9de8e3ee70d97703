# SPDX-License-Identifier: BSD-3-Clause
"""FINN's CNV for CIFAR-10: six 3x3 convolutions (64, 64, 128, 128, 256, 256; max-pool after the 2nd and 4th,
no padding) and three fully connected layers (512, 512, classes), as in Brevitas' bnn_pynq ``CNV``.
"""

from __future__ import annotations

import torch
from torch import nn

from hwq.errors import ConfigError
from hwq.models.tensor_norm import TensorNorm
from hwq.quant import UniformFamily

CONV_CHANNELS_POOL = ((64, False), (64, True), (128, False), (128, True), (256, False), (256, False))
FC_WIDTHS = (512, 512)
KERNEL = 3


def cnv_feature_size(height: int) -> int:
    """Spatial size after the convolutions: each 3x3 conv trims 2, each pool halves."""
    for _, pool in CONV_CHANNELS_POOL:
        height -= KERNEL - 1
        if pool:
            height //= 2
    return height


class CNV(nn.Module):
    def __init__(
        self, family: UniformFamily, wbits: int, abits: int, image_shape: tuple[int, ...],
        num_classes: int, dropout: float,
    ) -> None:
        super().__init__()
        channels, height, width = image_shape
        if height != width or cnv_feature_size(height) != 1:
            raise ConfigError(
                f"model 'cnv' needs 32x32 images (its convolutions reduce them to 1x1); got {height}x{width}"
            )
        self.input_shape = tuple(image_shape)
        conv: list[nn.Module] = [family.input_quant()]
        for out_channels, pool in CONV_CHANNELS_POOL:
            conv += [
                family.conv2d(channels, out_channels, KERNEL, wbits),
                nn.BatchNorm2d(out_channels, eps=1e-4),
                family.act(abits, out_channels),
            ]
            if pool:
                conv.append(nn.MaxPool2d(2))
            channels = out_channels
        self.conv_features = nn.Sequential(*conv)
        fc: list[nn.Module] = []
        in_features = channels
        for width_out in FC_WIDTHS:
            fc += [
                family.linear(in_features, width_out, wbits),
                nn.BatchNorm1d(width_out, eps=1e-4),
                family.act(abits, width_out),
            ]
            if dropout:
                fc.append(nn.Dropout(dropout))
            in_features = width_out
        fc += [family.classifier(in_features, num_classes, wbits), TensorNorm()]
        self.linear_features = nn.Sequential(*fc)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear_features(torch.flatten(self.conv_features(x), 1))
