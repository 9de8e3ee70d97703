# SPDX-License-Identifier: BSD-3-Clause
"""The build steps, FINN-builder style: each is ``step_x(model, ctx) -> (model, report)`` with a docstring, and the
flow is the plain list :data:`STEPS`, run by :mod:`hwq.dataflow.driver`. A step returns the model it passes on and
the manifest sections it produced (``{"folding": {...}}``); what an earlier step reported it reads from
``ctx.reports``, what an earlier step saved from ``ctx.checkpoint(name)``. ``_finn(name)`` wraps finn-plus 1.6.1's
own builder step ``step_<name>`` unchanged."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
from qonnx.core.modelwrapper import ModelWrapper

from hwq.boards import Board
from hwq.dataflow import estimates, finn_compat, gates
from hwq.dataflow.config import BuildConfig
from hwq.dataflow.driver import Step
from hwq.dataflow.errors import MappingError
from hwq.dataflow.finn_compat import import_finn_steps
from hwq.dataflow.fast_renames import fast_tensor_renames
from hwq.dataflow.fixed_points import skipping_known_fixed_points
from hwq.dataflow.floor_rounding import FloorAsShiftedRound, SnapFloorThresholds
from hwq.dataflow.input_convention import InputConvention, UseUint8Input, find_input_convention
from hwq.dataflow.passes import (ClampPopcountThresholds, CorrectPopcountDatatypes, binary_depthwise_matmuls,
                                 unmapped_nodes)
from hwq.dataflow.passes_branches import RoundHalfEvenAtTies, prepare_average_pools
from hwq.dataflow.progress import StepProgress, quiet
from hwq.dataflow.provenance import describe
from hwq.dataflow.vendor import vendor_status

#: A step's result: the model it passes on and the manifest sections it reports.
StepResult = tuple[ModelWrapper, dict[str, Any]]
#: The step whose checkpoint is the abstract HW-layer graph: every layer a FINN HW layer that still executes in
#: Python (before layer specialisation), bit-exact with the hardware. The bit-exactness gate executes it, the
#: emulated board and the open backend's reference check load it.
HW_GRAPH_STEP = "create_dataflow_partition"


@dataclass
class BuildContext:
    """What the steps share: settings, the board, the reference model and test images; what earlier steps
    reported and saved (filled in by the driver)."""

    config: BuildConfig
    board: Board
    out_dir: Path
    finn_cfg: Any = None  # finn.builder.build_dataflow_config.DataflowBuildConfig (the FINN steps only)
    qonnx_model: ModelWrapper | None = None  # the exported model, the gate's reference
    images: np.ndarray | None = None  # uint8 (N, C, H, W) held-out test images
    progress: StepProgress = field(default_factory=quiet)  # where warnings go (stderr)
    #: The manifest so far, read only: what earlier steps reported (the driver sets it).
    reports: Mapping[str, Any] = field(default_factory=dict)
    #: Step name -> checkpoint file of every step run so far (the driver adds each one it saves).
    checkpoints: dict[str, Path] = field(default_factory=dict)
    #: How the uint8 pixels become the graph's input (:mod:`hwq.dataflow.input_convention`); None: found on
    #: ``qonnx_model``, ``pixels / 255`` by default.
    input_convention: InputConvention | None = None

    def convention(self) -> InputConvention:
        """The input convention, found on the reference model when none was given."""
        if self.input_convention is None:
            self.input_convention = find_input_convention(self.qonnx_model)
        return self.input_convention

    def checkpoint(self, step: str) -> ModelWrapper | None:
        """The model ``step`` passed on, loaded from its checkpoint; None when that step did not run."""
        from hwq.onnx_check import check_domains

        path = self.checkpoints.get(step)
        return ModelWrapper(check_domains(path)) if path is not None else None


def _finn(name: str) -> Callable[[ModelWrapper, BuildContext], StepResult]:
    def step(model: ModelWrapper, ctx: BuildContext) -> StepResult:
        return getattr(import_finn_steps(), f"step_{name}")(model, ctx.finn_cfg), {}

    step.__doc__ = f"finn-plus ``step_{name}``."
    step.__name__ = f"step_{name}"
    return step


def step_scale_uint8_input(model: ModelWrapper, ctx: BuildContext) -> StepResult:
    """Take ``uint8`` pixels: annotate the input UINT8 and put the input convention's ``pixels * scale + offset``
    in front of the graph (hwq's own 8-bit input quantizer, the identity on ``pixels / 255``, becomes that
    ``Mul(1/255)``); the convention goes into the manifest (``input_convention``)."""
    convention = ctx.convention()
    return model.transform(UseUint8Input(convention)), {"input_convention": convention.to_dict()}


def step_qonnx_to_finn(model: ModelWrapper, ctx: BuildContext) -> StepResult:
    """finn-plus ``step_qonnx_to_finn``, after hwq's average-pool passes on the QONNX graph
    (:func:`hwq.dataflow.passes_branches.prepare_average_pools`): Brevitas' TruncAdaptiveAvgPool2d takes the form of
    its TruncAvgPool2d, a Trunc that widens is narrowed to the identity it is (finn-plus's conversion drops its
    factor), and a pool FINN cannot compute exactly is a MappingError naming the user's Trunc. An activation
    Quant that rounds down becomes ``Quant_ROUND(x - s/2)`` (:mod:`hwq.dataflow.floor_rounding`; the manifest lists
    them, ``floor_quants``), whose thresholds ``step_streamline`` snaps to the floor's integers."""
    model = prepare_average_pools(model)
    floors = FloorAsShiftedRound()
    model = model.transform(floors)
    report = {"floor_quants": floors.rewritten} if floors.rewritten else {}
    return import_finn_steps().step_qonnx_to_finn(model, ctx.finn_cfg), report


