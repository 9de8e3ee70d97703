# SPDX-License-Identifier: BSD-3-Clause
"""The open backend's steps, after FINN's: each ``step_x(model, ctx) -> (model, report)``, run by the same driver
as the FINN flow (:mod:`hwq.dataflow.driver`). The model they receive and pass on is the folded, datatype-corrected
HW graph (``correct_datatypes``); what they make goes into the build folder (``rtl/``, ``sim/``, ``synth/``) and
their reports into the manifest. :func:`open_steps` is the backend's step list for a config.

A script composes them like the build does, e.g. to simulate the Verilog of an existing FINN build::

    checkpoints = step_checkpoints("runs/cnv/build-pynq-z2")
    ctx = OpenBuildContext.for_steps("build-rtl-tmp/cnv", OpenBuildConfig(simulator="verilator"), images,
                                     checkpoints)
    model = ModelWrapper(str(checkpoints["correct_datatypes"]))
    run_steps(steps_named(open_steps(config), "read_layers", "simulate"), model, ctx, {"steps": []},
              progress=StepProgress("cnv"), save=False)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from qonnx.core.modelwrapper import ModelWrapper

from hwq.boards import Board
from hwq.dataflow.driver import Step, step_names
from hwq.dataflow.errors import MappingError
from hwq.dataflow.steps import HW_GRAPH_STEP, STEPS, BuildContext
from hwq.errors import ConfigError, VerificationError
from hwq.rtl.config import OpenBuildConfig
from hwq.rtl.generate import Design, generate_verilog
from hwq.rtl.layers import layers_from_model, run_layers
from hwq.rtl.mvau_form import layers_in_form

StepResult = tuple[ModelWrapper, dict[str, Any]]
#: The FINN steps the open backend runs first: folding, both gates, the datatype correction and FINN's estimate
#: (the baseline the open design is compared with); no HLS code generation, no vendor flow.
FINN_STEPS = STEPS[:step_names(STEPS).index("estimate") + 1]


@dataclass
class OpenBuildContext(BuildContext):
    """The FINN steps' context (``board`` is the folding board) plus the open backend's settings and the board the
    design is synthesised for (``target``)."""

    open_config: OpenBuildConfig = field(default_factory=OpenBuildConfig)
    target: Board | None = None

    @classmethod
    def for_steps(cls, out_dir: str | Path, config: OpenBuildConfig, images: np.ndarray,
                  checkpoints: dict[str, Path], progress=None) -> "OpenBuildContext":
        """A context for running open-backend steps outside a build (scripts): ``images`` uint8 test images
        (N, C, H, W) or (N, features); ``checkpoints`` those of an existing build (:func:`step_checkpoints`)."""
        from hwq.dataflow.progress import quiet

        board, fold, _ = config.boards()
        return cls(config=config.fold_config(), board=fold, out_dir=Path(out_dir), images=images,
                   progress=progress or quiet(), checkpoints=dict(checkpoints), open_config=config, target=board)


def steps_named(steps: list[Step], first: str, last: str) -> list[Step]:
    """The steps from ``first`` to ``last`` (inclusive)."""
    names = step_names(steps)
    for name in (first, last):
        if name not in names:
            raise ConfigError(f"no step '{name}'; the steps: {', '.join(names)}")
    return steps[names.index(first):names.index(last) + 1]


# --- the reference -------------------------------------------------------------------------------------------------
def sim_inputs(images: np.ndarray, n_inputs: int) -> np.ndarray:
    """Test images as the accelerator's input elements: integers, NHWC (the streamlined graph's layout; the same
    order for one channel), one row per image, the first ``n_inputs`` of each."""
    x = np.asarray(images)
    x = np.rint(x * 255).astype(np.int64) if x.dtype.kind == "f" and x.max() <= 1.0 else x.astype(np.int64)
    if x.ndim == 4:
        x = x.transpose(0, 2, 3, 1)
    return x.reshape(len(x), -1)[:, :n_inputs]


def finn_execution(model: ModelWrapper | str | Path, x: np.ndarray) -> np.ndarray:
    """finn's Python execution of the abstract HW graph (before layer specialisation), image by image: the
    integer outputs (N, out elems). A path is loaded after its node domains are checked.

    >>> finn_execution(step_checkpoint(build, HW_GRAPH_STEP), x).shape            # doctest: +SKIP
    (20, 1)
    """
    from qonnx.core.onnx_exec import execute_onnx

    from hwq.dataflow.finn_compat import import_finn_layers
    from hwq.onnx_check import check_domains

    import_finn_layers()

    if not isinstance(model, ModelWrapper):
        model = ModelWrapper(check_domains(model))
    name, out = model.graph.input[0].name, model.graph.output[0].name
    shape = model.get_tensor_shape(name)
    return np.stack([execute_onnx(model, {name: xi.reshape(shape).astype(np.float32)})[out].reshape(-1)
                     for xi in x]).astype(np.int64)


def open_layers(model: ModelWrapper, ctx: OpenBuildContext):
    """The layers of the folded graph in the MVAU form of the build's settings (``mvau_form``); returns
    (graph, report of the form pass: per MVAU its form and, when kept integer, why)."""
    return layers_in_form(layers_from_model(model), ctx.open_config.mvau_form)


def _reference(model: ModelWrapper, ctx: OpenBuildContext) -> tuple[list, np.ndarray, np.ndarray]:
    """The layers of the folded graph (a chain or a DAG) in the build's MVAU form, the simulated inputs and the
    NumPy reference's outputs for them."""
    layers, _ = open_layers(model, ctx)
    x = sim_inputs(ctx.images, layers.in_elems)
    return layers, x, run_layers(layers, x)


