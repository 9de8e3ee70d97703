# SPDX-License-Identifier: BSD-3-Clause
"""Settings of one measurement run (:class:`MeasureConfig`), checked when they are made.

The Python API and ``hwq measure`` share this one check: a value out of range is a :class:`~hwq.errors.ConfigError`
of one line naming the flag and what was expected, before any port is opened.

>>> MeasureConfig(port="/dev/pts/3", samples=-5)                       # doctest: +SKIP
hwq.errors.ConfigError: --samples -5: expected an integer >= 1 (or none: the whole test split)
"""

from __future__ import annotations

from dataclasses import dataclass

# The range checks are shared with the emulated board's settings (hwq.device.emulator.FaultConfig).
from hwq.checks import check_choice, check_int, check_number, check_text, is_int  # noqa: F401
from hwq.errors import ConfigError
from hwq.wire import LPM_FREQS_HZ, MAX_INPUT_BYTES  # noqa: F401  (re-exported: the flags' ranges)

MODES = ("performance", "accuracy", "energy")
POWER_SOURCES = ("rails", "lpm01a")
#: The LPM01A supplies 1.8 V to 3.3 V.
LPM_VOLTAGE_RANGE_V = (1.8, 3.3)
#: The shortest timed window asked for: 1 ms is 1,000 ticks of the 1 us timer (0.1 % rounding at worst).
MIN_WINDOW_S = 0.001

#: Fields set by a flag of ``hwq measure`` whose name is not ``--`` + the field name with dashes; fields without
#: a flag are named as ``MeasureConfig.<field>`` in errors.
_FLAGS = {"out_dir": "--out", "build_dir": "--build", "timeout_s": "--timeout", "power_voltage_v": "--power-voltage"}
_NO_FLAG = {"max_n", "probe_us", "resets_allowed", "power_baud", "power_freq"}


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
    pipeline: bool = False                  # accuracy: send an image's db and infer commands at once (a device
                                            # that buffers them: hwq emulate, the PYNQ agent), not one by one
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
        for name in ("force", "pipeline"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{flag(name)} {getattr(self, name)!r}: expected true or false")
        if self.mode == "energy" and self.power == "lpm01a" and not self.power_port:
            raise ConfigError("--mode energy with the lpm01a monitor: give --power-port PORT")
