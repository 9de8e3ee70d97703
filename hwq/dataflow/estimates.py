# SPDX-License-Identifier: BSD-3-Clause
"""Folding and FINN's analytical estimates, summarised per layer and in total at the board's clock.

>>> summary = estimate(model, board)                  # doctest: +SKIP
>>> summary["total"]["estimated_fps"], summary["total"]["LUT"]   # doctest: +SKIP
(1562500.0, 5259)
"""

from __future__ import annotations

import json
from dataclasses import dataclass
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


def fits(summary: dict[str, Any], fit_fraction: float, max_lut: int | None = None) -> bool:
    """True when every resource's utilisation is at most ``fit_fraction`` and, with a LUT budget ``max_lut``,
    the LUT estimate is at most that."""
    within_budget = max_lut is None or summary["total"]["LUT"] <= max_lut
    return within_budget and all(u <= fit_fraction for u in summary["utilisation"].values())


#: How resources are named in messages (FINN's keys -> the board's units).
RESOURCE_NAMES = {"LUT": "LUT", "BRAM_18K": "BRAM18", "DSP": "DSP", "URAM": "URAM"}


def shortfall(summary: dict[str, Any], board: Board, fit_fraction: float, max_lut: int | None = None) -> str:
    """What exceeds ``fit_fraction`` of the board, per resource: needs, may use, has, over by how much.

    >>> shortfall(summary, load_board("pynq-z2"), 0.8)        # doctest: +SKIP
    'needs 61,000 LUT, may use 42,560 (80 % of 53,200): over by 43 %'
    """
    parts = []
    for key, field in RESOURCE_KEYS.items():
        need, have = summary["total"][key], getattr(board.resources, field)
        limit = int(fit_fraction * have)
        if need <= fit_fraction * have:
            continue
        name = RESOURCE_NAMES[key]
        if have == 0:
            parts.append(f"needs {need:,} {name}, {board.name} has none")
        else:
            parts.append(f"needs {need:,} {name}, may use {limit:,} ({100 * fit_fraction:.0f} % of {have:,}): "
                         f"over by {100 * (need / max(limit, 1) - 1):.0f} %")
    if max_lut is not None and summary["total"]["LUT"] > max_lut:
        parts.append(f"needs {summary['total']['LUT']:,} LUT, the budget (--max-lut) is {max_lut:,}")
    return "; ".join(parts)


def _within(max_lut: int | None) -> str:
    """The LUT budget a folding must also stay within, for messages after '80 % of pynq-z2'."""
    return "" if max_lut is None else f" and {max_lut:,} LUT (--max-lut)"


#: Lattice points faster than the bisection's result that the search also tries (see fold_fastest_fitting).
LOOKAHEAD = 3
#: A SetFolding cycle target above any layer's fully folded cycles: every layer gets PE = SIMD = 1.
FULLY_FOLDED_TARGET = 2 ** 40


@dataclass
class Folded:
    """A folded model, its estimate summary, the SetFolding target it came from and the search's size."""

    model: ModelWrapper
    summary: dict[str, Any]
    target_cycles: int | None = None
    trials: int = 1

    @property
    def max_cycles(self) -> int:
        return self.summary["total"]["max_cycles"]

    @property
    def fps(self) -> float:
        return self.summary["total"]["estimated_fps"]


def _set_folding(model: ModelWrapper, cycles: int) -> ModelWrapper:
    from finn.transformation.fpgadataflow.set_folding import SetFolding

    folded = model.transform(SetFolding(target_cycles_per_frame=max(1, int(cycles))))
    return repair_folding(folded)