def step_read_layers(model: ModelWrapper, ctx: OpenBuildContext) -> StepResult:
    """Read the folded graph into hwq's layers (PE, SIMD, element types, weights, integer thresholds); a node
    without a Verilog block is an ``UnsupportedLayerError`` naming it. Reports each layer's folding (``layers``);
    in a graph with branches, also what feeds each layer (``inputs``: layer names, ``layer.N`` for output N of a
    duplicate, ``input`` for the graph input). With ``mvau_form: planes`` also ``mvau_form``: per MVAU its form
    (``planes`` with K, or ``integer`` and why), and a warning line per integer MVAU whose weights do not
    decompose."""
    layers, forms = open_layers(model, ctx)
    report = {layer.name: {**{key: getattr(layer, key.lower()) for key in ("PE", "SIMD")
                              if hasattr(layer, key.lower())},   # a sliding window has no PE
                           "cycles": layer.cycles} for layer in layers}
    if not layers.is_chain:
        for layer in layers:
            report[layer.name]["inputs"] = [src.label() for src in layers.feeds[layer.name]]
    if ctx.open_config.mvau_form == "integer":
        return model, {"layers": report}
    for name, form in forms.items():
        report[name]["form"] = form["form"]
        layer = layers.layer(name)
        if form["form"] == "integer" and not (layer.xnor or layer.adder):   # those have no plane form to miss
            ctx.progress.warn(f"--mvau-form planes: {name} stays an integer MVAU: {form['reason']}")
    return model, {"layers": report, "mvau_form": {"form": ctx.open_config.mvau_form, "layers": forms}}


def step_check_reference(model: ModelWrapper, ctx: OpenBuildContext) -> StepResult:
    """The NumPy reference of the layers against finn's execution of the abstract HW graph (the checkpoint of
    ``create_dataflow_partition``) on the test images: equal, or a VerificationError naming the first image."""
    hw_path = ctx.checkpoints.get(HW_GRAPH_STEP)
    if hw_path is None:
        raise MappingError(f"step check_reference executes the checkpoint of {HW_GRAPH_STEP}: run that step first")
    _, x, expected = _reference(model, ctx)
    software = finn_execution(hw_path, x).reshape(expected.shape)
    if not np.array_equal(software, expected):
        bad = int(np.argmax((software != expected).any(axis=1)))
        raise VerificationError(f"{hw_path}: NumPy reference differs from finn's execution on image {bad}")
    return model, {"reference": {"n": int(len(x)), "passed": True, "hw_graph": str(_relative(hw_path, ctx)),
                                 "checked": "hwq.rtl.reference == finn execution of the abstract HW graph"}}


# --- the design ----------------------------------------------------------------------------------------------------
def design_record(design: Design, out_dir: Path) -> dict[str, Any]:
    """A design as the manifest holds it: its facts, its files relative to the build folder."""
    return {**design.to_dict(), "files": [str(_relative(Path(f), out_dir)) for f in design.files]}


