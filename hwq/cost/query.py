# SPDX-License-Identifier: BSD-3-Clause
"""One cost query (``hwq cost``): a model at its bits, a board and how to fold it, checked when it is made.

The CLI makes a :class:`CostQuery` from its flags and calls :func:`run_cost`; Python callers do the same, so both
get the same checks and the same result.

>>> run_cost(CostQuery("tfc", "mnist", 2, 2, budget="lut=20000"))["within_budget"]   # doctest: +SKIP
False
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hwq.checks import check_int, check_number
from hwq.errors import ConfigError


@dataclass
class CostQuery:
    """What ``hwq cost`` is asked; field names are the flags' (``target_fps`` is ``--target-fps``)."""

    model: str
    dataset: str = "mnist"
    wbits: int = 2
    abits: int = 2
    #: Layer name -> bits (as ``hwq train --precision`` takes), or the YAML file holding it.
    precision: dict[str, int] | str = field(default_factory=dict)
    board: str = "pynq-z2"
    target_fps: float | None = None
    target_cycles: int | None = None
    fit_fraction: float = 0.8
    calibrated: bool = False
    #: ``KEY=VALUE,...`` (:func:`hwq.cost.budget.parse_budget`): folds for its speed and says whether it is met.
    budget: str | None = None

    def __post_init__(self) -> None:
        from hwq.cost.budget import parse_budget
        from hwq.train.config import read_precision

        if self.target_fps is not None and self.target_cycles is not None:
            raise ConfigError("--target-fps and --target-cycles exclude each other")
        check_number("--fit-fraction", self.fit_fraction, 0, 1, above=True)
        if self.target_fps is not None:
            check_number("--target-fps", self.target_fps, 0, above=True)
        if self.target_cycles is not None:
            check_int("--target-cycles", self.target_cycles, 1)
        if self.budget is not None and (self.target_fps is not None or self.target_cycles is not None):
            raise ConfigError("--budget sets the speed itself (fps= or cycles=); leave out --target-fps/"
                              "--target-cycles")
        if self.budget is not None:
            parse_budget(self.budget)
        self.precision = read_precision(self.precision) if self.precision else {}


def _limits(query: CostQuery) -> dict[str, float] | None:
    from hwq.cost.budget import parse_budget

    return parse_budget(query.budget) if query.budget is not None else None


def run_cost(query: CostQuery) -> dict[str, Any]:
    """The cost of ``query`` (:func:`hwq.cost.model_cost`, or :func:`hwq.cost.cost_under_budget` under a budget,
    which adds ``within_budget`` and ``over_budget``)."""
    from hwq.cost.budget import cost_under_budget
    from hwq.cost.model import describe_model, model_cost

    layers = describe_model(query.model, query.dataset, query.wbits, query.abits)
    if query.budget is not None:
        return cost_under_budget(layers, query.precision, query.board, _limits(query), query.calibrated,
                                 query.fit_fraction)
    return model_cost(layers, query.precision, board=query.board, target_fps=query.target_fps,
                      target_cycles=query.target_cycles, fit_fraction=query.fit_fraction,
                      calibrated=query.calibrated)
