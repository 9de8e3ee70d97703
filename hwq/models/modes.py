# SPDX-License-Identifier: BSD-3-Clause
"""A model in eval mode for the duration of a ``with`` block, its own mode restored after (also on an error).

>>> with evaluating(model):      # doctest: +SKIP
...     scores = model(images)
"""

from __future__ import annotations

import contextlib
from typing import Iterator

from torch import nn


@contextlib.contextmanager
def evaluating(model: nn.Module) -> Iterator[nn.Module]:
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)
