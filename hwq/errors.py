# SPDX-License-Identifier: BSD-3-Clause
"""One error hierarchy for hwq.

``HwqError`` is what a user sees: the CLI prints its message on one line and exits with status 2.
Every message names the file, field or node at fault and what was expected there.
"""


class HwqError(Exception):
    """A user-facing error: bad input, missing file, failed verification."""


class DataError(HwqError):
    """A dataset is missing, corrupt or of the wrong shape."""


class ConfigError(HwqError):
    """A setting (CLI flag, YAML field) is unknown or out of range."""


class CheckpointError(HwqError):
    """A checkpoint or run directory cannot be read."""


class VerificationError(HwqError):
    """A stage's output does not compute what its input computed."""
