# SPDX-License-Identifier: BSD-3-Clause
"""What hwq offers (models, quantizer families, their options, training methods, datasets), without importing torch.

``hwq models`` and the CLI's help read this table, so they answer in a tenth of a second instead of the three
seconds torch and Brevitas take to import, and ``TrainConfig`` checks a run's ``model_options`` against it when it
is made. The registries (``hwq.models.MODELS`` and ``MODEL_OPTIONS``, ``hwq.quant.FAMILIES`` with each family's
``declared_options``, ``hwq.data.DATASETS``) stay the truth: ``tests/test_catalog.py`` fails when this table and
they disagree.
"""

from __future__ import annotations

from typing import Any, Mapping

from hwq import options as o
from hwq.methods import METHODS

#: Model name -> what it is.
MODELS: dict[str, str] = {
    "tfc": "FINN's TFC: 3 fully connected hidden layers of 64",
    "sfc": "FINN's SFC: 3 fully connected hidden layers of 256",
    "lfc": "FINN's LFC: 3 fully connected hidden layers of 1024",
    "cnv": "FINN's CNV: 6 convolutions + 3 fully connected layers (CIFAR-10)",
    "resnet20": "ResNet-20 for CIFAR-10 (average-pooled classifier; not built by FINN)",
    "mobilenet": "MobileNet-v1 for 32x32 images",
    "mobilenet_tiny": "MobileNet-style, 3 blocks, for digits and MNIST",
    "reactnet": "ReActNet-A style binary backbone with k-bit shortcuts, for 32x32 images (docs/reactnet.md)",
    "reactnet_tiny": "ReActNet-style binary backbone, 3 blocks, for digits and MNIST (docs/reactnet.md)",
}

#: Model name -> the options its builder reads (``--option``, ``model_options``).
MODEL_OPTIONS: dict[str, tuple[o.Option, ...]] = {
    "tfc": o.FC_OPTIONS, "sfc": o.FC_OPTIONS, "lfc": o.FC_OPTIONS, "cnv": o.CNV_OPTIONS,
    "resnet20": o.RESNET_OPTIONS, "mobilenet": o.MOBILENET_OPTIONS, "mobilenet_tiny": o.MOBILENET_TINY_OPTIONS,
    "reactnet": o.REACTNET_OPTIONS, "reactnet_tiny": o.REACTNET_TINY_OPTIONS,
}

#: Quantizer family -> (what it is, weight bit-widths, activation bit-widths).
FAMILIES: dict[str, tuple[str, tuple[int, ...], tuple[int, ...]]] = {
    "uniform": ("bipolar sign at 1 bit (XNOR-popcount), uniform learned-scale k-bit above", tuple(range(1, 9)),
                tuple(range(1, 9))),
    "float": ("full precision (teachers, baselines; not deployable); bit-widths ignored", tuple(range(1, 9)),
              tuple(range(1, 9))),
    "n2uq": ("N2UQ: learned non-uniform thresholds, uniform output levels (docs/n2uq.md)", tuple(range(1, 9)),
             (1, 2, 3, 4)),
    "bitat": ("BiTAT: importance-weighted, progressive binarization (docs/bitat.md)", (1,), (1,)),
    "dirnet": ("DIR-Net: balanced, standardized binary weights, EDE/DTE sign gradient, RBD with a teacher "
               "(docs/methods.md)", (1,), (1,)),
    "lsq": ("LSQ: uniform with learned step size (init 2 mean|v|/sqrt(Qp), gradient scale; docs/methods.md)",
            tuple(range(1, 9)), tuple(range(1, 9))),
    "noise": ("noise tempering: uniform with decaying quantization-error noise and a learned gradient scale "
              "(sign at 1 bit; docs/methods.md)", tuple(range(1, 9)), tuple(range(1, 9))),
    "osc": ("uniform with oscillation dampening and freezing of oscillating weights (sign at 1 bit; "
            "docs/methods.md)", tuple(range(1, 9)), tuple(range(1, 9))),
    "lqnet": ("LQ-Nets: learned bases, levels v^T e over +-1 (weights) or 0/1 (activations) codes, QEM updates "
              "(docs/methods.md)", (1, 2, 3, 4), (1, 2, 3, 4)),
    "adder": ("AdderNet: -sum|x - w| layers, weights on their input's grid (open backend; FINN refuses it; docs/methods.md)",
              tuple(range(2, 9)), tuple(range(2, 9))),
}

#: Quantizer family -> the options it reads.
FAMILY_OPTIONS: dict[str, tuple[o.Option, ...]] = {
    "uniform": o.UNIFORM_FAMILY_OPTIONS, "float": o.FLOAT_OPTIONS, "n2uq": o.N2UQ_OPTIONS, "bitat": o.BITAT_OPTIONS,
    "lsq": o.UNIFORM_OPTIONS, "noise": o.NOISE_OPTIONS, "osc": o.OSC_OPTIONS, "lqnet": o.LQNET_OPTIONS,
    "dirnet": o.DIRNET_OPTIONS, "adder": o.ADDER_OPTIONS,
}

