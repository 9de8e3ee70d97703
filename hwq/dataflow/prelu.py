# SPDX-License-Identifier: BSD-3-Clause
"""A per-channel PRelu in front of thresholds becomes thresholds (ReActNet's RPReLU, ``block_shape: rprelu``).

``prelu(x) = x`` for ``x >= 0`` and ``a x`` below, with ``a > 0`` per channel, is increasing, so
``prelu(x) >= T`` exactly when ``x >= T`` (``T >= 0``) or ``x >= T / a`` (``T < 0``): a MultiThreshold on a PRelu's
output is a MultiThreshold on its input with each negative threshold divided by its channel's slope. The shifts
of an RPReLU (``prelu(x - g) + z``) are Adds that streamlining absorbs before and after. FINN has no such pass:
without it the PRelu stays and the build stops at it ("FINN cannot map node ... (PRelu)"). A slope of 0 or below
(a flat or falling function, which no thresholds on the input express) is left alone, and the build says so.

>>> thresholds_through_prelu(np.array([[-2.0, 0.0, 1.0]]), np.array([0.5]))
array([[-4.,  0.,  1.]])
"""

from __future__ import annotations

import numpy as np
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.transformation.base import Transformation
from qonnx.util.basic import get_by_name


def thresholds_through_prelu(thresholds: np.ndarray, slope: np.ndarray) -> np.ndarray:
    """Thresholds (C or 1, T) on ``prelu(x)`` as thresholds on ``x``, for per-channel slopes (C,) > 0."""
    thresholds = np.broadcast_to(thresholds, (max(len(thresholds), len(slope)), thresholds.shape[1]))
    slope = slope.reshape(-1, 1).astype(np.float64)
    return np.where(thresholds >= 0, thresholds, thresholds / slope).astype(np.float32)


def _per_channel(slope: np.ndarray, shape: list[int], channel_axis: int) -> np.ndarray | None:
    """The slope as one value per channel of a tensor of ``shape``, or None if it varies along another axis."""
    try:
        full = np.broadcast_to(slope, shape)
    except ValueError:
        return None
    rows = np.moveaxis(full, channel_axis, -1).reshape(-1, shape[channel_axis])
    return rows[0] if np.all(rows == rows[0]) else None


class AbsorbPReluIntoMultiThreshold(Transformation):
    """``PRelu(x, a) -> MultiThreshold`` with a constant ``a > 0`` per channel becomes ``MultiThreshold(x)``
    (:func:`thresholds_through_prelu`), when the MultiThreshold is the PRelu's only consumer."""

    def apply(self, model: ModelWrapper) -> tuple[ModelWrapper, bool]:
        for prelu in model.get_nodes_by_op_type("PRelu"):
            slope = model.get_initializer(prelu.input[1])
            consumers = model.find_consumers(prelu.output[0]) or []
            if slope is None or len(consumers) != 1 or consumers[0].op_type != "MultiThreshold":
                continue
            threshold_node = consumers[0]
            layout = get_by_name(threshold_node.attribute, "data_layout")
            channels_last = layout is not None and layout.s.decode() == "NHWC"
            shape = model.get_tensor_shape(prelu.input[0])
            per_channel = _per_channel(slope, shape, len(shape) - 1 if channels_last or len(shape) == 2 else 1)
            if per_channel is None or not np.all(per_channel > 0):
                continue
            thresholds = model.get_initializer(threshold_node.input[1])
            model.set_initializer(threshold_node.input[1], thresholds_through_prelu(thresholds, per_channel))
            threshold_node.input[0] = prelu.input[0]
            model.graph.node.remove(prelu)
            return model, True
        return model, False


class DropEmptyTrailingInputs(Transformation):
    """Remove a node's trailing empty (``""``) inputs, ONNX's omitted optional inputs: qonnx's FoldConstants folds
    only nodes whose every input is a constant, and PyTorch's export of ``clamp(min=...)`` is a ``Clip`` with an
    empty ``max`` (an RPReLU's slope: ``Clip(slope, 0.01, "")`` stayed in the graph, unfolded)."""

    def apply(self, model: ModelWrapper) -> tuple[ModelWrapper, bool]:
        changed = False
        for node in model.graph.node:
            while len(node.input) and node.input[-1] == "":
                del node.input[-1]
                changed = True
        return model, changed
