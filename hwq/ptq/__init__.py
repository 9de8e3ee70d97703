# SPDX-License-Identifier: BSD-3-Clause
"""Post-training quantization (``hwq quantize``): a float run becomes a deployable uniform-quantized run.

Attention Round (Diao et al. 2022) or round-to-nearest for the weights, calibrated activation scales, and the lossy
coding length for per-layer weight bits. See docs/mixed_precision.md, "Post-training quantization".
"""

from hwq.ptq.config import BitAllocation, Method, QuantizeConfig
from hwq.ptq.run import run_quantize

__all__ = ["BitAllocation", "Method", "QuantizeConfig", "run_quantize"]