#: Dataset name -> what it is.
DATASETS: dict[str, str] = {
    "digits": "sklearn's bundled 8x8 digits, 1,437 train / 360 test (no data folder needed)",
    "mnist": "MNIST 28x28, 60,000 / 10,000 (the four gzipped IDX files in the data folder)",
    "cifar10": "CIFAR-10 32x32 colour, 50,000 / 10,000 (the JPEG zips in the data folder)",
}

#: Dataset name -> (one image's shape (C, H, W), classes): what a model is built for, known without loading data
#: (``hwq layers``); tests/test_precision.py checks it against the loaded datasets.
DATASET_SHAPES: dict[str, tuple[tuple[int, int, int], int]] = {
    "digits": ((1, 8, 8), 10), "mnist": ((1, 28, 28), 10), "cifar10": ((3, 32, 32), 10),
}


def check_model_options(model: str, quant: str, options: Mapping[str, Any]) -> None:
    """Raise a one-line ConfigError for a key of ``options`` that neither ``model`` nor the family ``quant`` reads
    (naming the ones they do), or a value of the wrong type. A model or family this table does not know (one
    registered by the user's code) is left to ``hwq.models.build_model``, which checks against the registries.

    >>> check_model_options("tfc", "bitat", {"bitat_penalti": 0.1})  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    hwq.errors.ConfigError: model_options.bitat_penalti: not an option of model 'tfc' with --quant bitat (did you ...
    """
    if model not in MODEL_OPTIONS or quant not in FAMILY_OPTIONS:
        return
    o.check_options(options, MODEL_OPTIONS[model] + FAMILY_OPTIONS[quant], f"model '{model}' with --quant {quant}",
                    o.owners({"model": MODEL_OPTIONS, "--quant": FAMILY_OPTIONS}))


def _options_data(declared: tuple[o.Option, ...]) -> list[dict]:
    return [{"name": opt.name, "type": opt.expected(), "default": opt.default, "help": opt.help} for opt in declared]


def as_dict() -> dict:
    """The catalog as plain data (``hwq models --json``)."""
    return {
        "models": {name: {"description": text, "options": _options_data(MODEL_OPTIONS[name])}
                   for name, text in MODELS.items()},
        "quant": {name: {"description": text, "wbits": list(w), "abits": list(a),
                         "options": _options_data(FAMILY_OPTIONS[name])}
                  for name, (text, w, a) in FAMILIES.items()},
        "methods": {name: {"description": m.description, "quant": m.quant, "options": dict(m.options),
                           "objective": m.objective, "optimizer": m.optimizer, "any_quant": m.any_quant,
                           "min_wbits": m.min_wbits, "method_options": _options_data(m.declared_options())}
                    for name, m in METHODS.items()},
        "datasets": {name: {"description": text} for name, text in DATASETS.items()},
    }


def _bits(bits: tuple[int, ...]) -> str:
    return f"{bits[0]}-{bits[-1]}" if len(bits) > 1 and bits == tuple(range(bits[0], bits[-1] + 1)) else \
        ",".join(map(str, bits))


def _option_lines(declared: tuple[o.Option, ...]) -> list[str]:
    return [f"      {opt.name + ' = ' + opt.default_text():<36} {opt.expected().removesuffix(' or null')}: {opt.help}"
            for opt in declared]


def options_markdown(declared: tuple[o.Option, ...]) -> str:
    """A Markdown table of ``declared`` (the options tables in ``docs/n2uq.md`` and ``docs/bitat.md`` are these,
    checked by ``tests/test_options.py``)."""
    rows = ["| option | takes | default | what it does |", "| --- | --- | --- | --- |"]
    rows += [f"| `{opt.name}` | {opt.expected().removesuffix(' or null')} | {opt.default_text()} | {opt.help} |"
             for opt in declared]
    return "\n".join(rows)


def as_table() -> str:
    """The catalog as a readable table (``hwq models``), each model and family followed by its options."""
    lines = ["models (--model); below each model and family its options (--option KEY=VALUE) with their defaults"]
    for name, text in MODELS.items():
        lines += [f"  {name:<16} {text}", *_option_lines(MODEL_OPTIONS[name])]
    lines += ["", "quantizer families (--quant)", f"  {'':<16} {'wbits':<6} {'abits':<6}"]
    for name, (text, w, a) in FAMILIES.items():
        lines += [f"  {name:<16} {_bits(w):<6} {_bits(a):<6} {text}", *_option_lines(FAMILY_OPTIONS[name])]
    lines += ["", "training methods (--method; each sets its quantizer family; below, its --method-option KEY=VALUE)"]
    for name, m in METHODS.items():
        lines += [f"  {name:<16} {'--quant ' + m.quant:<15} {m.description}", *_option_lines(m.declared_options())]
    lines += ["", "datasets"] + [f"  {name:<16} {text}" for name, text in DATASETS.items()]
    return "\n".join(lines)
