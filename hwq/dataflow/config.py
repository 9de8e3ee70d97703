# SPDX-License-Identifier: BSD-3-Clause
"""The build configuration: one frozen dataclass, each field with its unit and the reason for its default."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
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
    #: A LUT budget (FINN's estimate) the folding must also stay within, below the board's size: the fastest
    #: folding that fits both, or the target's folding only if it does. None: the board alone limits.
    max_lut: int | None = None
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
    #: Build a ``model.onnx`` whose export verification is missing, failed or about another file (``export.json``);
    #: off by default, since the hardware would implement a graph nobody checked. The manifest records it.
    force: bool = False
    #: A folder of the user's own board files, searched before ``$HWQ_BOARDS`` and the packaged boards.
    boards_dir: str | None = None
    #: The dataset whose test split feeds the gates (digits, mnist, cifar10); None means the run's own (an hwq
    #: run); a model hwq did not train needs it, or ``calibration``.
    dataset: str | None = None
    #: A ``.npz`` of the user's own uint8 images (array ``images``) for the gates, instead of a dataset's.
    calibration: str | None = None
    #: The graph's input is ``pixels * input_scale + input_offset``; None for both means the convention found on
    #: the graph (``pixels / 255``, or the pixels themselves for an input annotated UINT8); see
    #: :mod:`hwq.dataflow.input_convention`.
    input_scale: float | None = None
    input_offset: float | None = None

    def __post_init__(self) -> None:
        check_fields(self, {"board": str, "folding_file": (str, type(None)), "out_dir": (str, type(None)),
                            "data_dir": (str, type(None)), "fix_datatypes": bool, "codegen": bool, "force": bool,
                            "boards_dir": (str, type(None))})
        check_source_fields(self)
        if self.target_fps is not None and self.folding_file is not None:
            raise ConfigError("target_fps (--target-fps) and folding_file (--folding) exclude each other; "
                              "give one or neither")
        if self.target_fps is not None:
            check_number("target_fps", "--target-fps", self.target_fps, low=0.0, low_open=True)
        check_number("fit_fraction", None, self.fit_fraction, low=0.0, low_open=True, high=1.0)
        if self.max_lut is not None:
            check_number("max_lut", "--max-lut", self.max_lut, low=1, integer=True)
        check_number("verify_samples", "--verify-samples", self.verify_samples, low=1, integer=True)

    @property
    def folding_mode(self) -> str:
        """``file``, ``target_fps`` or ``fastest_fitting``."""
        if self.folding_file is not None:
            return "file"
        return "target_fps" if self.target_fps is not None else "fastest_fitting"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def canonical(self) -> "BuildConfig":
        """This config with the board's own name (``PYNQ-Z2`` -> ``pynq-z2``), checked to be a FINN board: what a
        build records and the flow compares. An unknown or open board is a one-line ConfigError."""
        from hwq.boards import load_board

        board = load_board(self.board, self.boards_dir)
        if board.shell == "open":
            raise ConfigError(f"board '{board.name}' is built by the open backend (shell: open): add --backend "
                              "open")
        return dataclasses.replace(self, board=board.name)

    def build_dir(self, run_dir: str | Path) -> Path:
        """Where the build goes: ``out_dir``, else ``<run>/build-<board>`` (the board's own name); for a bare
        QONNX file ``MODEL.onnx``, ``MODEL-build-<board>`` beside it."""
        return Path(self.out_dir) if self.out_dir else default_build_dir(run_dir, self.canonical().board)

    def replace(self, **changes: Any) -> "BuildConfig":
        """A copy with ``changes`` applied (None values are ignored, as for unset CLI flags)."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})


def default_build_dir(source: str | Path, suffix: str) -> Path:
    """``<run>/build-<suffix>`` for a run folder, ``<dir>/<stem>-build-<suffix>`` for a file ``<dir>/<stem>.onnx``.

    >>> default_build_dir("runs/a", "pynq-z2").as_posix(), default_build_dir("m/tfc.onnx", "pynq-z2").as_posix()
    ('runs/a/build-pynq-z2', 'm/tfc-build-pynq-z2')
    """
    source = Path(source)
    if source.suffix == ".onnx":
        return source.parent / f"{source.stem}-build-{suffix}"
    return source / f"build-{suffix}"


def check_source_fields(config: Any) -> None:
    """The fields that say what feeds the gates and what the graph's input is (both backends' configs)."""
    check_fields(config, {"dataset": (str, type(None)), "calibration": (str, type(None))})
    if config.dataset is not None and config.calibration is not None:
        raise ConfigError("dataset (--dataset) and calibration (--calibration) exclude each other; give one")
    if config.dataset is not None:
        from hwq.catalog import DATASETS

        if config.dataset not in DATASETS:
            raise ConfigError(f"dataset (--dataset) '{config.dataset}': expected one of {', '.join(DATASETS)}")
    if config.input_scale is not None:
        check_number("input_scale", "--input-scale", config.input_scale)
        if config.input_scale == 0:
            raise ConfigError("input_scale (--input-scale): expected a non-zero number, got 0")
    if config.input_offset is not None:
        check_number("input_offset", "--input-offset", config.input_offset)


def _name(field: str, flag: str | None) -> str:
    return f"{field} ({flag})" if flag else field


def check_number(field: str, flag: str | None, value: Any, *, low: float | None = None, high: float | None = None,
                 low_open: bool = False, high_open: bool = False, integer: bool = False) -> None:
    """A one-line ConfigError unless ``value`` is a finite number (an integer if ``integer``) in range.

    >>> check_number("target_fps", "--target-fps", float("nan"), low=0, low_open=True)
    Traceback (most recent call last):
    hwq.errors.ConfigError: target_fps (--target-fps): expected a finite number > 0, got nan
    """
    kind = "an integer" if integer else "a finite number"
    bounds = []
    if low is not None:
        bounds.append(f"{'>' if low_open else '>='} {low:g}")
    if high is not None:
        bounds.append(f"{'<' if high_open else '<='} {high:g}")
    expected = f"expected {kind}" + (f" {' and '.join(bounds)}" if bounds else "")
    ok_type = isinstance(value, int) if integer else isinstance(value, (int, float))
    if isinstance(value, bool) or not ok_type or (not integer and not math.isfinite(value)):
        raise ConfigError(f"{_name(field, flag)}: {expected}, got {value!r}")
    if (low is not None and (value < low or (low_open and value == low))) or \
            (high is not None and (value > high or (high_open and value == high))):
        raise ConfigError(f"{_name(field, flag)}: {expected}, got {value!r}")


def check_fields(config: Any, kinds: dict[str, Any]) -> None:
    """A one-line ConfigError for a field of the wrong type (e.g. a YAML recipe giving ``board: 7``)."""
    for name, kind in kinds.items():
        value = getattr(config, name)
        if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
            raise ConfigError(f"{name}: expected {getattr(kind, '__name__', 'a string or nothing')}, "
                              f"got {value!r}")
