# SPDX-License-Identifier: BSD-3-Clause
"""What hwq offers (models, quantizer families, datasets), without importing torch.

``hwq models`` and the CLI's help read this table, so they answer in a tenth of a second instead of the three
seconds torch and Brevitas take to import. The registries (``hwq.models.MODELS``, ``hwq.quant.FAMILIES``,
``hwq.data.DATASETS``) stay the truth: ``tests/test_catalog.py`` fails when this table and they disagree.
"""

from __future__ import annotations

#: Model name -> what it is.
MODELS: dict[str, str] = {
    "tfc": "FINN's TFC: 3 fully connected hidden layers of 64",
    "sfc": "FINN's SFC: 3 fully connected hidden layers of 256",
    "lfc": "FINN's LFC: 3 fully connected hidden layers of 1024",
    "cnv": "FINN's CNV: 6 convolutions + 3 fully connected layers (CIFAR-10)",
    "resnet20": "ResNet-20 for CIFAR-10 (average-pooled classifier; not built by FINN)",
    "mobilenet": "MobileNet-v1 for 32x32 images (option width, default 0.5)",
    "mobilenet_tiny": "MobileNet-style, 3 blocks, for digits and MNIST (option width, default 1.0)",
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
}

#: Dataset name -> what it is.
DATASETS: dict[str, str] = {
    "digits": "sklearn's bundled 8x8 digits, 1,437 train / 360 test (no data folder needed)",
    "mnist": "MNIST 28x28, 60,000 / 10,000 (the four gzipped IDX files in the data folder)",
    "cifar10": "CIFAR-10 32x32 colour, 50,000 / 10,000 (the JPEG zips in the data folder)",
}


def as_dict() -> dict:
    """The catalog as plain data (``hwq models --json``)."""
    return {
        "models": {name: {"description": text} for name, text in MODELS.items()},
        "quant": {name: {"description": text, "wbits": list(w), "abits": list(a)}
                  for name, (text, w, a) in FAMILIES.items()},
        "datasets": {name: {"description": text} for name, text in DATASETS.items()},
    }


def _bits(bits: tuple[int, ...]) -> str:
    return f"{bits[0]}-{bits[-1]}" if len(bits) > 1 and bits == tuple(range(bits[0], bits[-1] + 1)) else \
        ",".join(map(str, bits))


def as_table() -> str:
    """The catalog as a readable table (``hwq models``)."""
    lines = ["models"] + [f"  {name:<16} {text}" for name, text in MODELS.items()]
    lines += ["", "quantizer families (--quant)", f"  {'':<16} {'wbits':<6} {'abits':<6}"]
    lines += [f"  {name:<16} {_bits(w):<6} {_bits(a):<6} {text}" for name, (text, w, a) in FAMILIES.items()]
    lines += ["", "datasets"] + [f"  {name:<16} {text}" for name, text in DATASETS.items()]
    return "\n".join(lines)
