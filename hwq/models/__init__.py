# SPDX-License-Identifier: BSD-3-Clause
"""Network topologies, built from a quantizer family (FINN's TFC/SFC/LFC and CNV)."""

from hwq.models.registry import MODELS, ModelSpec, build_model, register_model

__all__ = ["MODELS", "ModelSpec", "build_model", "register_model"]
