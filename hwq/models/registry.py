# SPDX-License-Identifier: BSD-3-Clause
"""Model names -> builders. A builder takes a :class:`ModelSpec` and a quantizer family.

A model declares the ``model_options`` its builder reads (:mod:`hwq.options`) when it registers; ``build_model``
rejects any key that neither the model nor the quantizer family declares, before a layer exists.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from torch import nn

from hwq.errors import ConfigError
from hwq.options import CNV_OPTIONS, FC_OPTIONS, Option, check_options, owners
from hwq.quant import FAMILIES, UniformFamily, get_family


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
    #: The run's ``model_options``: those the builder declares (a backbone's width) and the family's.
    options: dict = field(default_factory=dict)
    #: Per-layer bit-widths, module path -> bits (:mod:`hwq.models.precision`); layers not named keep
    #: ``wbits`` / ``abits``.
    precision: dict = field(default_factory=dict)


Builder = Callable[[ModelSpec, UniformFamily], nn.Module]
MODELS: dict[str, Builder] = {}
#: Model name -> the options its builder reads (``hwq models`` lists them).
MODEL_OPTIONS: dict[str, tuple[Option, ...]] = {}


def register_model(name: str, options: tuple[Option, ...] = ()) -> Callable[[Builder], Builder]:
    """Decorator: make ``builder`` available as ``--model name``, reading the declared ``options``."""

    def decorate(builder: Builder) -> Builder:
        MODELS[name] = builder
        MODEL_OPTIONS[name] = tuple(options)
        return builder

    return decorate


def _fc(hidden: tuple[int, ...]) -> Builder:
    def build(spec: ModelSpec, family: UniformFamily) -> nn.Module:
        from hwq.models.fc import FC

        return FC(family, spec.wbits, spec.abits, spec.image_shape, hidden, spec.num_classes, spec.dropout)

    return build


register_model("tfc", FC_OPTIONS)(_fc((64, 64, 64)))
register_model("sfc", FC_OPTIONS)(_fc((256, 256, 256)))
register_model("lfc", FC_OPTIONS)(_fc((1024, 1024, 1024)))


@register_model("cnv", CNV_OPTIONS)
def _cnv(spec: ModelSpec, family: UniformFamily) -> nn.Module:
    from hwq.models.cnv import CNV

    return CNV(family, spec.wbits, spec.abits, spec.image_shape, spec.num_classes, spec.dropout)


def build_model(spec: ModelSpec) -> nn.Module:
    """Build ``spec``; unknown names and unsupported bit-widths raise a ConfigError before any layer exists.

    >>> model = build_model(ModelSpec("tfc", wbits=1, abits=1, image_shape=(1, 8, 8)))
    >>> model.input_shape
    (64,)
    """
    if not spec.precision:
        family = _checked_family(spec)
        return MODELS[spec.name](spec, family)
    return model_and_layers(spec)[0]


def model_and_layers(spec: ModelSpec) -> tuple[nn.Module, list]:
    """The model ``spec`` describes with its ``precision`` map applied, and its quantized layers
    (:class:`hwq.models.precision.QuantizedLayer`, in construction order, with the bits each got)."""
    from hwq.models.precision import build_with_precision, check_precision_map

    check_precision_map(spec.precision)
    _checked_family(spec)
    return build_with_precision(spec, lambda: get_family(spec.quant, spec.options),
                                lambda family: MODELS[spec.name](spec, family))


def _checked_family(spec: ModelSpec) -> UniformFamily:
    if spec.name not in MODELS:
        raise ConfigError(f"unknown model '{spec.name}'; known: {', '.join(sorted(MODELS))}")
    if spec.quant in FAMILIES:
        check_model_options(spec.name, spec.quant, spec.options)
    family = get_family(spec.quant, spec.options)
    family.check_bits(spec.wbits, spec.abits)
    return family


def check_model_options(model: str, quant: str, options: dict) -> None:
    """Raise a one-line ConfigError for a key of ``options`` that neither ``model`` nor the family ``quant`` declares
    (listing those they do), or for a value of the wrong type."""
    families = {name: cls.declared_options for name, cls in FAMILIES.items()}
    check_options(options, MODEL_OPTIONS[model] + families[quant], f"model '{model}' with --quant {quant}",
                  owners({"model": MODEL_OPTIONS, "--quant": families}))
