# SPDX-License-Identifier: BSD-3-Clause
"""Quantizers described as data: what is quantized, to how many bits, signed or not, how it is scaled.

A :class:`QuantSpec` is validated when it is made, so a bad bit-width fails when the model is built,
not at the first forward pass. :mod:`hwq.quant.brevitas_map` turns a spec into a Brevitas quantizer.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from hwq.errors import ConfigError

MIN_BITS, MAX_BITS = 1, 8


class Role(str, Enum):
    """What a quantizer acts on."""

    WEIGHT = "weight"
    ACT = "act"
    INPUT = "input"


class Scaling(str, Enum):
    """How the step size is chosen."""

    CONST = "const"      # fixed: binary weights/activations, the 8-bit input
    LEARNED = "learned"  # a trained parameter (initialised from statistics for weights)


@dataclass(frozen=True)
class QuantSpec:
    """One quantizer.

    >>> QuantSpec(Role.WEIGHT, bits=1).is_binary
    True
    >>> QuantSpec(Role.ACT, bits=2, narrow_range=False, scaling=Scaling.LEARNED).levels
    (-2, -1, 0, 1)
    """

    role: Role
    bits: int
    signed: bool = True
    narrow_range: bool = True
    scaling: Scaling = Scaling.CONST
    #: Top of the representable range at initialisation (Brevitas' ``max_val`` / ``scaling_const``).
    max_val: float = 1.0

    def __post_init__(self) -> None:
        if not isinstance(self.bits, int) or not MIN_BITS <= self.bits <= MAX_BITS:
            raise ConfigError(
                f"{self.role.value} bit-width {self.bits!r} is not supported; expected an integer "
                f"{MIN_BITS}..{MAX_BITS}"
            )
        if self.is_binary and not self.signed:
            raise ConfigError(f"1-bit {self.role.value} quantizer must be signed (bipolar -1/+1)")

    @property
    def is_binary(self) -> bool:
        """Bipolar {-1, +1}: what FINN maps to XNOR-popcount."""
        return self.bits == 1

    @property
    def levels(self) -> tuple[int, ...]:
        """The integer grid the quantized values lie on (before multiplying by the scale)."""
        if self.is_binary:
            return (-1, 1)
        if self.signed:
            low = -(2 ** (self.bits - 1)) + (1 if self.narrow_range else 0)
            return tuple(range(low, 2 ** (self.bits - 1)))
        return tuple(range(0, 2**self.bits - (1 if self.narrow_range else 0)))