def folding_problem(model: ModelWrapper, node) -> str | None:
    """Why FINN cannot generate ``node`` with its PE/SIMD (a folding that does not divide its shapes), or None.

    FINN's layers check divisibility when asked for their folded stream shapes (``PE must divide last axis``)."""
    inst = getCustomOp(node)
    if not hasattr(inst, "get_folded_input_shape"):
        return None
    try:
        for i, tensor in enumerate(node.input):  # the streamed inputs (weights and thresholds are not)
            if tensor and model.get_initializer(tensor) is None:
                inst.get_folded_input_shape(i)
        inst.get_folded_output_shape()
    except Exception as err:  # noqa: BLE001 - FINN raises AssertionError, ValueError or bare Exceptions here
        return str(err).strip() or type(err).__name__
    return None


def repair_folding(model: ModelWrapper) -> ModelWrapper:
    """Lower each layer's PE/SIMD to the largest value at most the chosen one that FINN can generate.

    finn-plus 1.6.1's ``SetFolding`` gives some layers (a ``Reshape`` of a 28x28 input, a ``Thresholding``
    before it) a PE that does not divide their last axis; code generation then fails. Lowering it keeps the layer
    within the cycles asked for whenever any valid folding is (fewer elements a cycle on a short axis)."""
    for node in model.graph.node:
        if folding_problem(model, node) is None:
            continue
        inst = getCustomOp(node)
        for attr in ("PE", "SIMD"):
            if attr not in inst.get_nodeattr_types():
                continue
            start = int(inst.get_nodeattr(attr))
            for value in range(start, 0, -1):
                inst.set_nodeattr(attr, value)
                if folding_problem(model, node) is None:
                    break
            if folding_problem(model, node) is None:
                break
            inst.set_nodeattr(attr, start)  # not this attribute: leave it as chosen
    return model


def fold_to_cycles(model: ModelWrapper, board: Board, cycles: int) -> Folded:
    """FINN's ``SetFolding`` for ``cycles`` per frame, with its estimate on ``board``."""
    folded = _set_folding(model, cycles)
    return Folded(folded, estimate(folded, board), target_cycles=int(cycles))


