# SPDX-License-Identifier: BSD-3-Clause
"""The build stage: QONNX -> FINN HW-layer graph -> verified, folded, estimated, code-generated accelerator.

>>> from hwq.dataflow import BuildConfig, run_build
>>> manifest = run_build("runs/tfc-digits", BuildConfig(board="pynq-z2"))   # doctest: +SKIP
>>> manifest = run_build("runs/tfc-digits", steps=[*STEPS[:3], Step("mine", step_mine), *STEPS[3:]])  # doctest: +SKIP
"""

from hwq.dataflow.build import run_build
from hwq.dataflow.model_import import load_qonnx
from hwq.dataflow.config import BuildConfig
from hwq.dataflow.driver import Step
from hwq.dataflow.steps import STEPS

__all__ = ["STEPS", "BuildConfig", "Step", "load_qonnx", "run_build"]
