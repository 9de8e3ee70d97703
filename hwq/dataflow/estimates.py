# SPDX-License-Identifier: BSD-3-Clause
"""Folding and FINN's analytical estimates, summarised per layer and in total at the board's clock.

>>> summary = estimate(model, board)                  # doctest: +SKIP
>>> summary["total"]["estimated_fps"], summary["total"]["LUT"]   # doctest: +SKIP
(1562500.0, 5259)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from qonnx.core.modelwrapper import ModelWrapper
from qonnx.custom_op.registry import getCustomOp

from hwq.boards import Board
from hwq.dataflow.errors import FoldingError

#: FINN resource keys -> board resource fields.
RESOURCE_KEYS = {"LUT": "lut", "BRAM_18K": "bram18", "DSP": "dsp", "URAM": "uram"}
#: Folding attributes recorded per layer.
FOLD_ATTRS = ("PE", "SIMD", "parallel_window", "ram_style", "mem_mode")


def estimate(model: ModelWrapper, board: Board) -> dict[str, Any]:
    """Per-layer cycles and LUT/BRAM18/DSP/URAM estimates, totals, FPS and latency at ``board.clock_mhz``."""
    from finn.analysis.fpgadataflow.dataflow_performance import dataflow_performance
    from finn.analysis.fpgadataflow.exp_cycles_per_layer import exp_cycles_per_layer
    from finn.analysis.fpgadataflow.res_estimation import res_estimation
    from finn.transformation.fpgadataflow.annotate_cycles import AnnotateCycles

    cycles = model.analysis(exp_cycles_per_layer)
    resources = model.analysis(lambda m: res_estimation(m, board.part))
    perf = model.transform(AnnotateCycles()).analysis(dataflow_performance)
    layers = []
    for node in model.graph.node:
        if node.name not in cycles:
            continue
        inst = getCustomOp(node)
        attrs = inst.get_nodeattr_types()
        res = resources.get(node.name, {})
        layers.append({
            "node": node.name, "op_type": node.op_type, "cycles": int(cycles[node.name]),
            **{key: int(round(res.get(key, 0))) for key in RESOURCE_KEYS},
            "folding": {a: inst.get_nodeattr(a) for a in FOLD_ATTRS if a in attrs},
        })
    total = {key: sum(layer[key] for layer in layers) for key in RESOURCE_KEYS}
    max_cycles = int(perf["max_cycles"])
    period_ns = board.clock_period_ns
    total.update({
        "max_cycles": max_cycles, "bottleneck": perf["max_cycles_node_name"],
        "critical_path_cycles": int(perf["critical_path_cycles"]),
        "clock_mhz": board.clock_mhz,
        "estimated_fps": board.clock_mhz * 1e6 / max_cycles,
        "estimated_latency_us": int(perf["critical_path_cycles"]) * period_ns / 1000.0,
    })
    usage = {key: total[key] / getattr(board.resources, field) if getattr(board.resources, field) else
             (0.0 if total[key] == 0 else float("inf")) for key, field in RESOURCE_KEYS.items()}
    return {"layers": layers, "total": total, "utilisation": usage, "kind": "FINN analytical estimate"}


def fits(summary: dict[str, Any], fit_fraction: float) -> bool:
    """True when every resource's utilisation is at most ``fit_fraction``."""
    return all(u <= fit_fraction for u in summary["utilisation"].values())


def _set_folding(model: ModelWrapper, cycles: int) -> ModelWrapper:
    from finn.transformation.fpgadataflow.set_folding import SetFolding

    return model.transform(SetFolding(target_cycles_per_frame=max(1, int(cycles))))


def fold_for_target(model: ModelWrapper, board: Board, target_fps: float, fit_fraction: float) -> ModelWrapper:
    """Fold for ``target_fps`` at the board clock; a folding that does not fit the board is a FoldingError."""
    folded = _set_folding(model, board.clock_mhz * 1e6 / target_fps)
    summary = estimate(folded, board)
    if not fits(summary, fit_fraction):
        worst = max(summary["utilisation"], key=summary["utilisation"].get)
        raise FoldingError(
            f"target_fps {target_fps:g}: the folding needs {summary['total'][worst]} {worst} "
            f"({100 * summary['utilisation'][worst]:.0f}% of {board.name}, limit {100 * fit_fraction:.0f}%)")
    return folded


def fold_fastest_fitting(model: ModelWrapper, board: Board, fit_fraction: float) -> ModelWrapper:
    """The fastest folding (fewest cycles per frame, over powers of two) that fits ``fit_fraction`` of the board."""
    for k in range(0, 31):
        folded = _set_folding(model, 2 ** k)
        if fits(estimate(folded, board), fit_fraction):
            return folded
    raise FoldingError(f"no folding fits {100 * fit_fraction:.0f}% of {board.name}'s resources, even fully folded")


def apply_folding_file(model: ModelWrapper, path: str | Path) -> ModelWrapper:
    """Apply a folding file in FINN's JSON format (``{"Defaults": {}, "<node>": {"PE": 4, "SIMD": 8}}``).

    Unknown node names and attributes are errors naming the file, unlike FINN's ApplyConfig which ignores them.
    """
    from finn.transformation.general import ApplyConfig

    path = Path(path)
    if not path.is_file():
        raise FoldingError(f"{path}: folding file not found")
    try:
        config = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise FoldingError(f"{path}: not valid JSON ({err.msg} at line {err.lineno})") from None
    if not isinstance(config, dict):
        raise FoldingError(f"{path}: expected an object mapping node names to attributes")
    names = {n.name: n for n in model.graph.node}
    for key, attrs in config.items():
        if key == "Defaults":
            continue
        if key not in names:
            raise FoldingError(f"{path}: node '{key}' is not in the model; its layers: {', '.join(names)}")
        if not isinstance(attrs, dict):
            raise FoldingError(f"{path}: node '{key}': expected an object of attributes")
        inst = getCustomOp(names[key])
        known = inst.get_nodeattr_types()
        for attr in attrs:
            if attr not in known:
                raise FoldingError(f"{path}: node '{key}' has no attribute '{attr}'")
        for attr, dim in (("PE", "MH"), ("SIMD", "MW"), ("PE", "NumChannels"), ("SIMD", "IFMChannels")):
            if attr in attrs and dim in known and inst.get_nodeattr(dim) % int(attrs[attr]):
                raise FoldingError(f"{path}: node '{key}': {attr}={attrs[attr]} does not divide "
                                   f"{dim}={inst.get_nodeattr(dim)}")
    try:
        model = model.transform(ApplyConfig(str(path)))
        for node in model.graph.node:  # FINN checks PE/SIMD divisibility when asked for the folded shapes
            inst = getCustomOp(node)
            if hasattr(inst, "get_folded_input_shape"):
                inst.get_folded_input_shape()
                inst.get_folded_output_shape()
    except (AssertionError, ValueError, Exception) as err:  # noqa: B014 - FINN raises bare Exceptions here
        raise FoldingError(f"{path}: FINN rejects the folding ({str(err).strip() or type(err).__name__})") from None
    return model
