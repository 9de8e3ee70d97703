# SPDX-License-Identifier: BSD-3-Clause
"""``hwq sweep sweeps/NAME.yaml``: a grid of flow recipes, each point a Ray task with its own run directory.

- :mod:`hwq.sweep.spec`: the sweep file, its points and their recipes;
- :mod:`hwq.sweep.runner`: one point (:func:`run_point`) and the sweep on Ray (:func:`run_sweep`), resumable;
- :mod:`hwq.sweep.results`: ``sweep.csv``, ``sweep.json`` and the Pareto plots.
"""

from hwq.sweep.runner import run_point, run_sweep
from hwq.sweep.spec import Point, SweepSpec

__all__ = ["Point", "SweepSpec", "run_point", "run_sweep"]
