# SPDX-License-Identifier: BSD-3-Clause
"""Range checks of settings, each failing with a one-line :class:`~hwq.errors.ConfigError` that names the flag and
what was expected: shared by the host's :class:`hwq.harness.config.MeasureConfig` and the emulated board's
:class:`hwq.device.emulator.FaultConfig`.

>>> check_int("--windows", 0, 1)
Traceback (most recent call last):
hwq.errors.ConfigError: --windows 0: expected an integer >= 1
"""

from __future__ import annotations

import math
from typing import Any

from hwq.errors import ConfigError


def is_int(value: Any) -> bool:
    """An integer, and not a bool (YAML's ``true`` would pass ``isinstance(value, int)``)."""
    return isinstance(value, int) and not isinstance(value, bool)


def check_int(flag: str, value: Any, minimum: int, maximum: int | None = None, note: str = "") -> None:
    """Raise a one-line ConfigError unless ``value`` is an integer in ``[minimum, maximum]``.

    >>> check_int("--windows", 0, 1)
    Traceback (most recent call last):
    hwq.errors.ConfigError: --windows 0: expected an integer >= 1
    """
    if is_int(value) and value >= minimum and (maximum is None or value <= maximum):
        return
    span = f">= {minimum}" if maximum is None else f"in [{minimum}, {maximum}]"
    raise ConfigError(f"{flag} {value!r}: expected an integer {span}{note}")


def check_number(flag: str, value: Any, minimum: float, maximum: float | None = None, *, above: bool = False,
                 unit: str = "") -> None:
    """Raise a one-line ConfigError unless ``value`` is a finite number ``>= minimum`` (``> minimum`` with
    ``above``) and ``<= maximum``.

    >>> check_number("--timeout", 0.0, 0, above=True, unit="seconds")
    Traceback (most recent call last):
    hwq.errors.ConfigError: --timeout 0.0: expected a number of seconds > 0
    """
    number = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if number and (value > minimum if above else value >= minimum) and (maximum is None or value <= maximum):
        return
    what = f"a number of {unit}" if unit else "a number"
    span = (f"{'>' if above else '>='} {minimum:g}" if maximum is None else f"in [{minimum:g}, {maximum:g}]")
    raise ConfigError(f"{flag} {value!r}: expected {what} {span}")


def check_choice(flag: str, value: Any, choices) -> None:
    if value not in choices:
        raise ConfigError(f"{flag} {value!r}: expected one of {', '.join(choices)}")


def check_text(flag: str, value: Any) -> None:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{flag} {value!r}: expected a non-empty path or name")
