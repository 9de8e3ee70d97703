# SPDX-License-Identifier: BSD-3-Clause
"""Model names -> builders. A builder takes a :class:`ModelSpec` and a quantizer family."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from torch import nn

from hwq.errors import ConfigError
from hwq.quant import UniformFamily, get_family


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to rebuild a model (saved with every run, read back by export)."""

    name: str
    wbits: int
    abits: int
    quant: str = "uniform"
    #: One image, ``(C, H, W)``; it follows the dataset (digits 1x8x8, MNIST 1x28x28, CIFAR-10 3x32x32).
    image_shape: tuple[int, ...] = (1, 28, 28)
    num_classes: int = 10
    #: FINN's bnn_pynq networks use 0.2 on the input and after each hidden layer of the MLPs.
    dropout: float = 0.2
    #: Options a builder or a family may read (for example a backbone's width multiplier).
    options: dict = field(default_factory=dict)


Builder = Callable[[ModelSpec, UniformFamily], nn.Module]
MODELS: dict[str, Builder] = {}


def register_model(name: str) -> Callable[[Builder], Builder]:
    """Decorator: make ``builder`` available as ``--model name``."""

    def decorate(builder: Builder) -> Builder:
        MODELS[name] = builder
        return builder

    return decorate


def _fc(hidden: tuple[int, ...]) -> Builder:
    def build(spec: ModelSpec, family: UniformFamily) -> nn.Module:
        from hwq.models.fc import FC

        return FC(family, spec.wbits, spec.abits, spec.image_shape, hidden, spec.num_classes, spec.dropout)

    return build


register_model("tfc")(_fc((64, 64, 64)))
register_model("sfc")(_fc((256, 256, 256)))
register_model("lfc")(_fc((1024, 1024, 1024)))


@register_model("cnv")
def _cnv(spec: ModelSpec, family: UniformFamily) -> nn.Module:
    from hwq.models.cnv import CNV

    return CNV(family, spec.wbits, spec.abits, spec.image_shape, spec.num_classes, spec.dropout)


def build_model(spec: ModelSpec) -> nn.Module:
    """Build ``spec``; unknown names and unsupported bit-widths raise a ConfigError before any layer exists.

    >>> model = build_model(ModelSpec("tfc", wbits=1, abits=1, image_shape=(1, 8, 8)))
    >>> model.input_shape
    (64,)
    """
    if spec.name not in MODELS:
        raise ConfigError(f"unknown model '{spec.name}'; known: {', '.join(sorted(MODELS))}")
    family = get_family(spec.quant, spec.options)
    family.check_bits(spec.wbits, spec.abits)
    return MODELS[spec.name](spec, family)
