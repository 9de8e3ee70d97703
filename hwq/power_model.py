# SPDX-License-Identifier: BSD-3-Clause
"""The board's power model: what an accelerator draws while busy or idle, split into rails ``ps`` and ``pl``.

The emulated board reports these rails (:mod:`hwq.device`), and the host's energy summary compares a measurement
with them (:mod:`hwq.harness.energy`); both read the build's ``accelerator`` section (:mod:`hwq.accelerator`):
the board's coefficients (``power_model:`` in ``boards/<board>.yaml``, copied there by the build), the clock
``f`` in MHz and the resources the build reports::

    BRAM18     = bram * bram_kbit / 18                     (block RAMs in 18 Kb equivalents: an iCE40 EBR is 4 Kb)
    dynamic_mW = f * (mw_per_mhz_per_klut * LUT / 1000 + mw_per_mhz_per_bram18 * BRAM18)
    pl_mW      = pl_static_mw + activity * dynamic_mW      (activity 1 while inferring, idle_activity otherwise)
    ps_mW      = ps_mw                                     (processing system, memory, board: constant)
    total_mW   = ps_mW + pl_mW

>>> m = PowerModel(ps_mw=1000, pl_static_mw=100, mw_per_mhz_per_klut=0.02, mw_per_mhz_per_bram18=0.005,
...                idle_activity=0.1, clock_mhz=100, lut=10000, bram18=20)
>>> m.total_mw(busy=True), round(m.total_mw(busy=False), 3)
(1130.0, 1103.0)
"""

from __future__ import annotations

from dataclasses import dataclass

from hwq.accelerator import AcceleratorSpec
from hwq.boards.board import POWER_MODEL_KEYS
from hwq.errors import HwqError


@dataclass(frozen=True)
class PowerModel:
    """The emulated board's power (mW) while busy or idle, split into rails ``ps`` and ``pl``."""

    ps_mw: float                    # processing system, DDR, regulators, board: constant (mW)
    pl_static_mw: float             # programmable logic static (leakage) power (mW)
    mw_per_mhz_per_klut: float      # dynamic power per MHz per 1000 LUTs at full activity (mW)
    mw_per_mhz_per_bram18: float    # dynamic power per MHz per 18 Kb BRAM at full activity (mW)
    idle_activity: float            # fraction of the dynamic power drawn while clocked but idle (0..1)
    clock_mhz: float
    lut: float
    bram18: float

    @classmethod
    def from_accelerator(cls, spec: AcceleratorSpec) -> PowerModel:
        """The model of a build's accelerator; a board without ``power_model`` or a build that reports no LUT
        count (``synthesise: false``) is a one-line HwqError."""
        if not spec.power_model:
            raise HwqError(f"boards/{spec.board}.yaml: no power_model (needed for emulated power)")
        res = spec.resources
        if res.get("lut") is None:
            raise HwqError(f"accelerator.resources: no LUT count ({spec.source}), which the power model needs")
        bram18 = float(res.get("bram") or 0) * float(res.get("bram_kbit") or 18) / 18
        return cls(**{k: float(spec.power_model[k]) for k in POWER_MODEL_KEYS}, clock_mhz=spec.clock_mhz,
                   lut=float(res["lut"]), bram18=bram18)

    @classmethod
    def from_manifest(cls, manifest: dict) -> PowerModel:
        """The model of the build whose ``manifest.json`` is ``manifest`` (its ``accelerator`` section only)."""
        return cls.from_accelerator(AcceleratorSpec.from_manifest(manifest))

    @property
    def dynamic_mw(self) -> float:
        return self.clock_mhz * (self.mw_per_mhz_per_klut * self.lut / 1000 + self.mw_per_mhz_per_bram18 * self.bram18)

    def rails_mw(self, busy: bool) -> dict[str, float]:
        activity = 1.0 if busy else self.idle_activity
        return {"ps": self.ps_mw, "pl": self.pl_static_mw + activity * self.dynamic_mw}

    def total_mw(self, busy: bool) -> float:
        return sum(self.rails_mw(busy).values())

    def energy_per_inference_uJ(self, fps: float) -> float:
        """Busy power over the throughput: what one inference costs in a long window (uJ)."""
        return self.total_mw(busy=True) / fps * 1e3