def design_from_record(record: dict[str, Any], out_dir: Path) -> Design:
    """The :class:`Design` a ``generate_verilog`` step recorded (``design_record``), its files under ``out_dir``."""
    return Design(**{**record, "files": [Path(out_dir) / f for f in record["files"]]})


def _relative(path: Path, ctx_or_dir) -> Path:
    base = Path(getattr(ctx_or_dir, "out_dir", ctx_or_dir)).resolve()
    path = Path(path).resolve()
    return path.relative_to(base) if path.is_relative_to(base) else path


def step_generate_verilog(model: ModelWrapper, ctx: OpenBuildContext) -> StepResult:
    """One Verilog module per layer (an MVAU in the build's ``mvau_form``) and the top level ``accel``
    (``rtl/accel.v``), with a FIFO on each residual shortcut (``design.fifos``: name -> depth in beats); reports the ``design``."""
    design = generate_verilog(open_layers(model, ctx)[0], ctx.out_dir / "rtl", top="accel",
                              tree_levels_per_stage=ctx.open_config.tree_levels_per_stage)
    return model, {"design": design_record(design, ctx.out_dir)}


def step_simulate(model: ModelWrapper, ctx: OpenBuildContext) -> StepResult:
    """cocotb + Icarus or Verilator (``sim/``): every test image free-running, then with random input gaps and
    output back-pressure; every output beat must equal the reference. Reports cycles per image and latency."""
    return simulate_against_reference(model, ctx, _reference,
                                      "hwq.rtl.reference == finn execution of the abstract HW graph")


def simulate_against_reference(model: ModelWrapper, ctx: OpenBuildContext, reference, compared: str) -> StepResult:
    """Simulate the generated design on ``reference(model, ctx)``'s inputs, every output beat equal to its outputs;
    the report says what the reference itself was ``compared`` with (the open backend's and the adder build's
    ``simulate`` differ only there)."""
    from hwq.rtl.simulate import choose_simulator, simulate, simulator_version

    config = ctx.open_config
    design = design_from_record(ctx.reports["design"], ctx.out_dir)
    _, x, expected = reference(model, ctx)
    passes = 2 if config.p_gap or config.p_stall else 1     # free-running, then with back-pressure
    simulator, why = choose_simulator(config.simulator, int(len(x) * passes * design.cycles_bound))
    sim = simulate(design, x, expected, ctx.out_dir / "sim", simulator=simulator, p_gap=config.p_gap,
                   p_stall=config.p_stall)
    return model, {"simulation": {"simulator": simulator, "simulator_choice": why,
                                  "simulator_version": simulator_version(simulator),
                                  "dataset": ctx.reports.get("source", {}).get("dataset"), "n": int(len(x)),
                                  "bit_exact": True, "reference": compared,
                                  "folding_bound_cycles": design.cycles_bound, **sim}}


# --- synthesis -----------------------------------------------------------------------------------------------------
def step_synth_xilinx(model: ModelWrapper, ctx: OpenBuildContext) -> StepResult:
    """Yosys ``synth_xilinx`` for the folding board's part (``synth-xilinx/``): resource counts and the FPS at the
    board clock, all estimates (no open place and route or timing analysis exists for Xilinx parts)."""
    from hwq.rtl.synth_xilinx import synth_xilinx

    board, sim = ctx.board, ctx.reports["simulation"]
    design = design_from_record(ctx.reports["design"], ctx.out_dir)
    r = synth_xilinx(design, ctx.out_dir / "synth-xilinx", part=board.part, board=board.name)
    # no open timing analysis for Xilinx parts: the board clock is assumed to be met
    return model, {"xilinx_estimate": {
        **r, "board": board.name, "available": vars(board.resources), "clock_mhz": board.clock_mhz,
        "fps": board.clock_mhz * 1e6 / sim["cycles_per_image"], "latency_us": sim["latency_cycles"] / board.clock_mhz,
        "fps_label": "estimate: board clock (timing not analysed) / cycles per image in RTL simulation"}}


