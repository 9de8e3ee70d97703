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