def fold_for_target(model: ModelWrapper, board: Board, target_fps: float, fit_fraction: float,
                    max_lut: int | None = None) -> Folded:
    """Fold for ``target_fps`` at the board clock; a folding that does not fit the board is a FoldingError.

    The result may be slower than the target, where SetFolding cannot parallelise a layer further (``fps``
    says what was reached; the build warns)."""
    cycles = max(1, int(board.clock_mhz * 1e6 // target_fps))
    result = fold_to_cycles(model, board, cycles)
    if not fits(result.summary, fit_fraction, max_lut):
        raise FoldingError(
            f"--target-fps {target_fps:g}: the folding for {cycles} cycle{'s' if cycles > 1 else ''} per frame "
            f"does not fit {100 * fit_fraction:.0f} % of {board.name}{_within(max_lut)}: "
            f"{shortfall(result.summary, board, fit_fraction, max_lut)}; "
            "lower --target-fps, or leave it out for the fastest folding that fits")
    return result


def fold_fastest_fitting(model: ModelWrapper, board: Board, fit_fraction: float,
                         max_lut: int | None = None) -> Folded:
    """The fastest folding FINN's ``SetFolding`` reaches whose estimate fits ``fit_fraction`` of the board (and,
    with ``max_lut``, uses at most that many LUTs: a budget below the board's size).

    ``SetFolding(T)`` gives each layer the least parallelism (the first divisor, in FINN's order) whose cycles are
    at most ``T``, so the foldings it reaches are exactly those of the integer targets, and they only get more
    parallel as ``T`` shrinks: the achieved ``max_cycles`` ``C(T) <= T`` is the lattice of achievable cycle counts.
    FINN's LUT estimates grow with parallelism, so "fits" is (nearly) monotone in ``T`` and the smallest fitting
    ``T`` is found by bisection: the fully folded design first (a model that fits no folding fails at once), then
    the fastest one (``T = 1``, which SetFolding relaxes to the fastest it reaches, ``C_min``), then doubling ``T``
    from ``C_min`` until a folding fits, then bisecting the last interval (a fitting trial with ``C(T) < T``
    narrows it to ``C(T)`` at once): about ``2 log2(T / C_min)`` SetFolding runs. BRAM estimates are not monotone
    (on the CNV, 26 of 94 lattice steps to more parallelism need up to 12 BRAM18 fewer), so the search then tries
    the next :data:`LOOKAHEAD` faster lattice points too. :func:`lattice` lists every reachable folding (one
    SetFolding run each; 94 for the CNV, 25 s); tests check the search against it.
    """
    trials: dict[int, Folded] = {}

    def trial(cycles: int) -> Folded:
        if cycles not in trials:
            trials[cycles] = fold_to_cycles(model, board, cycles)
        return trials[cycles]

    slowest = trial(FULLY_FOLDED_TARGET)
    if not fits(slowest.summary, fit_fraction, max_lut):
        raise FoldingError(
            f"no folding fits {100 * fit_fraction:.0f} % of {board.name}{_within(max_lut)}, even "
            f"fully folded ({slowest.max_cycles:,} cycles per frame): "
            f"{shortfall(slowest.summary, board, fit_fraction, max_lut)}")
    fastest = trial(1)                    # the most parallel folding SetFolding reaches, C(1) = C_min cycles
    if fits(fastest.summary, fit_fraction, max_lut):
        return Folded(fastest.model, fastest.summary, target_cycles=1, trials=len(trials))
    best = slowest
    # invariant: the folding for target hi fits (best), the one for lo does not; every target up to C_min gives
    # the fastest folding (SetFolding relaxes an unreachable target to C_min), so lo starts there
    lo, hi = fastest.max_cycles, slowest.max_cycles
    cycles = 2 * lo
    while cycles < hi:                    # doubling
        if fits(trial(cycles).summary, fit_fraction, max_lut):
            best = trial(cycles)
            hi = min(cycles, best.max_cycles)
            break
        lo, cycles = cycles, cycles * 2
    while hi - lo > 1:                    # bisection of (lo, hi]
        mid = (lo + hi) // 2
        if fits(trial(mid).summary, fit_fraction, max_lut):
            best = trial(mid)
            hi = min(mid, best.max_cycles)  # every target in [C(mid), mid] gives this folding
        else:
            lo = mid
    # BRAM estimates are not monotone (a more parallel weight memory can pack into fewer blocks), so a faster
    # lattice point may still fit: try the next few before settling
    misses, point = 0, best
    while misses < LOOKAHEAD and point.max_cycles > fastest.max_cycles:
        point = trial(point.max_cycles - 1)
        if fits(point.summary, fit_fraction, max_lut):
            best, misses = point, 0
        else:
            misses += 1
    return Folded(best.model, best.summary, target_cycles=best.max_cycles, trials=len(trials))


def lattice(model: ModelWrapper, board: Board) -> list[Folded]:
    """Every folding ``SetFolding`` reaches, slowest first (one run per lattice point: for tests and studies).

    Walks down from the fully folded design: the next faster achievable ``max_cycles`` is ``C(C - 1)``.
    """
    points = [fold_to_cycles(model, board, FULLY_FOLDED_TARGET)]
    while points[-1].max_cycles > 1:
        faster = fold_to_cycles(model, board, points[-1].max_cycles - 1)
        if faster.max_cycles >= points[-1].max_cycles:  # SetFolding cannot go faster
            break
        points.append(faster)
    return points


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
    except Exception as err:  # noqa: BLE001 - FINN raises bare Exceptions here
        raise FoldingError(f"{path}: FINN rejects the folding ({str(err).strip() or type(err).__name__})") from None
    for node in model.graph.node:  # FINN checks PE/SIMD divisibility when asked for the folded shapes
        problem = folding_problem(model, node)
        if problem is not None:
            inst = getCustomOp(node)
            given = ", ".join(f"{a}={inst.get_nodeattr(a)}" for a in ("PE", "SIMD") if a in inst.get_nodeattr_types())
            raise FoldingError(f"{path}: node '{node.name}' ({node.op_type}): {given} cannot be generated "
                               f"({problem})")
    return model