def step_synthesise(model: ModelWrapper, ctx: OpenBuildContext) -> StepResult:
    """Yosys ``synth_ice40`` / ``synth_ecp5`` into ``synth/design.json``; a netlist that already exceeds the part
    stops here, saying what is over. Reports the cell counts (``yosys``)."""
    from hwq.rtl.synth import map_design

    fpga = ctx.target.fpga
    design = design_from_record(ctx.reports["design"], ctx.out_dir)
    return model, {"yosys": map_design(design, ctx.out_dir / "synth", family=fpga["family"], device=fpga["device"],
                                       package=fpga["package"])}


def step_place_and_route(model: ModelWrapper, ctx: OpenBuildContext) -> StepResult:
    """nextpnr (timing target: the board clock) and the bitstream packer (``synth/design.bin`` / ``.bit``).
    Reports ``synthesis`` (resources, Fmax) and ``measured``: Fmax / simulated cycles per image = FPS."""
    from hwq.rtl.synth import place_and_route

    board, sim = ctx.target, ctx.reports["simulation"]
    fpga = board.fpga
    syn = place_and_route(ctx.out_dir / "synth", name=ctx.reports["design"]["top"], family=fpga["family"],
                          device=fpga["device"], package=fpga["package"], speed=fpga.get("speed"),
                          freq_mhz=board.clock_mhz)
    cycles, latency, fmax = sim["cycles_per_image"], sim.get("latency_cycles"), syn["fmax_mhz"]
    return model, {"synthesis": syn, "measured": {
        "fmax_mhz": fmax, "cycles_per_image": cycles, "latency_cycles": latency,
        "fps": fmax * 1e6 / cycles if fmax else None,
        "latency_us": latency / fmax if fmax and latency is not None else None,
        "lut": syn["lut"]["used"], "ff": syn["ff"], "bram": syn["bram"]["used"], "dsp": syn["dsp"]["used"],
        "label": "measured: cycles in RTL simulation, Fmax and resources from nextpnr"}}


def step_open_folding(model: ModelWrapper, ctx: OpenBuildContext) -> StepResult:
    """Keep the folding within what the open backend generates: its sliding window emits one window pixel (SIMD
    channels) a cycle, so a ``parallel_window`` FINN's search chose is turned off (that layer then takes
    ``window`` times the cycles FINN's parallel window would). ``folding.json`` is rewritten and FINN's estimate
    (a later step) is of this folding, so the two designs are compared on the same folding. Reports the layers
    changed (``open_folding``)."""
    from finn.util.config import extract_model_config_to_json
    from qonnx.custom_op.registry import getCustomOp

    from hwq.dataflow import estimates

    changed = []
    for node in model.graph.node:
        if node.op_type.startswith("ConvolutionInputGenerator"):
            inst = getCustomOp(node)
            if inst.get_nodeattr("parallel_window"):
                inst.set_nodeattr("parallel_window", 0)
                changed.append({"node": node.name, "parallel_window": [1, 0]})
    if changed:
        extract_model_config_to_json(model, str(ctx.out_dir / "folding.json"), list(estimates.FOLD_ATTRS))
        ctx.progress.warn(f"the open backend has no parallel sliding window: parallel_window off for "
                          f"{', '.join(c['node'] for c in changed)} (folding.json rewritten)")
    return model, {"open_folding": {"changed": changed}}


def open_steps(config: OpenBuildConfig, xilinx: bool | None = None) -> list[Step]:
    """The open backend's steps for ``config``: FINN's (:data:`FINN_STEPS`), then read the layers, check the
    reference, generate, simulate and, with ``synthesise``, synthesise and place and route (an open board) or
    ``synth_xilinx`` (a Xilinx board, or ``xilinx_estimate``). ``xilinx``: whether ``config.board`` is a Xilinx
    board (None: look it up)."""
    if xilinx is None:
        xilinx = config.boards()[2]
    fold = step_names(FINN_STEPS).index("fold") + 1
    steps = [*FINN_STEPS[:fold], Step("open_folding", step_open_folding), *FINN_STEPS[fold:],
             Step("read_layers", step_read_layers), Step("check_reference", step_check_reference),
             Step("generate_verilog", step_generate_verilog), Step("simulate", step_simulate)]
    if config.synthesise and (xilinx or config.xilinx_estimate):
        steps.append(Step("synth_xilinx", step_synth_xilinx))
    if config.synthesise and not xilinx:
        steps += [Step("synthesise", step_synthesise), Step("place_and_route", step_place_and_route)]
    return steps
