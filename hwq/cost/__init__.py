# SPDX-License-Identifier: BSD-3-Clause
"""Hardware cost models (issue 18): LUT / BRAM18 / DSP / cycles per layer and in total, as a function of each
layer's bits and folding, from FINN's analytical estimates restated in Python (no FINN build per query), and a
variant calibrated to open-backend synthesis. ``hwq cost`` is the command; docs/mixed_precision.md ("Cost model").

>>> from hwq.cost import describe_model, model_cost                                  # doctest: +SKIP
>>> model_cost(describe_model("tfc", "mnist", 2, 2), board="pynq-z2", target_fps=1e6)["total"]["lut"]  # doctest: +SKIP
"""

from hwq.cost.budget import cost_under_budget, parse_budget
from hwq.cost.layers import HwLayer, ModelLayers, describe
from hwq.cost.model import describe_model, layer_bits, layer_cost, model_cost

__all__ = ["HwLayer", "ModelLayers", "cost_under_budget", "describe", "describe_model", "layer_bits", "layer_cost",
           "model_cost", "parse_budget"]
