# SPDX-License-Identifier: BSD-3-Clause
"""Network topologies, built from a quantizer family (FINN's TFC/SFC/LFC and CNV, ResNet-20, MobileNet).

Importing this package fills the model registry (``MODELS``, ``MODEL_OPTIONS``): the modules below register their
builders with ``@register_model``. That and the family registry (:mod:`hwq.quant`) are all hwq does at import time
(README, "Registries").
"""

from hwq.models.registry import (MODEL_OPTIONS, MODELS, ModelSpec, build_model, check_model_options, model_and_layers,
                                 register_model)

__all__ = ["MODEL_OPTIONS", "MODELS", "ModelSpec", "build_model", "check_model_options", "model_and_layers",
           "register_model"]
from hwq.models import mobilenet  # noqa: E402,F401  (registers mobilenet, mobilenet_tiny)
from hwq.models import resnet  # noqa: E402,F401  (registers resnet20)
from hwq.models import reactnet  # noqa: E402,F401  (registers reactnet, reactnet_tiny)
