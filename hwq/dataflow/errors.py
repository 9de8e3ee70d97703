# SPDX-License-Identifier: BSD-3-Clause
"""Errors of the build stage; all are :class:`hwq.errors.HwqError`, so the CLI prints them on one line."""

from hwq.errors import ConfigError, HwqError, VerificationError


class ModelFileError(HwqError):
    """The input ONNX file is missing, corrupt, or not a QONNX model."""


class MappingError(HwqError):
    """FINN cannot map a node of the model to a hardware layer."""


class FoldingError(ConfigError):
    """A folding file is malformed, names unknown layers, or the folding does not fit the board."""


class BitExactnessError(VerificationError):
    """The HW-layer graph does not compute what the QONNX model computes."""


class IntegerRangeError(VerificationError):
    """A tensor holds values outside the datatype FINN declared for it."""


__all__ = [
    "BitExactnessError", "FoldingError", "IntegerRangeError", "MappingError", "ModelFileError",
]
