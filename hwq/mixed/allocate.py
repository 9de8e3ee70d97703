# SPDX-License-Identifier: BSD-3-Clause
"""The allocator every bit-width search shares: per-layer weight bits of least total sensitivity within a budget.

Given a described model (:func:`hwq.cost.describe_model`), a sensitivity per searched weight layer and candidate
bit-width (lower is better; any method's score: BMPQ's bit gradients, SAQ's sharpness, ...), a board and a budget
(:func:`hwq.cost.parse_budget`), :func:`allocate` solves an exact integer linear program over one-hot choices
``x[l, b]`` (scipy's ``milp``, HiGHS)::

    minimise  sum_{l,b} s[l, b] x[l, b]
    subject to sum_b x[l, b] = 1 for every layer l, and for every capped resource r (lut, bram18, dsp):
              total_r(reference) + sum_{l,b} c_r[l, b] x[l, b] <= limit_r

where ``c_r[l, b]`` is how much layer ``l`` at ``b`` bits changes the total from a reference precision (at
first the model's bits), at the folding the budget implies (FINN's SetFolding for its fps or cycles, else the
fastest folding fitting the board, as :func:`hwq.cost.cost_under_budget` chooses it). The folding depends on the
bits, so a layer's cost is not always additive; each solution is therefore checked with the full cost model, and if
it is over, the limits are tightened by the excess and that exact choice is cut off, then solved again. With a
speed in the budget each layer is folded for it alone and the costs are additive (the first verified solution is the
optimum; tested against brute force).
Without one the fastest fitting folding depends on every layer's bits, so the program drops the cost rows and cuts
off each choice the check rejects: the choices are tried in order of total sensitivity, the first within the budget
is the optimum (exact too, at one cost query per rejected choice). Only weight bits are searched: an MVAU's cost
depends on its input's and output's activation bits too, so activation choices would couple neighbouring layers
(products of choices, no longer a linear program); activations keep their bits (docs/mixed_precision.md).

>>> layers = describe_model("tfc", "digits", 2, 2)                                           # doctest: +SKIP
>>> s = {"features.2": {2: 3.0, 4: 1.0}, "features.6": {2: 2.0, 4: 0.5}}                     # doctest: +SKIP
>>> allocate(layers, s, "pynq-z2", parse_budget("lut=8000,fps=1e6")).precision               # doctest: +SKIP
{'features.2': 2, 'features.6': 4}
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from hwq.cost.budget import BUDGET_KEYS, cost_under_budget
from hwq.cost.layers import MVAU, ModelLayers
from hwq.errors import ConfigError

#: Resources a budget caps that the program constrains (fps and cycles set the folding and are checked after).
CAPPED = ("lut", "bram18", "dsp")
#: Solves with additive costs before giving up (each one tightens the limits and cuts off the previous choice).
MAX_SOLVES = 16
#: Choices tried, in order of sensitivity, for a budget without a speed (TFC with 4 candidates has 256 in all).
MAX_TRIES = 4096


@dataclass(frozen=True)
class Allocation:
    """The chosen weight bits (layer -> bits), their total sensitivity, the verified cost and how it was found."""

    precision: dict[str, int]
    sensitivity: float
    #: :func:`hwq.cost.cost_under_budget` of the choice (``within_budget`` is True).
    cost: dict[str, Any]
    #: Integer programs solved (1 when the additive costs were exact).
    solves: int
    #: Per layer and bits, the additive costs the program used (resource -> [[cost per candidate] per layer]).
    layer_costs: dict[str, list[list[float]]] = field(default_factory=dict)

    def record(self) -> dict[str, Any]:
        """What a run records of it (metrics.json): the map, the score and the cost totals."""
        total = self.cost["total"]
        return {"precision": dict(self.precision), "sensitivity": self.sensitivity, "solves": self.solves,
                "lut": total["lut"], "bram18": total["bram18"], "dsp": total["dsp"], "fps": total["fps"],
                "within_budget": self.cost["within_budget"]}


def searched_layers(layers: ModelLayers) -> list[str]:
    """The weight quantizers of the model's MVAUs, in order: the layers a search gives bits to."""
    return [layer.weight for layer in layers.layers if layer.kind == MVAU and layer.weight is not None]