def step_insert_topk(model: ModelWrapper, ctx: BuildContext) -> StepResult:
    """Append TopK(k=1), so the accelerator outputs the class index (FINN's LabelSelect); streamlining absorbs
    the final TensorNorm into it (its positive scale preserves the ranking)."""
    from qonnx.transformation.insert_topk import InsertTopK

    model = model.transform(InsertTopK(k=1))
    return import_finn_steps().step_tidy_up(model, ctx.finn_cfg), {}


def step_streamline(model: ModelWrapper, ctx: BuildContext) -> StepResult:
    """finn-plus ``step_streamline`` (the same transforms), with padded binary convolutions handled exactly
    (finn_compat workaround 5): an explicit ``Pad`` is folded into its Im2Col, a binary depthwise convolution gets
    0/1 inputs (it becomes a VVAU, not an XNOR layer over its block-sparse weights) and a bipolar -1 pad becomes
    bit 0 of the 0/1 stream, which FINN's padding hardware writes. A float global average pool becomes FINN's
    GlobalAccPool with its 1/(H*W) in the next thresholds, and the scales of a residual add's or a concat's
    inputs move past the join (finn-plus's StreamlinePlus); thresholds an integer sum can hit exactly round half
    to even, as QONNX does (``RoundHalfEvenAtTies``; the manifest counts them, ``round_half_even_thresholds``),
    and those of a FLOOR quantizer sit exactly on the floor's integers (``SnapFloorThresholds``,
    ``floor_thresholds_snapped``).
    The binary depthwise MatMuls (later VVAUs) are listed in the manifest (``binary_depthwise``).
    Tidy-ups already seen to leave a graph unchanged are skipped (:mod:`hwq.dataflow.fixed_points`) and tensors
    are renamed in one pass (:mod:`hwq.dataflow.fast_renames`): the same graph, several times faster on ReActNet
    (docs/dataflow.md, "Streamline time")."""
    with skipping_known_fixed_points(), fast_tensor_renames():
        model = finn_compat.streamline(model, ctx.finn_cfg)
    ties = RoundHalfEvenAtTies.for_user_graph(ctx.qonnx_model) if ctx.qonnx_model is not None else None
    snap = SnapFloorThresholds.for_user_graph(ctx.qonnx_model) if ctx.qonnx_model is not None else None
    for each in (ties, snap):
        if each is not None:
            model = model.transform(each)
    depthwise = binary_depthwise_matmuls(model)
    report = {"binary_depthwise": depthwise} if depthwise else {}
    if ties is not None and ties.changed:
        report["round_half_even_thresholds"] = ties.changed
    if snap is not None and snap.changed:
        report["floor_thresholds_snapped"] = snap.changed
    return model, report


def step_create_dataflow_partition(model: ModelWrapper, ctx: BuildContext) -> StepResult:
    """Require every node to be a HW layer, then split off the dataflow partition (FINN).

    A node left over is named with the user's node it was made from (:mod:`hwq.dataflow.provenance`). The one
    exception is a leading Transpose from the graph input (NCHW images to the accelerator's NHWC
    stream): FINN leaves it to the host, and so do we; it is recorded in the manifest (``host_side_nodes``).
    The checkpoint of this step is the abstract HW graph (:data:`HW_GRAPH_STEP`)."""
    left = unmapped_nodes(model)
    first = model.graph.node[0]
    report = {}
    if left and left[0]["node"] == first.name and first.op_type == "Transpose" \
            and first.input[0] == model.graph.input[0].name:
        report["host_side_nodes"] = [left.pop(0)]
    if left:
        nodes = {n.name: n for n in model.graph.node}
        listed = ", ".join(describe(model, nodes[n["node"]]) for n in left)
        raise MappingError(f"FINN cannot map node {listed} to a hardware layer")
    return import_finn_steps().step_create_dataflow_partition(model, ctx.finn_cfg), report


