# SPDX-License-Identifier: BSD-3-Clause
"""hwq.accelerator_model.BuildModel: the NumPy reference of a build's HW graph against qonnx's execution of it."""

from __future__ import annotations

import numpy as np

from hwq.accelerator_model import REFERENCE_CHECKS, BuildModel


def _inputs(model: BuildModel, n: int, seed: int = 0) -> list[bytes]:
    rng = np.random.default_rng(seed)
    return [bytes(row) for row in rng.integers(0, 256, (n, model.input_bytes)).astype(np.uint8)]


def test_numpy_reference_gives_qonnx_classes_one_by_one_and_batched(digits_tfc_build):
    model = BuildModel.from_build_dir(digits_tfc_build)
    assert model.executor == "numpy", model.executor_note
    inputs = _inputs(model, 60)
    batched = model.classify_many(inputs)
    assert model.reference_checked == REFERENCE_CHECKS
    one_by_one = [model.classify(data) for data in inputs]
    model.executor = "qonnx"
    assert batched == one_by_one == [model.classify(data) for data in inputs]
    assert len(set(batched)) > 1          # random inputs reach more than one class: the comparison means something


def test_a_reference_that_disagrees_with_qonnx_is_not_used(digits_tfc_build):
    """A planted error in the reference's weights (one column of the last MVAU inverted) is caught by the check on
    the first inputs: the model falls back to qonnx, says why, and its classes are qonnx's."""
    model = BuildModel.from_build_dir(digits_tfc_build)
    mvau = [layer for layer in model._layers if hasattr(layer, "weights")][-1]
    inputs = _inputs(model, 20, seed=1)
    truth = [model._classify_qonnx(data) for data in inputs]
    mvau.const_weights.ints[:, truth[0]] ^= 1           # the first input's class now scores low
    mvau.const_weights._floats.clear()
    mvau.const_weights.col_sums[:] = mvau.const_weights.ints.sum(axis=0)
    assert model.classify_many(inputs) == truth
    assert model.executor == "qonnx" and "NumPy reference gave class" in model.executor_note