def allocate(layers: ModelLayers, sensitivity: Mapping[str, Mapping[int, float]], board: str,
             budget: Mapping[str, float], *, base: Mapping[str, int] | None = None, fit_fraction: float = 0.8,
             calibrated: bool = False) -> Allocation:
    """The weight bits of least total ``sensitivity`` (layer -> {bits: score}) whose cost on ``board`` is within
    ``budget``; ``base`` sets the bits of the quantizers not searched (e.g. activations). A one-line ConfigError
    when no choice fits, naming the budget and the cheapest choice's cost."""
    names, choices = _choices(layers, sensitivity)
    base = dict(base or {})
    scores = np.array([sensitivity[name][bits] for name, bits in choices], dtype=float)
    capped = [key for key in CAPPED if key in budget]
    # With a speed in the budget, SetFolding folds each layer for it alone: the additive costs are exact, and the
    # first verified solution is the optimum. Without one, the fastest fitting folding depends on every layer and
    # the LUTs do not even grow with the bits (more bits, slower folding), so no additive cost bounds them: the
    # program then has no cost rows and each verified failure is cut off, i.e. the choices are tried in order of
    # total sensitivity and the first within the budget is the optimum.
    additive = any(key in budget for key in ("fps", "cycles"))
    tightened, cuts = {key: 0.0 for key in capped}, []
    costs, fixed, allowed = _additive_costs(layers, names, choices, board, budget, base, fit_fraction, calibrated)
    for solve in range(1, (MAX_SOLVES if additive else MAX_TRIES) + 1):
        limits = {key: float(budget[key]) - fixed[key] - tightened[key] for key in capped} if additive else {}
        picked = _solve(names, choices, scores, costs, limits, allowed, cuts)
        if picked is None:
            break
        chosen = {choices[i][0]: choices[i][1] for i in picked}
        checked = cost_under_budget(layers, {**base, **chosen}, board, budget, calibrated, fit_fraction)
        if checked["within_budget"]:
            return Allocation(chosen, float(scores[picked].sum()), checked, solve,
                              {key: _per_layer(costs[key], names, choices) for key in capped})
        for key in capped if additive else ():  # tighten by what the full model found over
            tightened[key] += max(0.0, _total(checked["total"], key, calibrated) - float(budget[key]))
        cuts.append(picked)  # and never return to this choice
    else:
        raise ConfigError(f"--budget {_text(budget)}: no choice within the budget among the {len(cuts)} of least "
                          f"total sensitivity tried (the search stops there); give a budget with fps= or cycles=, "
                          f"whose costs add up per layer")
    raise ConfigError(_infeasible(layers, names, choices, costs, board, budget, base, fit_fraction, calibrated))


def _text(budget: Mapping[str, float]) -> str:
    return ",".join(f"{k}={v:g}" for k, v in budget.items())


def _choices(layers: ModelLayers, sensitivity: Mapping[str, Mapping[int, float]]
             ) -> tuple[list[str], list[tuple[str, int]]]:
    known = searched_layers(layers)
    for name in sensitivity:
        if name not in known:
            raise ConfigError(f"sensitivity: '{name}' is not a weight layer of model '{layers.model}'; its weight "
                              f"layers are {', '.join(known)}")
    names = [name for name in known if name in sensitivity]
    if not names:
        raise ConfigError(f"sensitivity: names none of model '{layers.model}'s weight layers ({', '.join(known)})")
    choices = []
    for name in names:
        if not sensitivity[name]:
            raise ConfigError(f"sensitivity.{name}: no candidate bit-widths")
        for bits in sorted(sensitivity[name]):
            if isinstance(bits, bool) or not isinstance(bits, int) or not 1 <= bits <= 8:
                raise ConfigError(f"sensitivity.{name}: expected bit-widths 1..8, got {bits!r}")
            choices.append((name, bits))
    return names, choices


