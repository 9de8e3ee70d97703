# SPDX-License-Identifier: BSD-3-Clause
"""The build steps, FINN-builder style: each is ``step_x(model, ctx) -> model`` with a docstring, and the flow
is the plain list :data:`STEPS`. Steps named ``finn:`` wrap finn-plus 1.6.1's own builder steps unchanged."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
from qonnx.core.modelwrapper import ModelWrapper

from hwq.boards import Board
from hwq.dataflow import estimates, gates
from hwq.dataflow.config import BuildConfig
from hwq.dataflow.errors import MappingError
from hwq.dataflow import finn_compat
from hwq.dataflow.finn_compat import import_finn_steps
from hwq.dataflow.passes import (ClampPopcountThresholds, CorrectPopcountDatatypes, ScaleUint8Input,
                                 binary_depthwise_matmuls, unmapped_nodes)
from hwq.dataflow.progress import StepProgress, quiet


@dataclass
class BuildContext:
    """What the steps share: settings, the reference model and test images, and what they report."""

    config: BuildConfig
    board: Board
    out_dir: Path
    finn_cfg: Any  # finn.builder.build_dataflow_config.DataflowBuildConfig
    qonnx_model: ModelWrapper
    images: np.ndarray  # uint8 (N, C, H, W) held-out test images
    report: dict[str, Any] = field(default_factory=dict)
    hw_model: ModelWrapper | None = None  # the abstract HW graph (create_dataflow_partition), kept for the gate
    progress: StepProgress = field(default_factory=quiet)  # where warnings go (stderr)


def _finn(name: str) -> Callable[[ModelWrapper, BuildContext], ModelWrapper]:
    def step(model: ModelWrapper, ctx: BuildContext) -> ModelWrapper:
        return getattr(import_finn_steps(), f"step_{name}")(model, ctx.finn_cfg)

    step.__doc__ = f"finn-plus ``step_{name}``."
    step.__name__ = f"step_{name}"
    return step


def step_scale_uint8_input(model: ModelWrapper, ctx: BuildContext) -> ModelWrapper:
    """Take ``uint8`` pixels: annotate the input UINT8 and turn the input quantizer into ``Mul(1/255)``."""
    return model.transform(ScaleUint8Input())


def step_insert_topk(model: ModelWrapper, ctx: BuildContext) -> ModelWrapper:
    """Append TopK(k=1), so the accelerator outputs the class index (FINN's LabelSelect); streamlining absorbs
    the final TensorNorm into it (its positive scale preserves the ranking)."""
    from qonnx.transformation.insert_topk import InsertTopK

    model = model.transform(InsertTopK(k=1))
    return import_finn_steps().step_tidy_up(model, ctx.finn_cfg)


def step_streamline(model: ModelWrapper, ctx: BuildContext) -> ModelWrapper:
    """finn-plus ``step_streamline`` (the same transforms), with padded binary convolutions handled exactly
    (finn_compat workaround 5): an explicit ``Pad`` is folded into its Im2Col, a binary depthwise convolution gets
    0/1 inputs (it becomes a VVAU, not an XNOR layer over its block-sparse weights) and a bipolar -1 pad becomes
    bit 0 of the 0/1 stream, which FINN's padding hardware writes. The binary depthwise MatMuls (later VVAUs) are
    listed in the manifest (``binary_depthwise``)."""
    model = finn_compat.streamline(model, ctx.finn_cfg)
    depthwise = binary_depthwise_matmuls(model)
    if depthwise:
        ctx.report["binary_depthwise"] = depthwise
    return model


def step_create_dataflow_partition(model: ModelWrapper, ctx: BuildContext) -> ModelWrapper:
    """Require every node to be a HW layer, then split off the dataflow partition (FINN).

    The one exception is a leading Transpose from the graph input (NCHW images to the accelerator's NHWC
    stream): FINN leaves it to the host, and so do we; it is recorded in the manifest."""
    left = unmapped_nodes(model)
    first = model.graph.node[0]
    if left and left[0]["node"] == first.name and first.op_type == "Transpose" \
            and first.input[0] == model.graph.input[0].name:
        ctx.report["host_side_nodes"] = [left.pop(0)]
    if left:
        listed = ", ".join(f"'{n['node']}' ({n['op_type']})" for n in left)
        raise MappingError(f"FINN cannot map node {listed} to a hardware layer")
    model = import_finn_steps().step_create_dataflow_partition(model, ctx.finn_cfg)
    ctx.hw_model = ModelWrapper(copy.deepcopy(model.model))  # the gate executes this abstract graph later
    return model


def step_fold(model: ModelWrapper, ctx: BuildContext) -> ModelWrapper:
    """Set PE/SIMD: from the folding file, for the target FPS, or the fastest folding that fits the board.

    Runs before the bit-exactness gate (cheap checks first): a model that does not fit the board stops here,
    with what each resource needs and has, instead of after seconds of executing the HW graph."""
    cfg = ctx.config
    if cfg.folding_mode == "file":
        model = estimates.apply_folding_file(model, cfg.folding_file)
        result = estimates.Folded(model, estimates.estimate(model, ctx.board))
        if not estimates.fits(result.summary, cfg.fit_fraction):  # taken as given (e.g. an open-backend folding)
            ctx.progress.warn(f"folding file {cfg.folding_file} exceeds {100 * cfg.fit_fraction:.0f} % of "
                              f"{ctx.board.name}: {estimates.shortfall(result.summary, ctx.board, cfg.fit_fraction)}")
    elif cfg.folding_mode == "target_fps":
        result = estimates.fold_for_target(model, ctx.board, cfg.target_fps, cfg.fit_fraction)
    else:
        result = estimates.fold_fastest_fitting(model, ctx.board, cfg.fit_fraction)
    from finn.util.config import extract_model_config_to_json

    extract_model_config_to_json(result.model, str(ctx.out_dir / "folding.json"), list(estimates.FOLD_ATTRS))
    ctx.report["folding"] = _folding_report(cfg, result)
    if cfg.folding_mode == "target_fps" and not ctx.report["folding"]["met"]:
        total = result.summary["total"]
        ctx.progress.warn(
            f"--target-fps {cfg.target_fps:g} not met on {ctx.board.name}: the fastest folding FINN's SetFolding "
            f"reaches for it gives {result.fps:,.0f} fps ({total['max_cycles']} cycles per frame at "
            f"{total['clock_mhz']:g} MHz, bottleneck {total['bottleneck']})")
    return result.model


def _folding_report(cfg: BuildConfig, result: estimates.Folded) -> dict[str, Any]:
    """The manifest's ``folding``: how it was chosen, the target (if any), what was achieved, whether it fits."""
    report = {"mode": cfg.folding_mode, "file": cfg.folding_file, "written": "folding.json",
              "target_fps": cfg.target_fps, "achieved_fps": result.fps, "max_cycles": result.max_cycles,
              "met": None if cfg.target_fps is None else result.fps >= cfg.target_fps,
              "fits": estimates.fits(result.summary, cfg.fit_fraction), "fit_fraction": cfg.fit_fraction}
    if cfg.folding_mode == "fastest_fitting":
        report["search"] = {"setfolding_runs": result.trials, "target_cycles": result.target_cycles}
    return report


def step_verify_bit_exact(model: ModelWrapper, ctx: BuildContext) -> ModelWrapper:
    """Bit-exactness gate: the abstract HW graph (saved by ``create_dataflow_partition``, before layer
    specialisation, when every layer still executes in Python) against the QONNX model.

    The folded model passes through unchanged; the step's intermediate ONNX is the graph the gate executed
    (:func:`_saved_hw_graph`), which the emulated board and the open backend load."""
    report = gates.check_bit_exact(ctx.qonnx_model, _saved_hw_graph(model, ctx), ctx.images)
    ctx.report["observed_ranges"] = report.pop("observed_ranges")
    ctx.report["bit_exact"] = report
    return model


def _saved_hw_graph(model: ModelWrapper, ctx: BuildContext) -> ModelWrapper:
    """The abstract HW graph kept by create_dataflow_partition (the step's input, in a flow without that step)."""
    return ctx.hw_model if ctx.hw_model is not None else model


#: What a check step saves as its intermediate ONNX, where that is not the model it passes on.
step_verify_bit_exact.saved_graph = _saved_hw_graph


def _minimize_bit_width(name: str) -> Callable[[ModelWrapper, BuildContext], ModelWrapper]:
    def step(model: ModelWrapper, ctx: BuildContext) -> ModelWrapper:
        clamp = ClampPopcountThresholds()
        model = finn_compat.minimize_bit_width(model, ctx.finn_cfg, clamp)
        ctx.report.setdefault("popcount_threshold_corrections", {})[name] = clamp.corrections
        return model

    step.__doc__ = (f"finn-plus ``step_{name}`` (the same transforms), with thresholded XNOR-popcount layers kept "
                    "in the popcount's range ``0..MW`` (``ClampPopcountThresholds``, finn_compat workaround 4).")
    step.__name__ = f"step_{name}"
    return step


def step_correct_datatypes(model: ModelWrapper, ctx: BuildContext) -> ModelWrapper:
    """Widen XNOR-popcount outputs that finn-plus declared too narrow (INT7 for 0..64), if enabled."""
    if not ctx.config.fix_datatypes:
        ctx.report["datatype_corrections"] = "disabled (fix_datatypes=False)"
        return model
    fix = CorrectPopcountDatatypes()
    model = model.transform(fix)
    ctx.report["datatype_corrections"] = fix.corrections
    return model


def step_verify_integer_ranges(model: ModelWrapper, ctx: BuildContext) -> ModelWrapper:
    """Integer-range gate: every tensor fits its declared datatype (observed values and exact popcount ranges)."""
    ctx.report["integer_range"] = gates.check_integer_ranges(model, ctx.report["observed_ranges"])
    return model


def step_estimate(model: ModelWrapper, ctx: BuildContext) -> ModelWrapper:
    """FINN's estimate reports (``finn/report/``) and hwq's summary at the board clock."""
    model = import_finn_steps().step_generate_estimate_reports(model, ctx.finn_cfg)
    ctx.report["estimates"] = estimates.estimate(model, ctx.board)
    return model


def step_hw_codegen(model: ModelWrapper, ctx: BuildContext) -> ModelWrapper:
    """Generate HLS C++ (``*_hls`` layers) and Verilog (``*_rtl`` layers) with FINN's PrepareIP."""
    if not ctx.config.codegen:
        ctx.report["codegen"] = {"status": "skipped", "reason": "codegen disabled in the build config"}
        return model
    model = import_finn_steps().step_hw_codegen(model, ctx.finn_cfg)
    codegen = ctx.out_dir / "codegen"
    files = sorted(str(p.relative_to(ctx.out_dir)) for p in codegen.rglob("*")
                   if p.is_file() and p.suffix in (".cpp", ".h", ".hpp", ".v", ".sv", ".vh", ".tcl", ".dat"))
    ctx.report["codegen"] = {"status": "done", "dir": "codegen", "files": files}
    return model


def step_vendor_flow(model: ModelWrapper, ctx: BuildContext) -> ModelWrapper:
    """HLS synthesis, stitched IP, bitfile and driver via finn-plus, when Vivado/Vitis are installed.

    Not exercised on machines without the tools (the steps are then skipped with their reason)."""
    status = ctx.report["vendor"]
    if any(s["status"] != "ready" for s in status.values()):
        return model
    finn_steps = import_finn_steps()
    for name, finn_step in (("hls_synthesis", "step_hw_ipgen"), ("stitched_ip", "step_create_stitched_ip"),
                            ("bitfile", "step_synthesize_bitfile"), ("driver", "step_make_driver")):
        model = getattr(finn_steps, finn_step)(model, ctx.finn_cfg)
        status[name] = {"status": "done"}
    return model


#: The flow: (name, step). Every step's output model is saved as ``intermediate/NN_<name>.onnx``, except that
#: ``verify_bit_exact`` saves the abstract HW graph it executed (``step.saved_graph``).
STEPS: list[tuple[str, Callable[[ModelWrapper, BuildContext], ModelWrapper]]] = [
    ("scale_uint8_input", step_scale_uint8_input),
    ("qonnx_to_finn", _finn("qonnx_to_finn")),
    ("tidy_up", _finn("tidy_up")),
    ("insert_topk", step_insert_topk),
    ("streamline", step_streamline),
    ("convert_to_hw", _finn("convert_to_hw")),
    ("minimize_bit_width_initial", _minimize_bit_width("minimize_bit_width_initial")),
    ("create_dataflow_partition", step_create_dataflow_partition),
    ("specialize_layers", _finn("specialize_layers")),
    ("fold", step_fold),                                # cheap checks first: resource fit before the gate
    ("verify_bit_exact", step_verify_bit_exact),
    ("minimize_bit_width", _minimize_bit_width("minimize_bit_width")),
    ("correct_datatypes", step_correct_datatypes),
    ("verify_integer_ranges", step_verify_integer_ranges),
    ("estimate", step_estimate),
    ("hw_codegen", step_hw_codegen),
    ("vendor_flow", step_vendor_flow),
]
