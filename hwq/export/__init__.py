# SPDX-License-Identifier: BSD-3-Clause
"""The export stage: QONNX export and its verification against PyTorch.

The names below are loaded on first use, so that ``hwq.export.scores`` (NumPy and qonnx only, which the build's
gate uses) does not import torch and Brevitas with the package.
"""

import importlib

_EXPORTS = {name: "hwq.export.qonnx_export" for name in (
    "ExportConfig", "compare_outputs", "execute_qonnx", "export_qonnx_model", "run_export", "verify_qonnx")}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'hwq.export' has no attribute {name!r}")
