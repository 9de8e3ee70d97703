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


class Interrupted(KeyboardInterrupt):
    """The run was stopped by Ctrl-C (SIGINT) or SIGTERM.

    A ``KeyboardInterrupt``, so a stage that cleans up after Ctrl-C (writes its report as ``interrupted``, keeps
    its last checkpoint) handles SIGTERM the same way. ``exit_status`` follows the shell's convention, 128 + the
    signal number (130 for SIGINT, 143 for SIGTERM); ``detail`` is what the stage kept, for the one-line message.
    """

    def __init__(self, signal_name: str = "SIGINT", signal_number: int = 2, detail: str | None = None) -> None:
        super().__init__(signal_name)
        self.signal_name, self.signal_number, self.detail = signal_name, signal_number, detail

    @property
    def exit_status(self) -> int:
        return 128 + self.signal_number

    @classmethod
    def wrap(cls, err: KeyboardInterrupt, detail: str) -> "Interrupted":
        """The same interruption (Ctrl-C or the signal behind ``err``) with what the stage kept as ``detail``."""
        if isinstance(err, Interrupted):
            return cls(err.signal_name, err.signal_number, detail)
        return cls(detail=detail)


def os_error_message(err: OSError) -> str:
    """One line for an OSError a user can act on: the file and the reason (``no space left on device``).

    >>> os_error_message(PermissionError(13, "Permission denied", "runs/x/model.pt"))
    'runs/x/model.pt: permission denied'
    """
    reason = (err.strerror or type(err).__name__).lower()
    where = err.filename if err.filename is not None else None
    return f"{where}: {reason}" if where else reason
