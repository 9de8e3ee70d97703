# SPDX-License-Identifier: BSD-3-Clause
"""Quantizer families: how a model's layers are quantized.

Models never name a quantizer. They ask a family for layers (``family.linear(...)``, ``family.act(...)``),
so a new scheme (N2UQ, BiTAT) is a subclass that overrides what differs and registers itself. A family's options
(``model_options``) are declared as data in :mod:`hwq.options` (``declared_options``) and read with ``_option``:

>>> @register_family
... class MyFamily(UniformFamily):
...     name = "mine"
>>> get_family("mine").name
'mine'
"""

from __future__ import annotations

import torch
from brevitas.inject.enum import ScalingPerOutputType
from brevitas.nn import QuantConv2d, QuantIdentity, QuantLinear
from torch import nn

from hwq.errors import ConfigError
from hwq.options import ACT_SIGNED, FLOAT_OPTIONS, UNIFORM_FAMILY_OPTIONS, WEIGHT_SCALE, Option, option_named
from hwq.quant.brevitas_map import L1ScaleWeight, to_injector
from hwq.quant.spec import MAX_BITS, MIN_BITS, QuantSpec, Role, Scaling

#: The pixels arrive as ``uint8 / 255``: an unsigned 8-bit grid with step 1/255 holds them exactly.
INPUT_SPEC = QuantSpec(Role.INPUT, bits=8, signed=False, narrow_range=False, scaling=Scaling.CONST, max_val=1.0)

#: Binary latent weights are kept in [-1, 1] after every step (BinaryConnect), so a weight can flip sign
#: again after a few updates instead of drifting far from zero.
BINARY_LATENT_CLIP = 1.0


class UniformFamily:
    """The default family: bipolar at 1 bit, uniform k-bit with a learned scale at 2..8 bits.

    Weights use a symmetric (narrow) grid, activations the full signed grid. A 1-bit weight or activation is
    ``sign(x)`` with a straight-through gradient, which FINN maps to XNOR-popcount.
    """

    name = "uniform"
    weight_bits: tuple[int, ...] = tuple(range(MIN_BITS, MAX_BITS + 1))
    act_bits: tuple[int, ...] = tuple(range(MIN_BITS, MAX_BITS + 1))
    #: The ``model_options`` this family reads (``hwq models`` lists them); ``build_model`` rejects other keys
    #: that the model does not declare either.
    declared_options: tuple[Option, ...] = UNIFORM_FAMILY_OPTIONS

    def __init__(self, options: dict | None = None) -> None:
        #: Settings from the run's ``model_options`` (the model's and the family's); read them with ``_option``.
        self.options = dict(options or {})

    def _option(self, key: str):
        """The value of the declared option ``key`` in ``options`` (its default when absent), type-checked."""
        return option_named(self.declared_options, key).read(self.options)

    def check_bits(self, wbits: int, abits: int) -> None:
        """Raise a ConfigError naming the flag when a bit-width is outside this family's range."""
        for flag, bits, allowed in (("wbits", wbits, self.weight_bits), ("abits", abits, self.act_bits)):
            if bits not in allowed:
                raise ConfigError(
                    f"--{flag} {bits!r} is not supported by the '{self.name}' quantizer family; "
                    f"expected one of {', '.join(map(str, allowed))}"
                )

    # --- specs -------------------------------------------------------------------------------------------
    def weight_spec(self, bits: int) -> QuantSpec:
        if bits == 1:
            return QuantSpec(Role.WEIGHT, 1)
        return QuantSpec(Role.WEIGHT, bits, narrow_range=True, scaling=Scaling.LEARNED)

    def act_spec(self, bits: int) -> QuantSpec:
        if bits == 1:
            return QuantSpec(Role.ACT, 1)
        signed = self._option(ACT_SIGNED.name) if self._declares(ACT_SIGNED) else True
        return QuantSpec(Role.ACT, bits, signed=signed, narrow_range=False, scaling=Scaling.LEARNED)

    def _declares(self, option: Option) -> bool:
        """Whether this family reads ``option`` (families built on this one may declare other options)."""
        return any(declared.name == option.name for declared in self.declared_options)

    # --- layers ------------------------------------------------------------------------------------------
    def input_quant(self) -> nn.Module:
        """The 8-bit quantizer in front of the first layer (tagged ``hwq_input_quant``: training pieces that change
        the precision of the activations, such as SSQL's views, leave the pixels alone)."""
        quant = QuantIdentity(act_quant=to_injector(INPUT_SPEC))
        quant.hwq_input_quant = True
        return quant

    def weight_quant(self, bits: int, per_channel: bool = True):
        """The Brevitas weight quantizer (injector) for ``bits``; a family may override just this.

        With ``weight_scale: mean_abs`` a binary weight is ``sign(w) * mean|w|`` over its output channel
        (``per_channel``) or its tensor, a detached statistic as in XNOR-Net and ReActNet. The scale is positive,
        so where a normalisation and a sign or threshold follow, it moves into the thresholds at export.
        """
        if bits == 1 and self._binary_weight_scale() == "mean_abs":
            quant = L1ScaleWeight.let(bit_width=1, signed=True, narrow_range=True, l1_gain=1.0)
            if not per_channel:
                quant = quant.let(scaling_per_output_channel=False,
                                  scaling_per_output_type=ScalingPerOutputType.TENSOR)
            return quant
        return to_injector(self.weight_spec(bits))

    def _binary_weight_scale(self) -> str:
        """``weight_scale`` where this family declares it (the uniform family), else ``const``."""
        if any(option.name == WEIGHT_SCALE.name for option in self.declared_options):
            return self._option(WEIGHT_SCALE.name)
        return "const"

    def linear(self, in_features: int, out_features: int, bits: int) -> nn.Module:
        layer = QuantLinear(in_features, out_features, bias=False, weight_quant=self.weight_quant(bits))
        return self._init_weights(layer, bits)

    def classifier(self, in_features: int, num_classes: int, bits: int) -> nn.Module:
        """The last layer, whose outputs go to label selection (arg-max).

        FINN absorbs the final scale into its label selection only when it is one positive number, so a family
        whose weights are scaled per output channel gives the classifier a single scale here.
        """
        if bits == 1 and self._binary_weight_scale() == "mean_abs":
            layer = QuantLinear(in_features, num_classes, bias=False,
                                weight_quant=self.weight_quant(bits, per_channel=False))
            return self._init_weights(layer, bits)
        return self.linear(in_features, num_classes, bits)

    def conv2d(
        self, in_channels: int, out_channels: int, kernel_size: int, bits: int,
        stride: int = 1, padding: int = 0, groups: int = 1,
    ) -> nn.Module:
        layer = QuantConv2d(
            in_channels, out_channels, kernel_size, stride=stride, padding=padding, groups=groups, bias=False,
            weight_quant=self.weight_quant(bits),
        )
        return self._init_weights(layer, bits)

    def act(self, bits: int, channels: int) -> nn.Module:
        """The activation quantizer after a layer's normalisation (``channels`` for per-channel families)."""
        return QuantIdentity(act_quant=to_injector(self.act_spec(bits)))

    def _init_weights(self, layer: nn.Module, bits: int) -> nn.Module:
        if bits == 1:
            # FINN's bnn_pynq init: latent weights spread over the clip range.
            torch.nn.init.uniform_(layer.weight, -BINARY_LATENT_CLIP, BINARY_LATENT_CLIP)
            layer.latent_clip = BINARY_LATENT_CLIP
        return layer


