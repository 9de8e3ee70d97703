# SPDX-License-Identifier: BSD-3-Clause
"""sklearn's bundled 8x8 digits: 1,797 images, needs no data folder."""

from __future__ import annotations

import numpy as np

from hwq.data.dataset import Dataset, as_tensors

#: 20 % held out, stratified, with a fixed seed: 1,437 training and 360 test images.
TEST_FRACTION = 0.2
SPLIT_SEED = 0


def load_digits() -> Dataset:
    """Digits as ``uint8`` images: the original 0..16 intensities rescaled to 0..255."""
    from sklearn.datasets import load_digits as sk_load_digits
    from sklearn.model_selection import train_test_split

    bunch = sk_load_digits()
    images = np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8)[:, None, :, :]
    train_x, test_x, train_y, test_y = train_test_split(
        images, bunch.target, test_size=TEST_FRACTION, random_state=SPLIT_SEED, stratify=bunch.target
    )
    return as_tensors("digits", train_x, train_y, test_x, test_y, tuple(str(d) for d in range(10)))
