# SPDX-License-Identifier: BSD-3-Clause
"""The training configuration: one dataclass, each field with its unit and the reason for its default.

It round-trips through YAML (``runs/NAME/config.yaml``); unknown or mistyped fields are errors naming the field.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

import yaml

from hwq._io import read_yaml_mapping
from hwq.catalog import check_model_options
from hwq.errors import ConfigError
from hwq.options import check_precision_map
from hwq.methods import (METHODS, check_method_bits, check_method_budget, check_method_dropout, check_method_options,
                         method_options, resolve_method)


class Loss(str, Enum):
    CROSS_ENTROPY = "cross_entropy"
    #: FINN's bnn_pynq recipe: squared hinge on +-1 targets.
    SQR_HINGE = "sqr_hinge"


class Schedule(str, Enum):
    COSINE = "cosine"
    CONSTANT = "constant"
    #: ``1 - t / T`` per epoch: the two-step recipe's (ReActNet trains with linear decay to zero).
    LINEAR = "linear"


class Recipe(str, Enum):
    #: One training as configured.
    PLAIN = "plain"
    #: ReActNet / Real-to-Binary: binary activations with real weights, then binary weights too (hwq.train.recipe).
    TWO_STEP = "two-step"


#: Families whose 1-bit weights the two-step recipe can turn off and on (plain Brevitas weight quantizers).
TWO_STEP_FAMILIES = ("uniform", "n2uq")


def read_precision(precision: Any) -> dict[str, int]:
    """A ``precision`` field as its mapping: the file's when it names one (the mapping itself, or under a
    ``precision:`` key, so a training config file can serve), checked layer by layer."""
    where = "precision"
    if isinstance(precision, str | Path):
        where = str(precision)
        precision = read_yaml_mapping(precision, "precision file")
        if set(precision) == {"precision"}:
            precision = precision["precision"]
    return check_precision_map(precision, where)


def _is_int(value: Any) -> bool:
    """An integer, and not a bool (YAML's ``true`` would pass ``isinstance(value, int)``)."""
    return isinstance(value, int) and not isinstance(value, bool)


def _is_finite_number(value: Any) -> bool:
    """An int or float that is neither a bool nor nan/inf (``--lr nan`` would train nothing, silently)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


@dataclass
class TrainConfig:
    """Settings of one training run (``hwq train`` flags and YAML keys have the same names)."""

    model: str = "tfc"
    dataset: str = "digits"
    #: Training method (:mod:`hwq.methods`): sets the quantizer family and its option defaults. None: the method
    #: of the same name as ``quant`` where there is one (config.yaml records it), else none.
    method: str | None = None
    #: Quantizer family: ``uniform`` (binary at 1 bit, learned-scale uniform above); later families register more.
    #: None: the method's, else ``uniform``. With ``method`` both must agree.
    quant: str | None = None
    wbits: int = 1
    abits: int = 1
    epochs: int = 10
    #: FINN's bnn_pynq recipe uses 100.
    batch_size: int = 100
    #: Adam's learning rate; 0.02 is FINN's bnn_pynq value for binary networks, whose latent weights are clipped.
    lr: float = 0.02
    #: None: the recipe's, linear with two-step and cosine otherwise (:meth:`schedule_used`; a run's config.yaml
    #: records the one it used).
    schedule: Schedule | None = None
    #: Adam weight decay; 0 because decay pulls binary latent weights to zero, where their signs flip at random.
    weight_decay: float = 0.0
    loss: Loss = Loss.CROSS_ENTROPY
    #: Dropout on the input and after each hidden layer (FINN's MLPs use 0.2).
    dropout: float = 0.2
    seed: int = 0
    #: ``cpu``, ``cuda`` or ``auto`` (cuda when available). Determinism is promised on the CPU only.
    device: str = "cpu"
    #: CPU threads torch uses during the run; None = the cores this process may use (its affinity mask), and
    #: never more than those. The bits of a CPU run depend on it, so the number used is what config.yaml and
    #: metrics.json record (hwq.train.threads).
    threads: int | None = None
    #: Data folder; None means ``$HWQ_DATA`` or ``../shared/data``. Not needed for digits.
    data_dir: str | None = None
    #: Train on this many training images (class-balanced, drawn with ``seed``); None uses them all. The test
    #: set is always whole. For quick or CPU-sized experiments on the large datasets.
    train_subset: int | None = None
    #: Score on this many test images (class-balanced, always the same ones: drawn with seed 0); None uses them
    #: all. For CPU-sized experiments where evaluating the whole test set each epoch costs more than training.
    test_subset: int | None = None
    #: Options of the model builder and the quantizer family (``hwq models`` lists each one's); any other key, or a
    #: value of the wrong type, is an error when the config is made.
    model_options: dict[str, Any] = field(default_factory=dict)
    #: Per-layer bit-widths: module path -> bits (``hwq layers`` lists a model's), or the path of a YAML file holding
    #: that mapping (read when the config is made; config.yaml records the mapping). Layers it does not name keep
    #: ``wbits`` / ``abits``. Checked against the model when it is built (hwq.models.precision).
    precision: dict[str, int] | str = field(default_factory=dict)
    #: Options of the method's objective and optimizer (``hwq models`` lists each method's), e.g. SAM's radius;
    #: a key the method does not read is an error when the config is made.
    method_options: dict[str, Any] = field(default_factory=dict)
    #: Run directory of a trained (e.g. full-precision) model to distil from; None trains on labels alone.
    teacher: str | None = None
    #: Weight of the distillation term: loss = (1 - w) * task loss + w * T^2 * KL(teacher || student).
    #: 1.0 (distillation alone) is the N2UQ/ReActNet recipe.
    distill_weight: float = 1.0
    #: Softmax temperature T of the distillation term.
    distill_temperature: float = 1.0
    #: Run directory of a trained model whose ``model.pt`` initialises this one before training (entries whose
    #: names and shapes match; e.g. a full-precision run before binarizing it); None starts from random weights.
    init_from: str | None = None
    #: ``plain`` or ``two-step`` (step 1: binary activations, real weights; step 2: binary weights too, from step 1;
    #: each step with its own schedule from ``lr`` and fresh Adam moments). Two-step with ``--quant uniform``
    #: scales binary weights by mean |w| per channel unless ``model_options.weight_scale`` says otherwise.
    recipe: Recipe = Recipe.PLAIN
    #: Epochs of step 1; None = half of ``epochs`` (rounded down), fixed at the start of the run (a resume keeps it).
    step1_epochs: int | None = None
    #: Adam weight decay of each step (ReActNet's 1e-5 with real weights, 0 with binary ones).
    step1_weight_decay: float = 1e-5
    step2_weight_decay: float = 0.0
    #: A bit-width search's hardware budget, as ``hwq cost --budget`` takes it (``lut=20000,fps=1e6``); only for a
    #: method that searches (``bmpq``, ``saq-gen``), which needs one. The run records the map it chose as
    #: ``precision``.
    budget: str | None = None
    #: The board the budget is for (``hwq boards``); None: pynq-z2.
    board: str | None = None

    def __post_init__(self) -> None:
        """Check every field once, for the Python API and the CLI alike; a bad value names its field."""
        try:
            self.recipe = Recipe(self.recipe)
        except ValueError:
            raise ConfigError(f"recipe: '{self.recipe}' is not one of {', '.join(r.value for r in Recipe)}") from None
        for name, enum in (("schedule", Schedule), ("loss", Loss)):
            value = getattr(self, name)
            if value is None and name == "schedule":
                continue
            try:
                setattr(self, name, enum(value))
            except ValueError:
                raise ConfigError(
                    f"{name}: '{value}' is not one of {', '.join(e.value for e in enum)}"
                ) from None
        self.method, self.quant = resolve_method(self.method, self.quant)
        self.model_options = method_options(self.method, self.model_options) \
            if isinstance(self.model_options, dict) else self.model_options
        self.precision = read_precision(self.precision)
        self._check_types()
        self._check_ranges()
        self._check_recipe()
        check_model_options(self.model, self.quant, self.model_options)
        check_method_options(self.method, self.method_options)
        check_method_bits(self.method, self.wbits)
        check_method_dropout(self.method, self.dropout)
        check_method_budget(self.method, self.budget, self.board)

    def _check_types(self) -> None:
        for name in ("model", "dataset", "quant", "device"):
            if not isinstance(getattr(self, name), str):
                raise ConfigError(f"{name}: expected a name (a string), got {getattr(self, name)!r}")
        for name in ("data_dir", "teacher", "init_from"):
            if getattr(self, name) is not None and not isinstance(getattr(self, name), str):
                raise ConfigError(f"{name}: expected a path or null, got {getattr(self, name)!r}")
        for name in ("epochs", "batch_size", "wbits", "abits", "seed"):
            if not _is_int(getattr(self, name)):
                raise ConfigError(f"{name}: expected an integer, got {getattr(self, name)!r}")
        for name in ("lr", "weight_decay", "dropout", "distill_weight", "distill_temperature", "step1_weight_decay",
                     "step2_weight_decay"):
            if not _is_finite_number(getattr(self, name)):
                raise ConfigError(f"{name}: expected a finite number, got {getattr(self, name)!r}")
        if not isinstance(self.model_options, dict) or not all(isinstance(k, str) for k in self.model_options):
            raise ConfigError(f"model_options: expected a mapping of option names to values, "
                              f"got {self.model_options!r}")

    def _check_ranges(self) -> None:
        # (field, allowed, what is expected): one line per numeric field, in the order of the fields above.
        checks = (
            ("wbits", self.wbits >= 1, "a bit-width >= 1 (the quantizer family says which it supports)"),
            ("abits", self.abits >= 1, "a bit-width >= 1 (the quantizer family says which it supports)"),
            ("epochs", self.epochs >= 1, "at least 1 epoch"),
            ("batch_size", self.batch_size >= 1, ">= 1"),
            ("lr", self.lr > 0, "a learning rate > 0"),
            ("weight_decay", self.weight_decay >= 0, ">= 0"),
            ("dropout", 0.0 <= self.dropout < 1.0, "a fraction in [0, 1)"),
            ("seed", 0 <= self.seed < 2**32, "an integer in [0, 2^32)"),
            ("distill_weight", 0.0 <= self.distill_weight <= 1.0, "a fraction in [0, 1]"),
            ("distill_temperature", self.distill_temperature > 0, "> 0"),
            ("step1_weight_decay", self.step1_weight_decay >= 0, ">= 0"),
            ("step2_weight_decay", self.step2_weight_decay >= 0, ">= 0"),
        )
        for name, allowed, expected in checks:
            if not allowed:
                raise ConfigError(f"{name}: expected {expected}, got {getattr(self, name)!r}")
        if self.threads is not None and not (_is_int(self.threads) and self.threads >= 1):
            raise ConfigError(f"threads: expected a positive integer or null, got {self.threads!r}")
        if self.train_subset is not None and not (_is_int(self.train_subset) and self.train_subset >= 1):
            raise ConfigError(f"train_subset: expected a positive integer or null, got {self.train_subset!r}")
        if self.test_subset is not None and not (_is_int(self.test_subset) and self.test_subset >= 1):
            raise ConfigError(f"test_subset: expected a positive integer or null, got {self.test_subset!r}")
        if self.device not in ("cpu", "cuda", "auto"):
            raise ConfigError(f"device: expected cpu, cuda or auto, got '{self.device}'")

    def schedule_used(self) -> Schedule:
        """The learning-rate schedule: ``schedule``, or the recipe's when unset."""
        if self.schedule is not None:
            return self.schedule
        return Schedule.LINEAR if self.recipe is Recipe.TWO_STEP else Schedule.COSINE

    def _check_recipe(self) -> None:
        if self.recipe is Recipe.TWO_STEP and self.budget is not None:
            raise ConfigError("budget: the two-step recipe switches every weight layer to binary weights in its "
                              "second step; a bit-width search (--budget) is not supported with --recipe two-step")
        if self.recipe is Recipe.TWO_STEP and self.precision:
            raise ConfigError("precision: the two-step recipe switches every weight layer to binary weights in its "
                              "second step; per-layer bit-widths are not supported with --recipe two-step")
        if self.recipe is not Recipe.TWO_STEP:
            if self.step1_epochs is not None:
                raise ConfigError(f"step1_epochs: only --recipe two-step has steps, got {self.step1_epochs!r} "
                                  f"with --recipe {self.recipe.value}")
            return
        if self.quant not in TWO_STEP_FAMILIES:
            raise ConfigError(f"recipe: two-step switches binary weights on after step 1; --quant {self.quant} is "
                              f"not one of {', '.join(TWO_STEP_FAMILIES)}")
        if self.wbits != 1:
            raise ConfigError(f"recipe: two-step trains binary weights (--wbits 1), got --wbits {self.wbits}")
        if self.weight_decay != 0:
            raise ConfigError(f"weight_decay: the two-step recipe sets it per step (step1_weight_decay, "
                              f"step2_weight_decay); expected 0, got {self.weight_decay!r}")
        if self.epochs < 2:
            raise ConfigError(f"epochs: the two-step recipe needs at least 2 (one per step), got {self.epochs}")
        if self.step1_epochs is not None and not (_is_int(self.step1_epochs)
                                                  and 1 <= self.step1_epochs < self.epochs):
            raise ConfigError(f"step1_epochs: expected an integer in [1, epochs - 1] = [1, {self.epochs - 1}] "
                              f"(step 2 needs an epoch), got {self.step1_epochs!r}")
        if self.quant == "uniform" and "weight_scale" not in self.model_options:
            # XNOR-Net/ReActNet's per-channel mean |w|; recorded in config.yaml like any option.
            self.model_options = {**self.model_options, "weight_scale": "mean_abs"}

    # --- YAML --------------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["schedule"] = None if self.schedule is None else self.schedule.value
        out["loss"] = self.loss.value
        out["recipe"] = self.recipe.value
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "config") -> "TrainConfig":
        """The config ``data`` describes; an error names ``source`` (the file) and the field."""
        if not isinstance(data, dict):
            raise ConfigError(f"{source}: expected a mapping of training settings, got {data!r}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"{source}: unknown field(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        try:
            return cls(**data)
        except ConfigError as err:
            raise ConfigError(f"{source}: {err}") from None

    @classmethod
    def from_yaml(cls, path: str | Path) -> "TrainConfig":
        """Read a config; a recipe may nest the training settings under a ``train:`` key."""
        path = Path(path)
        data = read_yaml_mapping(path, "config file")
        if isinstance(data.get("train"), dict):
            data = data["train"]
        return cls.from_dict(data, source=str(path))

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def replace(self, **changes: Any) -> "TrainConfig":
        """A copy with ``changes`` applied (None values are ignored, as for unset CLI flags).

        A new ``method`` alone brings its family, and a new ``quant`` alone the method of that name (or none),
        except that a method of the objective or optimizer alone (``any_quant``) stays.
        """
        changes = {k: v for k, v in changes.items() if v is not None}
        if "method" in changes and "quant" not in changes:
            changes["quant"] = None
        keeps_method = self.method is not None and METHODS[self.method].any_quant
        if "quant" in changes and "method" not in changes and not keeps_method:
            changes["method"] = None
        return dataclasses.replace(self, **changes)
