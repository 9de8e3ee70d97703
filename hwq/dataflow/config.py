# SPDX-License-Identifier: BSD-3-Clause
"""The build configuration: one frozen dataclass, each field with its unit and the reason for its default."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from hwq.errors import ConfigError


@dataclass(frozen=True)
class BuildConfig:
    """Settings of one ``hwq build`` (the CLI flags have the same names).

    >>> BuildConfig(board="zcu104", target_fps=100_000).folding_mode
    'target_fps'
    """

    #: Board name, a file in ``boards/`` (``hwq boards`` lists them).
    board: str = "pynq-z2"
    #: Frames per second to fold for, at the board's clock; None (with no folding file) means the fastest
    #: folding that fits ``fit_fraction`` of the board.
    target_fps: float | None = None
    #: A folding file in FINN's JSON format (node name -> PE/SIMD/...); excludes ``target_fps``.
    folding_file: str | None = None
    #: Output folder; None means ``<run>/build-<board>``.
    out_dir: str | None = None
    #: Largest share of each board resource (LUT, BRAM18, DSP, URAM) the folding may use: 0.8 leaves room for
    #: the shell, FIFOs and data-width converters that the estimates do not count.
    fit_fraction: float = 0.8
    #: Held-out test images the bit-exactness gate runs (first ``n`` of the test split). The HW graph executes
    #: image by image in Python (about 7 ms per image for a TFC), so 100 keeps the gate to about a second.
    verify_samples: int = 100
    #: Correct finn-plus 1.6.1's too-narrow XNOR-popcount datatype (INT7 for 0..64) before code generation.
    #: False only to show the integer-range gate catching the bug.
    fix_datatypes: bool = True
    #: Generate the HLS/RTL sources (PrepareIP); needs no vendor tools.
    codegen: bool = True
    #: Data folder for the run's dataset; None means the run's own setting, then ``$HWQ_DATA`` / ``../shared/data``.
    data_dir: str | None = None

    def __post_init__(self) -> None:
        if self.target_fps is not None and self.folding_file is not None:
            raise ConfigError("target_fps and folding_file exclude each other; give one or neither")
        if self.target_fps is not None and not self.target_fps > 0:
            raise ConfigError(f"target_fps: expected > 0, got {self.target_fps}")
        if not 0.0 < self.fit_fraction <= 1.0:
            raise ConfigError(f"fit_fraction: expected a fraction in (0, 1], got {self.fit_fraction}")
        if not isinstance(self.verify_samples, int) or self.verify_samples < 1:
            raise ConfigError(f"verify_samples: expected an integer >= 1, got {self.verify_samples!r}")

    @property
    def folding_mode(self) -> str:
        """``file``, ``target_fps`` or ``fastest_fitting``."""
        if self.folding_file is not None:
            return "file"
        return "target_fps" if self.target_fps is not None else "fastest_fitting"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> "BuildConfig":
        """A copy with ``changes`` applied (None values are ignored, as for unset CLI flags)."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})
