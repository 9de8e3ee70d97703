# SPDX-License-Identifier: BSD-3-Clause
"""Quantizers as Brevitas components, grouped into pluggable families (``--quant``).

Importing this package fills the family registry (``FAMILIES``): ``family.py``, ``n2uq``, ``bitat``, ``lsq``,
``noise`` and ``oscillation`` register their families with ``@register_family``. That and the model registry (:mod:`hwq.models`) are all hwq does at
import time (README, "Registries").
"""

from hwq.quant.family import (
    FAMILIES,
    FloatFamily,
    INPUT_SPEC,
    UniformFamily,
    clip_latent_weights,
    get_family,
    register_family,
)
from hwq.quant.spec import QuantSpec, Role, Scaling

__all__ = [
    "FAMILIES", "FloatFamily", "INPUT_SPEC", "QuantSpec", "Role", "Scaling", "UniformFamily",
    "clip_latent_weights", "get_family", "register_family",
]
from hwq.quant import bitat  # noqa: E402,F401  (registers --quant bitat)
from hwq.quant import n2uq  # noqa: E402,F401  (registers --quant n2uq)
from hwq.quant import lsq  # noqa: E402,F401  (registers --quant lsq)
from hwq.quant import noise  # noqa: E402,F401  (registers --quant noise)
from hwq.quant import oscillation  # noqa: E402,F401  (registers --quant osc)
from hwq.quant import lqnet  # noqa: E402,F401  (registers --quant lqnet)
from hwq.quant import dirnet  # noqa: E402,F401  (registers --quant dirnet)
from hwq.quant import adder  # noqa: E402,F401  (registers --quant adder)