def step_fold(model: ModelWrapper, ctx: BuildContext) -> StepResult:
    """Set PE/SIMD: from the folding file, for the target FPS, or the fastest folding that fits the board.

    Runs before the bit-exactness gate (cheap checks first): a model that does not fit the board stops here,
    with what each resource needs and has, instead of after seconds of executing the HW graph."""
    cfg = ctx.config
    if cfg.folding_mode == "file":
        model = estimates.apply_folding_file(model, cfg.folding_file)
        result = estimates.Folded(model, estimates.estimate(model, ctx.board))
        if not estimates.fits(result.summary, cfg.fit_fraction, cfg.max_lut):  # taken as given (an open folding)
            ctx.progress.warn(f"folding file {cfg.folding_file} exceeds {100 * cfg.fit_fraction:.0f} % of "
                              f"{ctx.board.name}: "
                              f"{estimates.shortfall(result.summary, ctx.board, cfg.fit_fraction, cfg.max_lut)}")
    elif cfg.folding_mode == "target_fps":
        result = estimates.fold_for_target(model, ctx.board, cfg.target_fps, cfg.fit_fraction, cfg.max_lut)
    else:
        result = estimates.fold_fastest_fitting(model, ctx.board, cfg.fit_fraction, cfg.max_lut)
    from finn.util.config import extract_model_config_to_json

    extract_model_config_to_json(result.model, str(ctx.out_dir / "folding.json"), list(estimates.FOLD_ATTRS))
    folding = _folding_report(cfg, result)
    if cfg.folding_mode == "target_fps" and not folding["met"]:
        total = result.summary["total"]
        ctx.progress.warn(
            f"--target-fps {cfg.target_fps:g} not met on {ctx.board.name}: the fastest folding FINN's SetFolding "
            f"reaches for it gives {result.fps:,.0f} fps ({total['max_cycles']} cycles per frame at "
            f"{total['clock_mhz']:g} MHz, bottleneck {total['bottleneck']})")
    return result.model, {"folding": folding}


def _folding_report(cfg: BuildConfig, result: estimates.Folded) -> dict[str, Any]:
    """The manifest's ``folding``: how it was chosen, the target (if any), what was achieved, whether it fits."""
    report = {"mode": cfg.folding_mode, "file": cfg.folding_file, "written": "folding.json",
              "target_fps": cfg.target_fps, "achieved_fps": result.fps, "max_cycles": result.max_cycles,
              "met": None if cfg.target_fps is None else result.fps >= cfg.target_fps,
              "fits": estimates.fits(result.summary, cfg.fit_fraction, cfg.max_lut), "fit_fraction": cfg.fit_fraction,
              "max_lut": cfg.max_lut}
    if cfg.folding_mode == "fastest_fitting":
        report["search"] = {"setfolding_runs": result.trials, "target_cycles": result.target_cycles}
    return report


def step_verify_bit_exact(model: ModelWrapper, ctx: BuildContext) -> StepResult:
    """Bit-exactness gate: the abstract HW graph (the checkpoint of ``create_dataflow_partition``, before layer
    specialisation, when every layer still executes in Python; in a flow without that step, this step's input)
    against the QONNX model. The folded model passes through unchanged.

    The report (``bit_exact``) names the graph it executed (``hw_graph``) and keeps the value range of every HW
    tensor it saw (``observed_ranges``), which the integer-range gate checks."""
    hw_graph = ctx.checkpoint(HW_GRAPH_STEP)
    report = gates.check_bit_exact(ctx.qonnx_model, hw_graph if hw_graph is not None else model, ctx.images,
                                   ctx.convention())
    ranges = report.pop("observed_ranges")
    report["hw_graph"] = str(ctx.checkpoints[HW_GRAPH_STEP].relative_to(ctx.out_dir)) if hw_graph is not None \
        else "(the step's input)"
    report["observed_ranges"] = {name: [lo, hi] for name, (lo, hi) in ranges.items()}
    return model, {"bit_exact": report}


