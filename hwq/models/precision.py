# SPDX-License-Identifier: BSD-3-Clause
"""Per-layer bit-widths: a ``precision`` map gives named quantizers of a model their own bits.

The names are the model's module paths: a weight layer (TFC's ``features.2: 2``, its weight bits) or an activation
quantizer (``features.4: 4``, the bits of the values it hands on). Every quantizer the map does not name keeps what
the model gives it: ``--wbits`` / ``--abits``, or a width the model fixes itself (the ReActNet stem's 8-bit weights,
its k-bit shortcuts). ``hwq layers`` lists a model's names with the bits each gets.

How the bits reach a layer: models never name a quantizer, they ask their family for layers
(``family.linear(..., bits)``, ``family.act(bits, ...)``) in an order fixed by their code. The model is built once
with every call recorded, which tells which call made which named module; it is then built again with the map's
bits given to those calls. The first build runs with the random state forked, so the second one draws exactly the
weights a model without a map draws.

>>> from hwq.models import ModelSpec
>>> [(layer.name, layer.role, layer.bits) for layer in quantized_layers(
...     ModelSpec("tfc", 1, 2, image_shape=(1, 8, 8), precision={"features.2": 4}))][:3]
[('features.2', 'weight', 4), ('features.4', 'act', 2), ('features.6', 'weight', 1)]
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import torch
from torch import nn

from hwq.errors import ConfigError
from hwq.options import check_precision_map  # noqa: F401  (part of this module's API)

WEIGHT, ACT = "weight", "act"
_ROLE_TEXT = {WEIGHT: "weights", ACT: "activations"}


@dataclass(frozen=True)
class QuantizedLayer:
    """One quantizer of a built model: its module path (and other paths of the same module), its role, its bits."""

    name: str
    role: str
    bits: int
    #: The position of the family call that made it (the model's construction order).
    call: int
    aliases: tuple[str, ...] = ()

    @property
    def names(self) -> tuple[str, ...]:
        return (self.name, *self.aliases)


class _CallRecorder:
    """The family a model is built with: each weight or activation layer it asks for gets the bits ``bits_at``
    holds for that call (the model's own otherwise), and the call is recorded.

    Everything else (``input_quant``, options) is the wrapped family's: a family's own methods call each other on
    the family itself, so a ``classifier`` that makes its layer with ``self.linear`` is one call, not two.
    """

    def __init__(self, family, bits_at: Mapping[int, int]) -> None:
        self._family, self._bits_at = family, dict(bits_at)
        self.calls: list[tuple[str, int]] = []

    def __getattr__(self, name: str):
        return getattr(self._family, name)

    def _made(self, role: str, bits: int, make: Callable[[int], nn.Module]) -> nn.Module:
        call = len(self.calls)
        bits = self._bits_at.get(call, bits)
        self.calls.append((role, bits))
        module = make(bits)
        module.hwq_precision_call = call  # read and removed by _recorded_layers once the model is built
        return module

    def linear(self, in_features: int, out_features: int, bits: int) -> nn.Module:
        return self._made(WEIGHT, bits, lambda b: self._family.linear(in_features, out_features, b))

    def classifier(self, in_features: int, num_classes: int, bits: int) -> nn.Module:
        return self._made(WEIGHT, bits, lambda b: self._family.classifier(in_features, num_classes, b))

    def conv2d(self, in_channels: int, out_channels: int, kernel_size: int, bits: int, **kwargs) -> nn.Module:
        return self._made(WEIGHT, bits, lambda b: self._family.conv2d(in_channels, out_channels, kernel_size, b,
                                                                      **kwargs))

    def act(self, bits: int, channels: int) -> nn.Module:
        return self._made(ACT, bits, lambda b: self._family.act(b, channels))


def _recorded_layers(model: nn.Module, calls: list[tuple[str, int]]) -> list[QuantizedLayer]:
    """The named quantized layers of ``model``, whose modules the recorder tagged with their call (tags removed)."""
    paths: dict[int, list[str]] = {}
    for name, module in model.named_modules(remove_duplicate=False):
        call = getattr(module, "hwq_precision_call", None)
        if call is not None and name not in paths.get(call, []):
            paths.setdefault(call, []).append(name)
    for module in model.modules():
        if hasattr(module, "hwq_precision_call"):
            del module.hwq_precision_call
    layers = []
    for call, (role, bits) in enumerate(calls):
        if call in paths:  # a layer the model made but did not keep has no name, and no map can reach it
            first, *rest = paths[call]
            layers.append(QuantizedLayer(first, role, bits, call, tuple(rest)))
    return layers


def _listing(layers: list[QuantizedLayer]) -> str:
    return ", ".join(f"{layer.name} ({_ROLE_TEXT[layer.role]})" for layer in layers)


def _bits_per_call(spec, family, layers: list[QuantizedLayer]) -> dict[int, int]:
    """The map's bits by call, after checking every name and width against the layers and the family."""
    by_name = {name: layer for layer in layers for name in layer.names}
    allowed = {WEIGHT: family.weight_bits, ACT: family.act_bits}
    bits_at: dict[int, int] = {}
    for name, bits in spec.precision.items():
        layer = by_name.get(name)
        if layer is None:
            close = difflib.get_close_matches(name, list(by_name), n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise ConfigError(f"precision.{name}: not a quantized layer of model '{spec.name}'{hint}; its quantized "
                              f"layers are {_listing(layers)} ('hwq layers' lists them)")
        if bits not in allowed[layer.role]:
            raise ConfigError(f"precision.{name}: {bits}-bit {_ROLE_TEXT[layer.role]} are not supported by the "
                              f"'{family.name}' quantizer family; expected one of "
                              f"{', '.join(map(str, allowed[layer.role]))}")
        if bits_at.get(layer.call, bits) != bits:
            raise ConfigError(f"precision.{name}: {' and '.join(layer.names)} are one quantizer, given "
                              f"{bits_at[layer.call]} and {bits} bits")
        bits_at[layer.call] = bits
    return bits_at


def _recorded_build(family, bits_at: Mapping[int, int], build: Callable[[Any], nn.Module]
                    ) -> tuple[nn.Module, list[QuantizedLayer]]:
    recorder = _CallRecorder(family, bits_at)
    model = build(recorder)
    return model, _recorded_layers(model, recorder.calls)


def build_with_precision(spec, make_family: Callable[[], Any], build: Callable[[Any], nn.Module]
                         ) -> tuple[nn.Module, list[QuantizedLayer]]:
    """``build(family)`` with ``spec.precision``'s bits in the layers it names, and the model's quantized layers.

    Without a map this is one build, the one ``build_model`` makes (the same random draws). With a map, a first build
    with the random state forked finds which family call made which named module, and the second gives those calls
    the map's bits. ``make_family`` makes a fresh family for each build (a family may keep per-model state).
    """
    if not spec.precision:
        return _recorded_build(make_family(), {}, build)
    with torch.random.fork_rng(devices=[]):
        _, layers = _recorded_build(make_family(), {}, build)
    model, mapped = _recorded_build(make_family(), _bits_per_call(spec, make_family(), layers), build)
    if [(layer.names, layer.role) for layer in mapped] != [(layer.names, layer.role) for layer in layers]:
        raise ConfigError(f"model '{spec.name}': its layers changed with the precision map (a model must ask its "
                          f"family for the same layers whatever their bits)")
    return model, mapped


def quantized_layers(spec) -> list[QuantizedLayer]:
    """The quantized layers of the model ``spec`` describes, with the bits each gets (``hwq layers``)."""
    from hwq.models.registry import model_and_layers

    return model_and_layers(spec)[1]


def layers_table(layers: list[QuantizedLayer]) -> str:
    """``hwq layers``' text: one line per quantizer."""
    width = max([len("layer")] + [len(layer.name) for layer in layers])
    lines = [f"{'layer':<{width}}  {'role':<11}  bits  also named"]
    for layer in layers:
        lines.append(f"{layer.name:<{width}}  {_ROLE_TEXT[layer.role]:<11}  {layer.bits:>4}  "
                     f"{', '.join(layer.aliases)}".rstrip())
    return "\n".join(lines)
