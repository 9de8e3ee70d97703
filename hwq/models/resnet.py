# SPDX-License-Identifier: BSD-3-Clause
"""ResNet-20 for CIFAR-10 (He et al. 2016, section 4.2), built from a quantizer family.

A 3x3 convolution with 16 channels, three stages of three basic blocks (16, 32, 64 channels; the first block of
stages 2 and 3 halves the resolution), global average pooling and a linear classifier, then FINN's TensorNorm.
A block is ``act(bn(conv(act(bn(conv(x))))) + shortcut(x))``: every convolution reads a quantized tensor (the
block input is the previous activation quantizer's output). Downsampling shortcuts are a quantized 1x1
convolution with batch norm (He's option B), so they stay ordinary matrix-vector layers for FINN.

>>> from hwq.models import ModelSpec, build_model
>>> model = build_model(ModelSpec("resnet20", wbits=2, abits=2, image_shape=(3, 32, 32)))
>>> model.input_shape
(3, 32, 32)
"""

from __future__ import annotations

import torch
from torch import nn

from hwq.errors import ConfigError
from hwq.models.registry import ModelSpec, register_model
from hwq.models.tensor_norm import TensorNorm
from hwq.options import RESNET_OPTIONS
from hwq.quant import UniformFamily

STAGES = ((16, 1), (32, 2), (64, 2))  # (channels, stride of the first block)
BLOCKS_PER_STAGE = 3  # 6n + 2 layers with n = 3: ResNet-20


class BasicBlock(nn.Module):
    def __init__(self, family: UniformFamily, in_channels: int, channels: int, stride: int, wbits: int,
                 abits: int) -> None:
        super().__init__()
        self.conv1 = family.conv2d(in_channels, channels, 3, wbits, stride=stride, padding=1)
        self.bn1 = nn.BatchNorm2d(channels)
        self.act1 = family.act(abits, channels)
        self.conv2 = family.conv2d(channels, channels, 3, wbits, padding=1)
        self.bn2 = nn.BatchNorm2d(channels)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != channels:
            self.shortcut = nn.Sequential(family.conv2d(in_channels, channels, 1, wbits, stride=stride),
                                          nn.BatchNorm2d(channels))
        self.act2 = family.act(abits, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(self.act1(self.bn1(self.conv1(x)))))
        return self.act2(out + self.shortcut(x))


class ResNet20(nn.Module):
    def __init__(self, family: UniformFamily, wbits: int, abits: int, image_shape: tuple[int, ...],
                 num_classes: int) -> None:
        super().__init__()
        channels, height, width = image_shape
        if height < 4 or width < 4:
            raise ConfigError(f"model 'resnet20' needs images of at least 4x4 (it downsamples twice); "
                              f"got {height}x{width}")
        self.input_shape = tuple(image_shape)
        first = STAGES[0][0]
        self.stem = nn.Sequential(
            family.input_quant(), family.conv2d(channels, first, 3, wbits, padding=1), nn.BatchNorm2d(first),
            family.act(abits, first),
        )
        blocks: list[nn.Module] = []
        in_channels = first
        for out_channels, stride in STAGES:
            for index in range(BLOCKS_PER_STAGE):
                blocks.append(BasicBlock(family, in_channels, out_channels, stride if index == 0 else 1, wbits,
                                         abits))
                in_channels = out_channels
        self.blocks = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(family.classifier(in_channels, num_classes, wbits), TensorNorm())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.blocks(self.stem(x))), 1))


@register_model("resnet20", RESNET_OPTIONS)
def _resnet20(spec: ModelSpec, family: UniformFamily) -> nn.Module:
    return ResNet20(family, spec.wbits, spec.abits, spec.image_shape, spec.num_classes)