def _minimize_bit_width(name: str) -> Callable[[ModelWrapper, BuildContext], StepResult]:
    def step(model: ModelWrapper, ctx: BuildContext) -> StepResult:
        clamp = ClampPopcountThresholds()
        model = finn_compat.minimize_bit_width(model, ctx.finn_cfg, clamp)
        earlier = dict(ctx.reports.get("popcount_threshold_corrections", {}))
        return model, {"popcount_threshold_corrections": {**earlier, name: clamp.corrections}}

    step.__doc__ = (f"finn-plus ``step_{name}`` (the same transforms), with thresholded XNOR-popcount layers kept "
                    "in the popcount's range ``0..MW`` (``ClampPopcountThresholds``, finn_compat workaround 4).")
    step.__name__ = f"step_{name}"
    return step


def step_correct_datatypes(model: ModelWrapper, ctx: BuildContext) -> StepResult:
    """Widen XNOR-popcount outputs that finn-plus declared too narrow (INT7 for 0..64), if enabled."""
    if not ctx.config.fix_datatypes:
        return model, {"datatype_corrections": "disabled (fix_datatypes=False)"}
    fix = CorrectPopcountDatatypes()
    model = model.transform(fix)
    return model, {"datatype_corrections": fix.corrections}


def step_verify_integer_ranges(model: ModelWrapper, ctx: BuildContext) -> StepResult:
    """Integer-range gate: every tensor fits its declared datatype (the values the bit-exactness gate observed,
    and the exact popcount ranges)."""
    observed = ctx.reports.get("bit_exact", {}).get("observed_ranges")
    if observed is None:
        raise MappingError("step verify_integer_ranges checks the values verify_bit_exact observed: run that "
                           "step first")
    return model, {"integer_range": gates.check_integer_ranges(model, observed)}


def step_estimate(model: ModelWrapper, ctx: BuildContext) -> StepResult:
    """FINN's estimate reports (``finn/report/``) and hwq's summary at the board clock."""
    model = import_finn_steps().step_generate_estimate_reports(model, ctx.finn_cfg)
    return model, {"estimates": estimates.estimate(model, ctx.board)}


def step_hw_codegen(model: ModelWrapper, ctx: BuildContext) -> StepResult:
    """Generate HLS C++ (``*_hls`` layers) and Verilog (``*_rtl`` layers) with FINN's PrepareIP."""
    if not ctx.config.codegen:
        return model, {"codegen": {"status": "skipped", "reason": "codegen disabled in the build config"}}
    model = import_finn_steps().step_hw_codegen(model, ctx.finn_cfg)
    codegen = ctx.out_dir / "codegen"
    files = sorted(str(p.relative_to(ctx.out_dir)) for p in codegen.rglob("*")
                   if p.is_file() and p.suffix in (".cpp", ".h", ".hpp", ".v", ".sv", ".vh", ".tcl", ".dat"))
    return model, {"codegen": {"status": "done", "dir": "codegen", "files": files}}


def step_vendor_flow(model: ModelWrapper, ctx: BuildContext) -> StepResult:
    """HLS synthesis, stitched IP, bitfile and driver via finn-plus, when Vivado/Vitis are installed; otherwise
    each is reported (``vendor``) as skipped with its one-line reason.

    Not exercised on machines without the tools."""
    status = vendor_status(ctx.board.shell)
    if any(s["status"] != "ready" for s in status.values()):
        return model, {"vendor": status}
    finn_steps = import_finn_steps()
    for name, finn_step in (("hls_synthesis", "step_hw_ipgen"), ("stitched_ip", "step_create_stitched_ip"),
                            ("bitfile", "step_synthesize_bitfile"), ("driver", "step_make_driver")):
        model = getattr(finn_steps, finn_step)(model, ctx.finn_cfg)
        status[name] = {"status": "done"}
    return model, {"vendor": status}


#: The flow. The driver saves the model each step passes on as ``intermediate/<name>.onnx``.
STEPS: list[Step] = [
    Step("scale_uint8_input", step_scale_uint8_input),
    Step("qonnx_to_finn", step_qonnx_to_finn),
    Step("tidy_up", _finn("tidy_up")),
    Step("insert_topk", step_insert_topk),
    Step("streamline", step_streamline),
    Step("convert_to_hw", _finn("convert_to_hw")),
    Step("minimize_bit_width_initial", _minimize_bit_width("minimize_bit_width_initial")),
    Step(HW_GRAPH_STEP, step_create_dataflow_partition),
    Step("specialize_layers", _finn("specialize_layers")),
    Step("fold", step_fold),                                # cheap checks first: resource fit before the gate
    Step("verify_bit_exact", step_verify_bit_exact),
    Step("minimize_bit_width", _minimize_bit_width("minimize_bit_width")),
    Step("correct_datatypes", step_correct_datatypes),
    Step("verify_integer_ranges", step_verify_integer_ranges),
    Step("estimate", step_estimate),
    Step("hw_codegen", step_hw_codegen),
    Step("vendor_flow", step_vendor_flow),
]