def _total(total: Mapping[str, Any], key: str, calibrated: bool) -> float:
    if key == "lut" and calibrated and "lut_calibrated" in total:
        return float(total["lut_calibrated"])
    return float(total[BUDGET_KEYS[key][0]])


def _additive_costs(layers, names, choices, board, budget, around, fit_fraction, calibrated):
    """Per choice, how much it changes each resource total from the precision ``around`` (that layer alone at its
    bits, the folding chosen again for it), the totals at ``around`` (``fixed``), and which choices meet the
    budget's speed (fps or cycles) on their own (the others are left out)."""
    reference = cost_under_budget(layers, dict(around), board, budget, calibrated, fit_fraction)
    fixed = {key: _total(reference["total"], key, calibrated) for key in CAPPED}
    costs = {key: np.zeros(len(choices)) for key in CAPPED}
    allowed = np.ones(len(choices), dtype=bool)
    speed = [key for key in budget if key in ("fps", "cycles")]
    for i, (name, bits) in enumerate(choices):
        cost = cost_under_budget(layers, {**around, name: bits}, board, budget, calibrated, fit_fraction)
        for key in CAPPED:
            costs[key][i] = _total(cost["total"], key, calibrated) - fixed[key]
        allowed[i] = not any(problem.startswith(key + " ") for key in speed for problem in cost["over_budget"])
    return costs, fixed, allowed


def _solve(names, choices, scores, costs, limits, allowed, cuts) -> list[int] | None:
    """The integer program (module docstring); the indices of the chosen candidates, or None if infeasible."""
    from scipy.optimize import Bounds, LinearConstraint, milp

    n = len(choices)
    rows, lower, upper = [], [], []
    for name in names:  # exactly one bit-width per layer
        rows.append([1.0 if choices[i][0] == name else 0.0 for i in range(n)])
        lower.append(1.0)
        upper.append(1.0)
    for key, limit in limits.items():
        rows.append(list(costs[key]))
        lower.append(-np.inf)
        upper.append(limit)
    for cut in cuts:  # not this exact choice again
        rows.append([1.0 if i in cut else 0.0 for i in range(n)])
        lower.append(-np.inf)
        upper.append(len(cut) - 1.0)
    result = milp(scores, constraints=LinearConstraint(np.array(rows), lower, upper), integrality=np.ones(n),
                  bounds=Bounds(np.zeros(n), allowed.astype(float)))
    if result.status != 0 or result.x is None:
        return None
    return [i for i in range(n) if result.x[i] > 0.5]


def _per_layer(values, names, choices) -> list[list[float]]:
    return [[float(values[i]) for i, (name, _) in enumerate(choices) if name == layer] for layer in names]


def _infeasible(layers, names, choices, costs, board, budget, base, fit_fraction, calibrated) -> str:
    """The one-line message when nothing fits: the budget and the cost of the cheapest choice (by LUTs)."""
    key = next((k for k in CAPPED if k in budget), "lut")
    cheapest = {}
    for name in names:
        options = [(costs[key][i], bits) for i, (n, bits) in enumerate(choices) if n == name]
        cheapest[name] = min(options)[1]
    cost = cost_under_budget(layers, {**base, **cheapest}, board, budget, calibrated, fit_fraction)
    budget_text = _text(budget)
    bits = sorted({bits for _, bits in choices})
    return (f"--budget {budget_text}: no choice of weight bits {bits} for {', '.join(names)} fits on {board}; the "
            f"cheapest ({'/'.join(f'W{b}' for b in cheapest.values())}) costs lut {cost['total']['lut']:,.0f}, "
            f"fps {cost['total']['fps']:,.0f}"
            + (f" ({'; '.join(cost['over_budget'])})" if cost["over_budget"] else ""))
