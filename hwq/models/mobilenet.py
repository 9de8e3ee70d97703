# SPDX-License-Identifier: BSD-3-Clause
"""Compact depthwise-separable backbones (MobileNet-v1 style) built from a quantizer family.

``mobilenet`` (CIFAR-10): a 3x3 stem, then 13 depthwise-separable blocks (3x3 depthwise -> BN -> act ->
1x1 pointwise -> BN -> act) with MobileNet-v1's channels scaled by ``model_options.width`` (default 0.5), and
strides adapted to 32x32 inputs (the stem keeps full resolution). ``mobilenet_tiny`` (digits/MNIST): a stem and
three blocks. Both end with ``flatten -> linear -> TensorNorm``: flattening the last (small) feature map instead of
average pooling keeps the classifier's input binary, which FINN maps to XNOR-popcount like any binary layer.
The stem takes the 8-bit input quantizer's output, as FINN's first layer does.

The depthwise convolutions pad their input with ``model_options.pad_value``, by default -1 when activations are
binary: a bipolar stream has no 0, and a padded 0 would make the hardware (which pads the 1-bit encoding with 0,
i.e. -1) differ from training. Larq's ``pad_values`` makes the same choice for binary convolutions. With wider
activations the default is 0, which their grids contain.

>>> from hwq.models import ModelSpec, build_model
>>> net = build_model(ModelSpec("mobilenet_tiny", 1, 1, image_shape=(1, 8, 8), options={"width": 0.5}))
>>> net(torch.zeros(2, 1, 8, 8)).shape
torch.Size([2, 10])
"""

from __future__ import annotations

import math

import torch
from torch import nn

from hwq.errors import ConfigError
from hwq.models.registry import ModelSpec, register_model
from hwq.options import MOBILENET_OPTIONS, MOBILENET_TINY_OPTIONS, PAD_VALUE, Option, option_named
from hwq.models.tensor_norm import TensorNorm
from hwq.quant import UniformFamily

#: MobileNet-v1 (Howard et al., 2017): stem 32 channels, then (out_channels, stride) per block. ImageNet strides
#: shrink 224 -> 7; for 32x32 CIFAR images the first two stride-2 blocks become stride 1 (32 -> 4 at the end).
MOBILENET_V1_CIFAR = (32, ((64, 1), (128, 1), (128, 1), (256, 2), (256, 1), (512, 2),
                           (512, 1), (512, 1), (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1)))
#: A small variant for 8x8 digits and 28x28 MNIST.
MOBILENET_TINY = (16, ((32, 2), (64, 2), (64, 1)))


def _scaled(channels: int, width: float) -> int:
    # At least 8 channels so a narrow net keeps enough binary features; rounded to a multiple of 8 for FINN's
    # folding (channel counts with small factors divide into many PE/SIMD choices).
    return max(8, int(round(channels * width / 8)) * 8)


class MobileNet(nn.Module):
    def __init__(
        self, family: UniformFamily, wbits: int, abits: int, image_shape: tuple[int, ...], num_classes: int,
        config: tuple, width: float, dropout: float, pad_value: float,
    ) -> None:
        super().__init__()
        channels, height, width_px = image_shape
        self.input_shape = tuple(image_shape)
        stem, blocks = config
        out = _scaled(stem, width)
        layers: list[nn.Module] = [family.input_quant(), *self._conv_bn_act(family, channels, out, 3, 1, 1, wbits,
                                                                            abits)]
        for block_out, stride in blocks:
            block_out = _scaled(block_out, width)
            layers += [nn.ConstantPad2d(1, pad_value)]
            layers += self._conv_bn_act(family, out, out, 3, stride, out, wbits, abits, padding=0)  # depthwise
            layers += self._conv_bn_act(family, out, block_out, 1, 1, 1, wbits, abits)         # pointwise
            out = block_out
            height, width_px = math.ceil(height / stride), math.ceil(width_px / stride)
        self.features = nn.Sequential(*layers)
        head: list[nn.Module] = [nn.Dropout(dropout)] if dropout else []
        self.classifier = nn.Sequential(
            *head, family.classifier(out * height * width_px, num_classes, wbits), TensorNorm()
        )

    @staticmethod
    def _conv_bn_act(family: UniformFamily, cin: int, cout: int, k: int, stride: int, groups: int, wbits: int,
                     abits: int, padding: int | None = None) -> list[nn.Module]:
        padding = k // 2 if padding is None else padding
        return [family.conv2d(cin, cout, k, wbits, stride=stride, padding=padding, groups=groups),
                nn.BatchNorm2d(cout, eps=1e-4), family.act(abits, cout)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))


def _width(spec: ModelSpec, declared: tuple[Option, ...]) -> float:
    return option_named(declared, "width").read(spec.options)


def _pad_value(spec: ModelSpec) -> float:
    value = PAD_VALUE.read(spec.options)
    return (-1.0 if spec.abits == 1 else 0.0) if value is None else value


@register_model("mobilenet", MOBILENET_OPTIONS)
def _mobilenet(spec: ModelSpec, family: UniformFamily) -> nn.Module:
    if tuple(spec.image_shape[1:]) != (32, 32):
        raise ConfigError(f"model 'mobilenet' is laid out for 32x32 images (CIFAR-10); got "
                          f"{spec.image_shape[1]}x{spec.image_shape[2]}; use 'mobilenet_tiny'")
    return MobileNet(family, spec.wbits, spec.abits, spec.image_shape, spec.num_classes, MOBILENET_V1_CIFAR,
                     _width(spec, MOBILENET_OPTIONS), dropout=0.0, pad_value=_pad_value(spec))


@register_model("mobilenet_tiny", MOBILENET_TINY_OPTIONS)
def _mobilenet_tiny(spec: ModelSpec, family: UniformFamily) -> nn.Module:
    return MobileNet(family, spec.wbits, spec.abits, spec.image_shape, spec.num_classes, MOBILENET_TINY,
                     _width(spec, MOBILENET_TINY_OPTIONS), dropout=0.0, pad_value=_pad_value(spec))
