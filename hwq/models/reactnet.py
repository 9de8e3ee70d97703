# SPDX-License-Identifier: BSD-3-Clause
"""A deployable binary compact backbone (ReActNet-A style, Liu et al. 2020), built from a quantizer family.

MobileNet-v1's channel plan (``hwq.models.mobilenet``) scaled by ``model_options.width``, with ReActNet's changes:
each depthwise-separable block becomes a binary 3x3 convolution (full, not depthwise) and a binary 1x1
convolution, **each with a shortcut around it**. The real-valued path of ReActNet is carried at
``model_options.shortcut_bits`` (k, default 4) so that it deploys:

- stem: the family's 8-bit input quantizer, a 3x3 convolution with 8-bit weights, batch norm, the k-bit quantizer;
- a binary convolution ``x -> sign(x + shift) -> conv -> bn``: ``shift`` is ReActNet's RSign, a learned
  per-channel shift in front of the sign, which FINN absorbs into the sign's per-channel threshold (each
  convolution has its own sign);
- the shortcut: the body's output is quantized by **the same** k-bit quantizer as the block input ``x`` (one
  scale, so the add is an integer add that FINN maps to DuplicateStreams + ElementwiseAdd); strided, the shortcut
  is a 2x2 truncating average pool to k bits (``floor(sum / 4)``, FINN's QuantAvgPool) re-quantized by that
  quantizer (exactly: it is on its grid already); when the channels double
  (a 1x1 block), the body is two 1x1 convolutions whose outputs each get ``x`` added, then concatenated
  (ReActNet's layout; FINN's StreamingConcat);
- the activation shape after each block: a per-channel scale and shift (batch norm) in front of the next k-bit
  quantizer, a learned clipped-linear function per channel that FINN absorbs into that quantizer's thresholds
  (``model_options.block_shape: rprelu`` adds ReActNet's RPReLU after it, :class:`RPReLU`);
- classifier: global average pool, the k-bit quantizer, a linear layer with ``classifier_bits`` weights, then
  FINN's TensorNorm.

``reactnet`` (CIFAR-10, 3x32x32) follows MobileNet-v1's 13 blocks, ``reactnet_tiny`` (digits, MNIST) its three.

>>> from hwq.models import ModelSpec, build_model
>>> net = build_model(ModelSpec("reactnet_tiny", 1, 1, image_shape=(1, 8, 8), options={"width": 0.5}))
>>> net(torch.zeros(2, 1, 8, 8)).shape
torch.Size([2, 10])
"""

from __future__ import annotations

import math

import torch
from brevitas.nn import TruncAvgPool2d
from brevitas.quant.scaled_int import TruncTo8bit
from brevitas.quant_tensor import QuantTensor
from torch import nn
from torch.nn import functional as F

from hwq.errors import ConfigError
from hwq.models.mobilenet import MOBILENET_TINY, MOBILENET_V1_CIFAR, _pad_value, _scaled
from hwq.models.registry import ModelSpec, register_model
from hwq.models.tensor_norm import TensorNorm
from hwq.options import (BLOCK_SHAPE, CLASSIFIER_BITS, REACTNET_OPTIONS, REACTNET_TINY_OPTIONS, SHORTCUT_BITS,
                         option_named)
from hwq.quant import UniformFamily

#: The first layer's weight bits (ReActNet keeps it real-valued; 8 bits is what deploys).
STEM_WEIGHT_BITS = 8


def _value(x):
    """The plain tensor of a Brevitas QuantTensor (the layers that follow take tensors)."""
    return x.value if isinstance(x, QuantTensor) else x


def _shortcut_quant(family: UniformFamily, bits: int, channels: int) -> nn.Module:
    """The family's k-bit activation quantizer, handing over a QuantTensor where it can (Brevitas' truncating
    average pool needs one; two QuantTensors of one scale add into one)."""
    quant = family.act(bits, channels)
    for module in quant.modules():  # the quantizer itself, or the one a family wraps (BiTAT's switch)
        if hasattr(module, "return_quant_tensor"):
            module.return_quant_tensor = True
    return quant


