# SPDX-License-Identifier: BSD-3-Clause
"""The progressive bottom-to-top binarization schedule (BiTAT's step C), as pure arithmetic on epochs.

Units (a weight layer and the activation after it) are numbered from the input side. They are grouped into
contiguous stages; stage ``k`` switches to binary at the start of epoch ``start_epoch(k)``, which strictly
increases with ``k``. A switched unit never returns to full precision (the layers enforce that; this module only
says *when*). The epochs are split into an optional full-precision warm-up, the progressive window, and a final
fine-tune of the whole binary network.

>>> plan = ProgressivePlan(final_fraction=0.25)
>>> [plan.start_epoch(u, n_units=4, epochs=8) for u in range(4)]
[0, 1, 3, 4]
>>> plan.binary_prefix(epoch=3, n_units=4, epochs=8)
3
"""

from __future__ import annotations

from dataclasses import dataclass

from hwq.errors import ConfigError


@dataclass(frozen=True)
class ProgressivePlan:
    #: False: every unit is binary from the first epoch (the "no progressive schedule" ablation).
    enabled: bool = True
    #: Fraction of the epochs spent fine-tuning the fully binary network at the end (the design's final
    #: fine-tune); 0.25 leaves three quarters of the run for the layer-by-layer window.
    final_fraction: float = 0.25
    #: Fraction of the epochs trained in full precision first; 0 because BiTAT normally starts from a trained
    #: full-precision model (``--init-from``).
    warmup_fraction: float = 0.0
    #: Number of stages; None = one per unit, or fewer when the window has fewer epochs than units (a stage
    #: switches at an epoch boundary, so two stages never share an epoch and the order stays strict).
    stages: int | None = None

    def __post_init__(self) -> None:
        if not 0.0 <= self.final_fraction < 1.0:
            raise ConfigError(f"model_options.bitat_final: expected a fraction in [0, 1), got {self.final_fraction}")
        if not 0.0 <= self.warmup_fraction < 1.0 or self.warmup_fraction + self.final_fraction >= 1.0:
            raise ConfigError(
                f"model_options.bitat_warmup: expected a fraction in [0, 1) with warm-up + final < 1, "
                f"got {self.warmup_fraction} + {self.final_fraction}"
            )
        if self.stages is not None and (not isinstance(self.stages, int) or self.stages < 1):
            raise ConfigError(f"model_options.bitat_stages: expected a positive integer, got {self.stages!r}")

    def window(self, epochs: int) -> tuple[int, int]:
        """``(first, length)`` of the progressive window in epochs (at least one epoch long)."""
        first = int(round(self.warmup_fraction * epochs))
        last = epochs - int(round(self.final_fraction * epochs))
        first = min(first, max(0, epochs - 1))
        return first, max(1, last - first)

    def n_stages(self, n_units: int, epochs: int) -> int:
        wanted = n_units if self.stages is None else min(self.stages, n_units)
        return max(1, min(wanted, self.window(epochs)[1]))

    def stage_of(self, unit: int, n_units: int, epochs: int) -> int:
        """Stage of ``unit``: contiguous, non-decreasing in ``unit``."""
        return unit * self.n_stages(n_units, epochs) // n_units

    def start_epoch(self, unit: int, n_units: int, epochs: int) -> int:
        """The epoch (0-based) at whose start ``unit`` switches to binary."""
        if not 0 <= unit < n_units:
            raise ValueError(f"unit {unit} outside 0..{n_units - 1}")
        if not self.enabled:
            return 0
        first, length = self.window(epochs)
        stages = self.n_stages(n_units, epochs)
        return first + self.stage_of(unit, n_units, epochs) * length // stages

    def binary_prefix(self, epoch: int, n_units: int, epochs: int) -> int:
        """How many units (from the input side) are binary during ``epoch``."""
        return sum(self.start_epoch(u, n_units, epochs) <= epoch for u in range(n_units))


@dataclass(frozen=True)
class LayerPhases:
    """BiTAT's second-design schedule: one phase per binary layer, as fractions of the whole training.

    Training progress runs from 0 to 1 (``(epoch + steps done / steps) / epochs``, so a phase may be shorter than an
    epoch: a network has more binary layers than a CPU run has epochs). After the warm-up (binary activations, real
    weights), layer ``u`` is quantized during ``phase(u)``; its progress ``t`` inside the phase goes from 0 to 1 and
    it is binary from the phase's end. The last ``final`` of the training fine-tunes the all-binary network.
    Not progressive: one phase, the whole window, for every layer at once.

    >>> plan = LayerPhases(final=0.2)
    >>> [plan.phase(u, 4) for u in range(2)], plan.t(1, 4, progress=0.3)
    ([(0.0, 0.2), (0.2, 0.4)], 0.5)
    >>> plan.block_end(0, 4, block_size=2)
    0.4
    """

    progressive: bool = True
    warmup: float = 0.0
    final: float = 0.25

    def __post_init__(self) -> None:
        if not 0.0 <= self.warmup < 1.0 or not 0.0 <= self.final < 1.0 or self.warmup + self.final >= 1.0:
            raise ConfigError(f"model_options.bitat_warmup, bitat_final: expected fractions in [0, 1) with warm-up "
                              f"+ final < 1, got {self.warmup} + {self.final}")

    def phase(self, unit: int, n_units: int) -> tuple[float, float]:
        """``(start, end)`` of ``unit``'s phase in training progress."""
        if not 0 <= unit < n_units:
            raise ValueError(f"unit {unit} outside 0..{n_units - 1}")
        first, length = self.warmup, 1.0 - self.final - self.warmup
        if not self.progressive:
            return first, first + length
        return first + unit * length / n_units, first + (unit + 1) * length / n_units

    def t(self, unit: int, n_units: int, progress: float) -> float:
        """How far ``unit`` is through its phase at ``progress``: 0 before, 1 from its end on."""
        start, end = self.phase(unit, n_units)
        return min(1.0, max(0.0, (progress - start) / (end - start)))

    def block_end(self, unit: int, n_units: int, block_size: int) -> float:
        """The end of the last phase of ``unit``'s block (blocks: ``block_size`` consecutive units)."""
        last = min(n_units - 1, (unit // block_size + 1) * block_size - 1)
        return self.phase(last, n_units)[1]
