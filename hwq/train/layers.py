# SPDX-License-Identifier: BSD-3-Clause
"""``hwq layers``: the quantized layers of the model a config or a finished run describes, with each one's bits.

These are the names a ``precision:`` map takes (hwq.models.precision). No data is loaded: the image shape and the
number of classes come from the catalog.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from hwq.catalog import DATASET_SHAPES
from hwq.errors import ConfigError
from hwq.methods import check_method_precision
from hwq.models import model_and_layers
from hwq.models.precision import QuantizedLayer
from hwq.train.config import TrainConfig
from hwq.train.loop import model_spec_for, run_description


@dataclass(frozen=True)
class _DatasetShape:
    """What :func:`model_spec_for` reads of a dataset."""

    image_shape: tuple[int, int, int]
    num_classes: int


def config_layers(config: TrainConfig) -> list[QuantizedLayer]:
    """The quantized layers of the model ``config`` trains; a bad ``precision`` is the error training would give."""
    if config.dataset not in DATASET_SHAPES:
        raise ConfigError(f"dataset: unknown '{config.dataset}'; known: {', '.join(DATASET_SHAPES)}")
    shape, classes = DATASET_SHAPES[config.dataset]
    spec = model_spec_for(config, _DatasetShape(shape, classes))
    _, layers = model_and_layers(spec)
    check_method_precision(config.method, spec.precision, layers)
    return layers


def run_layers(run_dir: str | Path) -> list[QuantizedLayer]:
    """The quantized layers of a finished run's model, as it was trained."""
    _, spec = run_description(Path(run_dir))
    return model_and_layers(spec)[1]
