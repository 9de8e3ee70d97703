# SPDX-License-Identifier: BSD-3-Clause
"""FINN's ``SetFolding`` and hwq's folding searches, on the cost model's layers: no ONNX graph, no FINN.

:func:`set_folding` restates ``finn.transformation.fpgadataflow.set_folding.SetFolding`` (finn-plus 1.6.1, default
``mvau_wwidth_max=36``, ``two_pass_relaxation=True``) for the layers :mod:`hwq.cost.layers` knows; the searches
restate :mod:`hwq.dataflow.estimates` (``fold_to_cycles``, ``fold_for_target``, ``fold_fastest_fitting``) with
the cost model's estimate in place of FINN's. Where they differ: hwq's ``repair_folding`` (which lowers a PE/SIMD
FINN cannot generate) is not needed here, every value these layers get divides its dimension.
"""

from __future__ import annotations

from typing import Callable

from hwq.cost import finn_formulas as f
from hwq.cost.layers import LABEL_SELECT, MVAU, POOL, WINDOW
from hwq.cost.units import Unit, cycles

#: A folding: layer name -> {"PE": .., "SIMD": .., "parallel_window": ..} (the attributes the layer has).
Folding = dict[str, dict[str, int]]
#: As in hwq.dataflow.estimates: a cycle target above any layer's fully folded cycles, and the lookahead.
FULLY_FOLDED_TARGET = 2 ** 40
LOOKAHEAD = 3


def _first_meeting(values: list[int], meets: Callable[[int], bool]) -> int:
    """``SetFolding.optimize_attribute_val``: the first value that meets the target, else the last."""
    for value in values:
        if meets(value):
            return value
    return values[-1]


def _fold_once(units: list[Unit], target: int) -> Folding:
    folding: Folding = {}
    by_name = {unit.name: unit for unit in units}
    for unit in units:
        layer, kind = unit.layer, unit.layer.kind
        if kind == MVAU:
            m: f.Mvau = unit.formula
            simd = 1
            for value in f.divisors(m.mw):  # SIMD first, while the weight slice per PE stays narrow
                previous, simd = simd, value
                if f.mvau_cycles(m, 1, simd) <= target:
                    break
                if m.w * simd > f.MVAU_WWIDTH_MAX:
                    simd = previous
                    break
            pe, previous = 1, 1
            for value in f.divisors(m.mh):  # then PE, while an HLS weight stream fits an ap_int
                pe = value
                if not m.rtl and pe * simd * m.w > f.MAX_ALLOWED_AP_INT_W:
                    pe = previous
                    break
                if f.mvau_cycles(m, pe, simd) <= target:
                    break
                previous = value
            folding[layer.name] = {"PE": pe, "SIMD": simd}
        elif kind == WINDOW and not unit.formula.depthwise:
            simd = _first_meeting(f.divisors(layer.channels),
                                  lambda s: f.window_cycles(unit.formula, s) <= target)
            parallel = int(simd == layer.channels and f.window_cycles(unit.formula, simd) > target)
            folding[layer.name] = {"SIMD": simd, "parallel_window": parallel}
        elif kind == POOL:  # a pool and its depthwise window share one parallelism (SetFolding's exception)
            window = by_name[f"{layer.name}.window"]
            pe = _first_meeting(f.divisors(layer.channels), lambda p: f.pool_cycles(
                layer.channels, layer.kernel, layer.ofm, p) <= target)
            if f.window_cycles(window.formula, pe) > target:
                for value in f.divisors(layer.channels):
                    if value <= pe:
                        continue
                    pe = value
                    if f.window_cycles(window.formula, pe) <= target:
                        break
            folding[layer.name] = {"PE": pe}
            folding[window.name] = {"SIMD": pe, "parallel_window": 0}
        elif kind == LABEL_SELECT:
            folding[layer.name] = {"PE": _first_meeting(f.divisors(layer.labels),
                                                        lambda p: f.label_select_cycles(layer.labels, p) <= target)}
    return folding


def max_cycles(units: list[Unit], folding: Folding) -> int:
    return max(cycles(unit, folding[unit.name]) for unit in units)


def set_folding(units: list[Unit], target_cycles: int) -> Folding:
    """``SetFolding(target_cycles_per_frame=target_cycles)``: each layer's least parallelism (FINN's order) within
    the target; when a layer cannot reach it, a second pass at the cycles achieved balances the pipeline."""
    target = max(1, int(target_cycles))
    folding = _fold_once(units, target)
    reached = max_cycles(units, folding)
    if reached > target:
        folding = _fold_once(units, reached)
    return folding


def fastest_fitting(units: list[Unit], fits: Callable[[Folding], bool]) -> tuple[Folding | None, int]:
    """``hwq.dataflow.estimates.fold_fastest_fitting`` with the cost model: the fastest SetFolding lattice point
    whose cost ``fits`` (None when even the fully folded design does not), and how many foldings were tried."""
    trials: dict[int, tuple[Folding, int, bool]] = {}

    def trial(target: int) -> tuple[Folding, int, bool]:
        if target not in trials:
            folding = set_folding(units, target)
            trials[target] = (folding, max_cycles(units, folding), fits(folding))
        return trials[target]

    slowest = trial(FULLY_FOLDED_TARGET)
    if not slowest[2]:
        return None, len(trials)
    fastest = trial(1)
    if fastest[2]:
        return fastest[0], len(trials)
    best = slowest
    lo, hi = fastest[1], slowest[1]
    target = 2 * lo
    while target < hi:                    # doubling
        if trial(target)[2]:
            best = trial(target)
            hi = min(target, best[1])
            break
        lo, target = target, target * 2
    while hi - lo > 1:                    # bisection of (lo, hi]
        mid = (lo + hi) // 2
        if trial(mid)[2]:
            best = trial(mid)
            hi = min(mid, best[1])
        else:
            lo = mid
    misses, point = 0, best               # BRAM is not monotone in the folding: look a few points further
    while misses < LOOKAHEAD and point[1] > fastest[1]:
        point = trial(point[1] - 1)
        if point[2]:
            best, misses = point, 0
        else:
            misses += 1
    return best[0], len(trials)
