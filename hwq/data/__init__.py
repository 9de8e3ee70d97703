# SPDX-License-Identifier: BSD-3-Clause
"""Datasets: sklearn digits (bundled, the default for tests and the demo), MNIST and CIFAR-10.

Every loader returns a :class:`Dataset` of ``uint8`` images shaped ``(N, C, H, W)``, so a model's input is
always ``pixels / 255`` and the 8-bit input quantizer represents it exactly.

>>> ds = load_dataset("digits")
>>> ds.train_x.shape[1:], ds.num_classes
((1, 8, 8), 10)
"""

from hwq.data.dataset import Dataset, load_dataset, resolve_data_dir, DATASETS

__all__ = ["Dataset", "load_dataset", "resolve_data_dir", "DATASETS"]
