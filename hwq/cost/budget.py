# SPDX-License-Identifier: BSD-3-Clause
"""Hardware budgets (``--budget lut=20000,fps=1e6``) and the cost query a mixed-precision search makes under one.

A budget caps resources (``lut``, ``bram18``, ``dsp``: totals at most) and asks for speed (``fps``: at least, at
the board clock; or ``cycles``: at most, per image). :func:`cost_under_budget` folds for the budget's speed (FINN's
SetFolding for that target) or, without one, takes the fastest folding that fits the board, and says whether
the cost is within the budget and, if not, what exceeds it.

>>> budget = parse_budget("lut=20000,fps=1e6")
>>> budget
{'lut': 20000.0, 'fps': 1000000.0}
>>> cost = cost_under_budget(describe_model("tfc", "mnist", 2, 2), {}, "pynq-z2", budget)   # doctest: +SKIP
>>> cost["within_budget"], cost["over_budget"]                                             # doctest: +SKIP
(False, ['lut 31,519 > 20,000'])
"""

from __future__ import annotations

from typing import Any, Mapping

from hwq.errors import ConfigError

#: Budget keys -> (what the total is called in a cost, True when the budget is an upper bound).
BUDGET_KEYS = {"lut": ("lut", True), "bram18": ("bram18", True), "dsp": ("dsp", True), "fps": ("fps", False),
               "cycles": ("max_cycles", True)}


def parse_budget(text: str) -> dict[str, float]:
    """``KEY=VALUE[,KEY=VALUE...]`` with keys from :data:`BUDGET_KEYS`, values > 0; one-line errors."""
    budget: dict[str, float] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, value = item.partition("=")
        key = key.strip().lower()
        if not sep or key not in BUDGET_KEYS:
            raise ConfigError(f"--budget '{item}': expected KEY=VALUE with KEY one of {', '.join(BUDGET_KEYS)}")
        try:
            number = float(value)
        except ValueError:
            raise ConfigError(f"--budget '{item}': {value.strip()!r} is not a number") from None
        if not number > 0 or number == float("inf"):
            raise ConfigError(f"--budget '{item}': expected a finite number > 0")
        budget[key] = number
    if not budget:
        raise ConfigError("--budget: empty; expected e.g. lut=20000,fps=1e6")
    if "fps" in budget and "cycles" in budget:
        raise ConfigError("--budget: fps and cycles exclude each other (both set the speed)")
    return budget


def over_budget(total: Mapping[str, Any], budget: Mapping[str, float], calibrated: bool = False) -> list[str]:
    """What a cost's totals exceed (or, for fps, fall short of), one phrase each; empty when within the budget."""
    problems = []
    for key, limit in budget.items():
        field, upper = BUDGET_KEYS[key]
        if key == "lut" and calibrated and "lut_calibrated" in total:
            field = "lut_calibrated"
        value = total[field]
        if (value > limit) if upper else (value < limit):
            problems.append(f"{key} {value:,.0f} {'>' if upper else '<'} {limit:,.0f}")
    return problems


def cost_under_budget(layers, precision: Mapping[str, int] | None, board: str, budget: Mapping[str, float],
                      calibrated: bool = False, fit_fraction: float = 0.8) -> dict[str, Any]:
    """:func:`hwq.cost.model_cost` folded for the budget's speed (else the fastest fitting folding), with
    ``within_budget`` and ``over_budget`` (the phrases of :func:`over_budget`)."""
    from hwq.cost.model import model_cost

    cost = model_cost(layers, precision, board=board, target_fps=budget.get("fps"),
                      target_cycles=int(budget["cycles"]) if "cycles" in budget else None,
                      fit_fraction=fit_fraction, calibrated=calibrated)
    problems = over_budget(cost["total"], budget, calibrated)
    return {**cost, "budget": dict(budget), "within_budget": not problems, "over_budget": problems}
