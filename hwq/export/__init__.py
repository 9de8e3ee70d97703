# SPDX-License-Identifier: BSD-3-Clause
"""The export stage: QONNX export and its verification against PyTorch."""

from hwq.export.qonnx_export import (
    ExportConfig, compare_outputs, execute_qonnx, export_qonnx_model, run_export,
    verify_qonnx,
)

__all__ = ["ExportConfig", "compare_outputs", "execute_qonnx", "export_qonnx_model", "run_export", "verify_qonnx"]