class FloatFamily(UniformFamily):
    """Full precision, for teachers and baselines: plain ``nn.Linear``/``nn.Conv2d`` and ReLU.

    Bit-widths are accepted and ignored. ``model_options: {float_act: hardtanh}`` picks the activation
    that binary networks approximate instead. Not deployable: FINN needs quantized tensors.
    """

    name = "float"
    declared_options = FLOAT_OPTIONS

    def check_bits(self, wbits: int, abits: int) -> None:
        return None

    def input_quant(self) -> nn.Module:
        return nn.Identity()

    def linear(self, in_features: int, out_features: int, bits: int) -> nn.Module:
        return nn.Linear(in_features, out_features, bias=False)

    def conv2d(
        self, in_channels: int, out_channels: int, kernel_size: int, bits: int,
        stride: int = 1, padding: int = 0, groups: int = 1,
    ) -> nn.Module:
        return nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=padding, groups=groups,
                         bias=False)

    def act(self, bits: int, channels: int) -> nn.Module:
        return nn.ReLU() if self._option("float_act") == "relu" else nn.Hardtanh()


FAMILIES: dict[str, type[UniformFamily]] = {}


def register_family(cls: type[UniformFamily]) -> type[UniformFamily]:
    """Class decorator: make a family available as ``--quant <cls.name>``."""
    FAMILIES[cls.name] = cls
    return cls


register_family(UniformFamily)
register_family(FloatFamily)


def get_family(name: str, options: dict | None = None) -> UniformFamily:
    """An instance of the family called ``name``, configured with ``options``."""
    if name not in FAMILIES:
        raise ConfigError(f"unknown quantizer family '{name}'; known: {', '.join(sorted(FAMILIES))}")
    return FAMILIES[name](options)


def clip_latent_weights(model: nn.Module) -> None:
    """Clamp the latent weights of every layer that asked for it (``layer.latent_clip``)."""
    with torch.no_grad():
        for module in model.modules():
            clip = getattr(module, "latent_clip", None)
            if clip is not None:
                module.weight.clamp_(-clip, clip)
