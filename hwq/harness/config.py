# SPDX-License-Identifier: BSD-3-Clause
"""Settings of one measurement run (:class:`MeasureConfig`), checked when they are made.

The Python API and ``hwq measure`` share this one check: a value out of range is a :class:`~hwq.errors.ConfigError`
of one line naming the flag and what was expected, before any port is opened.

>>> MeasureConfig(port="/dev/pts/3", samples=-5)                       # doctest: +SKIP
hwq.errors.ConfigError: --samples -5: expected an integer >= 1 (or none: the whole test split)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from hwq.errors import ConfigError

MODES = ("performance", "accuracy", "energy")
POWER_SOURCES = ("rails", "lpm01a")
#: The LPM01A's sampling frequencies (its ``freq`` command), in Hz.
LPM_FREQS_HZ = {"100k": 100_000, "50k": 50_000, "20k": 20_000, "10k": 10_000, "5k": 5000, "2k": 2000,
                "1k": 1000, "500": 500, "200": 200, "100": 100, "50": 50, "20": 20, "10": 10, "5": 5, "2": 2, "1": 1}
#: The LPM01A supplies 1.8 V to 3.3 V.
LPM_VOLTAGE_RANGE_V = (1.8, 3.3)
#: The shortest timed window asked for: 1 ms is 1,000 ticks of the 1 us timer (0.1 % rounding at worst).
MIN_WINDOW_S = 0.001
#: The largest input a device is asked to hold (the emulated board's ``db load`` limit, 16 MiB).
MAX_INPUT_BYTES = 1 << 24

#: Fields set by a flag of ``hwq measure`` whose name is not ``--`` + the field name with dashes; fields without
#: a flag are named as ``MeasureConfig.<field>`` in errors.
_FLAGS = {"out_dir": "--out", "build_dir": "--build", "timeout_s": "--timeout", "power_voltage_v": "--power-voltage"}
_NO_FLAG = {"max_n", "probe_us", "resets_allowed", "power_baud", "power_freq"}


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


def flag(field: str) -> str:
    """How errors name a setting: its ``hwq measure`` flag, or ``MeasureConfig.<field>`` when it has none."""
    if field in _NO_FLAG:
        return f"MeasureConfig.{field}"
    return _FLAGS.get(field, "--" + field.replace("_", "-"))


@dataclass(frozen=True)
class MeasureConfig:
    """Settings of one measurement run; every field is checked when the config is made (see :meth:`check`)."""

    port: str                               # device path, pty path or pyserial URL (socket://host:port)
    mode: str = "performance"               # performance, accuracy or energy
    out_dir: str = "measure"                # reports go here
    build_dir: str | None = None            # build whose input layout/dataset/reference model to use
    force: bool = False                     # measure a build whose manifest is not done or whose gates failed
    baud: int = 115200                      # the PYNQ-Z2's UART default
    windows: int = 5                        # MLPerf Tiny: 5 windows, median reported
    min_window_s: float = 10.0              # MLPerf Tiny: each window lasts >= 10 s (device time); >= 1 ms
    latency_windows: int = 5                # `infer 1` windows timing one inference (median reported)
    warmup: int = 10                        # warm-up inferences before each window
    max_n: int = 10**12                     # cap on inferences per window (a runaway guard, ~1 day at 10 M/s)
    probe_us: int = 10_000                  # device time a probe window must reach before N is extrapolated
    samples: int | None = None              # accuracy: test images to send (None: the whole test split)
    data_dir: str | None = None             # dataset folder (default: the build's, $HWQ_DATA or ../shared/data)
    input_bytes: int | None = None          # performance without a build: size of the (zero) input
    timeout_s: float = 5.0                  # per reply (infer: 30 s or 3x the expected window, the larger)
    resets_allowed: int = 3                 # device reboots tolerated per run
    power: str = "rails"                    # energy: rails (the board's m-power- extension) or lpm01a (monitor)
    power_port: str | None = None           # energy with lpm01a: the monitor's serial port
    power_baud: int = 3_686_400             # the LPM01A's VCP rate, as MLPerf Tiny's runner uses
    power_voltage_v: float = 3.3            # LPM01A supply voltage (1.8-3.3 V); power = current x voltage
    power_freq: str = "1k"                  # LPM01A sampling frequency (MLPerf Tiny: 1k)
    transcript_max_mb: float = 10.0         # transcript.log is rotated beyond this size (MB, 10^6 bytes) ...
    transcript_keep: int = 5                # ... into this many gzip-compressed older parts (transcript.1.log.gz)

    def __post_init__(self) -> None:
        self.check()

    def check(self) -> None:
        """Every field in its range; raises a one-line ConfigError naming the flag (or field) and the range."""
        check_text(flag("port"), self.port)
        check_choice(flag("mode"), self.mode, MODES)
        check_text(flag("out_dir"), str(self.out_dir))
        for name, minimum in (("baud", 1), ("windows", 1), ("latency_windows", 1), ("warmup", 0), ("max_n", 1),
                              ("probe_us", 1), ("resets_allowed", 0), ("power_baud", 1), ("transcript_keep", 0)):
            check_int(flag(name), getattr(self, name), minimum)
        check_number(flag("min_window_s"), self.min_window_s, MIN_WINDOW_S, unit="seconds")
        check_number(flag("timeout_s"), self.timeout_s, 0, above=True, unit="seconds")
        check_number(flag("transcript_max_mb"), self.transcript_max_mb, 0, above=True, unit="MB")
        if self.samples is not None:
            check_int(flag("samples"), self.samples, 1, note=" (or none: the whole test split)")
        if self.input_bytes is not None:
            check_int(flag("input_bytes"), self.input_bytes, 1, MAX_INPUT_BYTES)
        check_choice(flag("power"), self.power, POWER_SOURCES)
        check_choice(flag("power_freq"), self.power_freq, LPM_FREQS_HZ)
        check_number(flag("power_voltage_v"), self.power_voltage_v, *LPM_VOLTAGE_RANGE_V, unit="volts")
        if not isinstance(self.force, bool):
            raise ConfigError(f"{flag('force')} {self.force!r}: expected true or false")
        if self.mode == "energy" and self.power == "lpm01a" and not self.power_port:
            raise ConfigError("--mode energy with the lpm01a monitor: give --power-port PORT")
