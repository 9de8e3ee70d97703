# SPDX-License-Identifier: BSD-3-Clause
"""The bit-width search a training run makes under its ``--budget``: when to measure, what to measure and the
allocation (:func:`hwq.mixed.allocate.allocate`) that becomes the run's weight bits. The training loop asks
:meth:`SearchPlan.due` after each epoch (and before the first) and, when it is due, rebuilds its model at
:meth:`SearchPlan.choose`'s map (``hwq.train.loop``).

- ``bmpq``: BMPQ's bit-gradient sensitivity, solved before the first epoch (from the random initialisation: no
  pretrained model) and again every ``search_every`` epochs, within the one training.
- ``saq``: SAQ's generator: trains ``search_warmup`` epochs at ``--wbits``, measures each layer's sharpness, solves
  once and trains the rest at that map (with SAQ's sharpness-aware objective, the method's).

>>> plan = SearchPlan.for_run(TrainConfig(method="bmpq", budget="lut=9000,fps=1e6"))   # doctest: +SKIP
>>> plan.due(0), plan.due(1)                                                            # doctest: +SKIP
(True, True)
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from hwq.cost.budget import parse_budget
from hwq.cost.layers import ModelLayers, describe
from hwq.cost.model import layer_bits
from hwq.errors import ConfigError
from hwq.methods import method_named
from hwq.mixed.allocate import allocate, searched_layers
from hwq.mixed.sensitivity import bit_gradient_sensitivity, sharpness_sensitivity
from hwq.options import SEARCH_OPTIONS

#: Search kind -> the sensitivity it measures (model, batches, loss, bits) -> {layer: {bits: score}}.
SENSITIVITIES = {"bmpq": bit_gradient_sensitivity, "saq": sharpness_sensitivity}
DEFAULT_BOARD = "pynq-z2"


@dataclass
class SearchPlan:
    """One run's search: its kind, options, board and budget, and the record of every solve."""

    kind: str
    options: dict[str, Any]
    board: str
    budget: dict[str, float]
    epochs: int
    solves: list[dict[str, Any]] = field(default_factory=list)
    _layers: ModelLayers | None = field(default=None, repr=False)

    @classmethod
    def for_run(cls, config) -> "SearchPlan | None":
        """The plan of a ``TrainConfig`` whose method searches; None for any other."""
        kind = method_named(config.method).search if config.method else None
        if kind is None:
            return None
        options = {opt.name: opt.read(config.method_options, "method_options") for opt in SEARCH_OPTIONS[kind]}
        if not options["search_bits"] or any(b != int(b) for b in options["search_bits"]):
            raise ConfigError(f"method_options.search_bits: expected whole bit-widths 1..8, got "
                              f"{config.method_options.get('search_bits')!r}")
        options["search_bits"] = sorted({int(b) for b in options["search_bits"]})
        if kind == "saq" and options["search_warmup"] >= config.epochs:
            raise ConfigError(f"method_options.search_warmup: expected fewer epochs than --epochs {config.epochs} "
                              f"(the map is trained after it), got {options['search_warmup']}")
        return cls(kind, options, config.board or DEFAULT_BOARD, parse_budget(config.budget), config.epochs)

    def due(self, epochs_done: int) -> bool:
        """Whether to solve now, after ``epochs_done`` finished epochs (0: before training)."""
        if epochs_done >= self.epochs:
            return False
        if self.kind == "bmpq":
            return epochs_done % self.options["search_every"] == 0
        return epochs_done == self.options["search_warmup"]

    def solved(self, epochs_done: int) -> bool:
        """Whether a solve after ``epochs_done`` epochs is already recorded (a resumed run does not repeat it)."""
        return any(solve["epochs_done"] == epochs_done for solve in self.solves)

    def choose(self, model: nn.Module, spec, precision: dict[str, int], train_x: torch.Tensor,
               train_y: torch.Tensor, batch_size: int, seed: int, epochs_done: int) -> dict[str, int]:
        """Measure the sensitivities of ``model`` (built from ``spec`` at ``precision``) on a few training batches
        and allocate: the run's next precision map (the activation entries of ``precision`` kept)."""
        from hwq.data import Dataset

        started = time.perf_counter()
        layers = self.described(spec)
        weights = set(searched_layers(layers))
        base = {name: bits for name, bits in precision.items() if layers.aliases.get(name, name) not in weights}
        # The batches are drawn with their own generator: the training's random stream is not touched.
        generator = torch.Generator().manual_seed(seed * 7_919 + epochs_done)
        order = torch.randperm(len(train_x), generator=generator)[:batch_size * self.options["search_batches"]]
        order = order.to(train_x.device)
        batches = [(Dataset.to_float(train_x[idx]), train_y[idx]) for idx in order.split(batch_size)]
        scores = SENSITIVITIES[self.kind](model, batches, F.cross_entropy, self.options["search_bits"])
        scores = {name: bits for name, bits in scores.items() if name in weights}
        allocation = allocate(layers, scores, self.board, self.budget, base=base)
        self.solves.append({"epochs_done": epochs_done, **allocation.record(),
                            "scores": {name: {str(b): v for b, v in s.items()} for name, s in scores.items()},
                            "seconds": round(time.perf_counter() - started, 3)})
        return {**base, **allocation.precision}

    def described(self, spec) -> ModelLayers:
        """The cost model's layers of the run's model (described once; the random state forked, since describing
        builds the model and a build draws an initialisation: the training's random stream is not touched)."""
        if self._layers is None:
            with torch.random.fork_rng(devices=[]):
                self._layers = describe(dataclasses.replace(spec, precision={}))
        return self._layers

    def widths(self, precision: dict[str, int]) -> dict[str, int]:
        """Every quantizer's bits under ``precision`` (a map naming a layer at its default bits is the same model)."""
        return layer_bits(self._layers, precision)

    def record(self) -> dict[str, Any]:
        """``metrics.json``'s ``search``: what was searched under which budget, and every solve."""
        return {"kind": self.kind, "board": self.board, "budget": dict(self.budget), "options": dict(self.options),
                "weights_only": True, "solves": list(self.solves),
                "precision": dict(self.solves[-1]["precision"]) if self.solves else None}
