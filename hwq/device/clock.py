# SPDX-License-Identifier: BSD-3-Clause
"""The emulated board's timer: a cycle counter at the accelerator's clock, read in whole microseconds (floored,
like a hardware timer). Cycles may be fractions (a simulated initiation interval need not be whole), so that a
window of N inferences lasts exactly ``fill + (N - 1) * II`` cycles.

>>> clock = VirtualClock(100.0); clock.advance(250); clock.us()
2
"""

from __future__ import annotations

from fractions import Fraction


class VirtualClock:
    """Cycles since the (last) boot at ``clock_mhz``; :meth:`us` is the microsecond timer the protocol reads."""

    def __init__(self, clock_mhz: float) -> None:
        self.cycles: int | Fraction = 0
        self._mhz = Fraction(clock_mhz).limit_denominator(1_000_000)
        self._whole_mhz = int(self._mhz) if self._mhz.denominator == 1 else None

    def advance(self, cycles: int | Fraction) -> None:
        # whole counts stay Python ints (a Fraction per command cost the emulated board a fifth of its time);
        # a fractional interval makes the count a Fraction, exact, until it is whole again
        total = self.cycles + (cycles if isinstance(cycles, (int, Fraction)) else Fraction(cycles))
        self.cycles = total.numerator if type(total) is Fraction and total.denominator == 1 else total

    def us(self) -> int:
        if self._whole_mhz is not None and type(self.cycles) is int:
            return self.cycles // self._whole_mhz
        return int(self.cycles / self._mhz)
