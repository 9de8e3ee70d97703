# SPDX-License-Identifier: BSD-3-Clause
"""Errors of the measurement harness; all are :class:`hwq.errors.HwqError`, printed on one line by the CLI.

>>> raise DeviceTimeout("/dev/pts/3: no 'm-ready' within 5.0 s after 'name'")   # doctest: +SKIP
"""

from hwq.errors import HwqError


class HarnessError(HwqError):
    """Something went wrong talking to a device under test."""


class ProtocolError(HarnessError):
    """A reply (or a command) does not follow the MLPerf Tiny serial protocol."""


class DeviceError(HarnessError):
    """The device answered a command with an ``e-[...]`` error line."""


class DeviceTimeout(HarnessError):
    """The device did not finish a reply within the timeout."""


class DeviceResetError(HarnessError):
    """The device rebooted in the middle of an exchange (its boot lines appeared)."""


class PortError(HarnessError):
    """The serial port cannot be opened, or vanished while in use."""


__all__ = ["DeviceError", "DeviceResetError", "DeviceTimeout", "HarnessError", "PortError", "ProtocolError"]