class Shift(nn.Module):
    """A learned per-channel shift (ReActNet's RSign, in front of the sign): ``x + b``, exported as an Add."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.bias.view(1, -1, 1, 1)


class RPReLU(nn.Module):
    """ReActNet's RPReLU, ``prelu(x - g) + z`` per channel, its slope kept at or above :data:`MIN_SLOPE`: increasing,
    so FINN absorbs it into the next quantizer's thresholds (:class:`hwq.dataflow.prelu.AbsorbPReluIntoMultiThreshold`;
    a slope of 0 or below would make it flat or falling, which no set of thresholds on its input can express)."""

    MIN_SLOPE = 0.01

    def __init__(self, channels: int, slope: float = 0.25) -> None:
        super().__init__()
        self.shift_in = nn.Parameter(torch.zeros(channels))
        self.slope = nn.Parameter(torch.full((channels,), slope))
        self.shift_out = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = (1, -1) + (1,) * (x.dim() - 2)
        return F.prelu(x - self.shift_in.view(shape), self.slope.clamp(min=self.MIN_SLOPE)) + \
            self.shift_out.view(shape)


class BinaryConvShortcut(nn.Module):
    """``quant_out(shape(quant_in(bn(conv(sign(x + shift)))) + shortcut(x)))``, ``x`` from ``quant_in``;
    ``quant_out`` (k bits) is made here, after the convolutions (a family may tie a quantizer to the weight layer
    made before it, as BiTAT's progressive schedule does).

    ``kernel`` 3 keeps the channels (stride 1 or 2); ``kernel`` 1 keeps or doubles them (stride 1). Doubling uses
    two convolutions, each added to ``x``, concatenated.
    """

    def __init__(self, family: UniformFamily, cin: int, cout: int, kernel: int, stride: int, wbits: int,
                 abits: int, quant_in: nn.Module, shortcut_bits: int, pad_value: float,
                 block_shape: str = "affine") -> None:
        super().__init__()
        if cout not in (cin, 2 * cin) or (cout != cin and (kernel != 1 or stride != 1)):
            raise ValueError(f"a {kernel}x{kernel} block maps {cin} to {cout} channels (stride {stride})")
        self.quant_in = quant_in
        halves = cout // cin
        # one RSign per convolution: FINN's XNOR conversion turns the sign feeding a binary MatMul into 0/1, and
        # does so for one MatMul per sign (a second MatMul on it finds no bipolar producer left)
        self.shifts = nn.ModuleList(Shift(cin) for _ in range(halves))
        self.signs = nn.ModuleList(family.act(abits, cin) for _ in range(halves))
        # a bipolar stream has no 0: pad with -1 like the MobileNet (hwq.models.mobilenet)
        self.pad = nn.ConstantPad2d(kernel // 2, pad_value) if kernel > 1 else nn.Identity()
        self.convs = nn.ModuleList(family.conv2d(cin, cin, kernel, wbits, stride=stride) for _ in range(halves))
        self.bns = nn.ModuleList(nn.BatchNorm2d(cin) for _ in range(halves))
        self.pool = None
        if stride != 1:
            # the sum shifted right to k bits: floor(sum / 4) at the input's scale, which quant_in keeps exactly
            # (TruncTo8bit at k < 8 widens to sum / 4 at a quarter of the scale, and quant_in's rounding of the
            # ties sum = 2 mod 4 then rests on float rounding in the QONNX reference: the gate failed on them)
            self.pool = TruncAvgPool2d(kernel_size=stride, stride=stride,
                                       trunc_quant=TruncTo8bit.let(bit_width=shortcut_bits))
        self.shape = nn.BatchNorm2d(cout) if block_shape == "affine" else nn.Sequential(nn.BatchNorm2d(cout),
                                                                                        RPReLU(cout))
        self.quant_out = _shortcut_quant(family, shortcut_bits, cout)

    def _shortcut(self, x):
        if self.pool is None:
            return x
        pooled = self.pool(x) if isinstance(x, QuantTensor) else F.avg_pool2d(x, self.pool.kernel_size)
        return self.quant_in(pooled)

    def forward(self, x):
        shortcut = self._shortcut(x)
        joined = [self.quant_in(bn(conv(self.pad(sign(shift(_value(x))))))) + shortcut
                  for shift, sign, conv, bn in zip(self.shifts, self.signs, self.convs, self.bns)]
        joined = [_value(j) for j in joined]
        out = joined[0] if len(joined) == 1 else torch.cat(joined, dim=1)
        return self.quant_out(self.shape(out))


def _channel_plan(config: tuple, width: float) -> tuple[int, list[tuple[int, int]]]:
    """The stem's channels and ``(out_channels, stride)`` per block, scaled by ``width``; a block keeps or doubles
    its input channels (rounding to multiples of 8 could otherwise give, e.g., 24 -> 40)."""
    stem, blocks = config
    cin = _scaled(stem, width)
    plan, previous = [], stem
    for out, stride in blocks:
        cout = _scaled(out, width)
        if cout not in (cin, 2 * cin):
            cout = 2 * cin if out > previous else cin
        plan.append((cout, stride))
        cin, previous = cout, out
    return _scaled(stem, width), plan


class ReActNet(nn.Module):
    def __init__(self, family: UniformFamily, wbits: int, abits: int, image_shape: tuple[int, ...],
                 num_classes: int, config: tuple, width: float, shortcut_bits: int, classifier_bits: int,
                 pad_value: float, block_shape: str = "affine") -> None:
        super().__init__()
        channels, height, width_px = image_shape
        self.input_shape = tuple(image_shape)
        stem, plan = _channel_plan(config, width)
        stem_conv = family.conv2d(channels, stem, 3, STEM_WEIGHT_BITS, padding=1)
        quant = _shortcut_quant(family, shortcut_bits, stem)
        self.stem = nn.Sequential(family.input_quant(), stem_conv, nn.BatchNorm2d(stem, eps=1e-4), quant)
        blocks, cin = [], stem
        for cout, stride in plan:
            if stride != 1 and (height % stride or width_px % stride):
                raise ConfigError(f"model reactnet: a stride-{stride} block meets a {height}x{width_px} map; its "
                                  f"average-pooled shortcut needs sides divisible by {stride}")
            for kernel, stride_, out in ((3, stride, cin), (1, 1, cout)):
                blocks.append(BinaryConvShortcut(family, cin, out, kernel, stride_, wbits, abits, quant,
                                                 shortcut_bits, pad_value, block_shape))
                quant = blocks[-1].quant_out
            cin = cout
            height, width_px = math.ceil(height / stride), math.ceil(width_px / stride)
        self.blocks = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.pooled_quant = family.act(shortcut_bits, cin)
        self.classifier = nn.Sequential(family.classifier(cin, num_classes, classifier_bits), TensorNorm())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = _value(self.blocks(self.stem(x)))
        return self.classifier(torch.flatten(self.pooled_quant(self.pool(features)), 1))


def _build(spec: ModelSpec, family: UniformFamily, config: tuple, declared) -> ReActNet:
    return ReActNet(family, spec.wbits, spec.abits, spec.image_shape, spec.num_classes, config,
                    option_named(declared, "width").read(spec.options), SHORTCUT_BITS.read(spec.options),
                    CLASSIFIER_BITS.read(spec.options), _pad_value(spec), BLOCK_SHAPE.read(spec.options))


@register_model("reactnet", REACTNET_OPTIONS)
def _reactnet(spec: ModelSpec, family: UniformFamily) -> nn.Module:
    if tuple(spec.image_shape[1:]) != (32, 32):
        raise ConfigError(f"model 'reactnet' is laid out for 32x32 images (CIFAR-10); got "
                          f"{spec.image_shape[1]}x{spec.image_shape[2]}; use 'reactnet_tiny'")
    return _build(spec, family, MOBILENET_V1_CIFAR, REACTNET_OPTIONS)


@register_model("reactnet_tiny", REACTNET_TINY_OPTIONS)
def _reactnet_tiny(spec: ModelSpec, family: UniformFamily) -> nn.Module:
    return _build(spec, family, MOBILENET_TINY, REACTNET_TINY_OPTIONS)
