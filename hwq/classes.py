# SPDX-License-Identifier: BSD-3-Clause
"""The class rule: which class a network's scores name, the same at every stage and on every machine.

The class is the first arg-max of the classifier's **integer** scores: the accumulators of the last layer
(``sum_i a_i w_i`` over integer activations and weights), which are what FINN's label selection (LabelSelect,
ONNX TopK) compares in hardware. Ties go to the lowest class index, as LabelSelect and TopK break them.

Float logits are not compared: PyTorch and qonnx add the same integers in different orders (and with a final
scale), so two classes whose integer scores are equal can come out a few ulp apart either way, and the class
would depend on the CPU's float kernels. Where a network has no integer scores (a float baseline, a classifier
behind an average pool), the rule falls back to the first arg-max of the float logits, and says so.

PyTorch evaluation (:func:`hwq.models.scores.model_scores`), the export check, the build's bit-exactness gate,
the emulated board and the board agent all call :func:`top_classes`. NumPy only, so the board agent can use it.

>>> top_classes([[3, 7, 7, 1], [0, 0, 0, 0]]).tolist()
[1, 0]
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Where the scores a class was taken from came from (recorded in reports).
INTEGER, FLOAT = "integer classifier accumulators", "float logits (no integer scores)"


def top_classes(scores) -> np.ndarray:
    """The class of each row of ``scores`` (N, C): the first index of the row's maximum, as ``int64``.

    NumPy's ``argmax`` returns the first occurrence of the maximum, which is the lowest-index tie rule.
    """
    scores = np.asarray(scores)
    if scores.ndim == 1:
        scores = scores[None, :]
    return scores.reshape(len(scores), -1).argmax(axis=1).astype(np.int64)


def top_class(scores) -> int:
    """The class of one score vector (see :func:`top_classes`)."""
    return int(top_classes(np.asarray(scores).reshape(1, -1))[0])


@dataclass
class Scores:
    """What one stage computed for a batch: the float ``logits`` (N, C) and, where the network has them, the
    integer classifier scores (``integer``, int64, oriented so that higher ranks higher)."""

    logits: np.ndarray
    integer: np.ndarray | None = None

    @property
    def source(self) -> str:
        return INTEGER if self.integer is not None else FLOAT

    def classes(self) -> np.ndarray:
        """The class rule: the first arg-max of the integer scores (of the logits where there are none)."""
        return top_classes(self.integer if self.integer is not None else self.logits)
