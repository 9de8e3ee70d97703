# SPDX-License-Identifier: BSD-3-Clause
"""The dataset container, the data-folder lookup and the name -> loader registry."""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from hwq.errors import DataError

#: Where ``../shared/data`` is looked for when neither ``--data-dir`` nor ``HWQ_DATA`` is given:
#: beside the current directory, and beside the checkout that holds this package.
_REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Dataset:
    """Images as ``uint8`` tensors ``(N, C, H, W)`` and labels as ``int64`` tensors."""

    name: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    classes: tuple[str, ...]

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of one image."""
        return tuple(self.train_x.shape[1:])  # type: ignore[return-value]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def with_train_subset(self, size: int, seed: int) -> "Dataset":
        """The same dataset trained on ``size`` of its training images, as evenly spread over the classes as
        ``size`` allows (drawn with ``seed``, kept in their original order); the test set stays whole, so
        accuracies remain comparable with full-data runs."""
        keep = _balanced_subset(self.train_y, size, seed, self.num_classes, "train_subset", self.name)
        return replace(self, train_x=self.train_x[keep], train_y=self.train_y[keep])

    def with_test_subset(self, size: int) -> "Dataset":
        """The same dataset evaluated on ``size`` of its test images, class-balanced as in
        :meth:`with_train_subset`, always drawn with seed 0: every run (any seed, any method) that asks for the
        same size is scored on the same images, so the rows of a table stay comparable. For CPU-sized
        experiments whose evaluation of the whole test set would cost more than their training."""
        keep = _balanced_subset(self.test_y, size, 0, self.num_classes, "test_subset", self.name)
        return replace(self, test_x=self.test_x[keep], test_y=self.test_y[keep])

    @staticmethod
    def to_float(images: torch.Tensor) -> torch.Tensor:
        """The model input for ``uint8`` images: ``pixels / 255`` in [0, 1]."""
        return images.to(torch.float32) / 255.0


def _balanced_subset(labels: torch.Tensor, size: int, seed: int, num_classes: int, field: str,
                     dataset: str) -> torch.Tensor:
    """Indices of ``size`` of ``labels``' items, as evenly spread over the classes as ``size`` allows (drawn with
    ``seed``), in their original order; a DataError naming ``field`` when ``size`` does not fit."""
    if not 0 < size <= len(labels):
        raise DataError(f"{field}: expected 1..{len(labels)} images of {dataset}, got {size}")
    generator = torch.Generator().manual_seed(seed)
    per_class = [torch.nonzero(labels == c).flatten() for c in range(num_classes)]
    per_class = [idx[torch.randperm(len(idx), generator=generator)] for idx in per_class]
    # Round-robin over the classes: class c contributes its k-th image before any class its (k+1)-th.
    rank = torch.cat([torch.arange(len(idx)) for idx in per_class])
    order = torch.cat(per_class)[torch.argsort(rank, stable=True)]
    return torch.sort(order[:size]).values


def resolve_data_dir(data_dir: str | Path | None = None) -> Path:
    """The data folder: ``data_dir`` if given, else ``$HWQ_DATA``, else ``../shared/data`` when it exists."""
    if data_dir is not None:
        return Path(data_dir)
    if os.environ.get("HWQ_DATA"):
        return Path(os.environ["HWQ_DATA"])
    for base in (Path.cwd(), _REPO_ROOT):
        candidate = base.parent / "shared" / "data"
        if candidate.is_dir():
            return candidate
    raise DataError(
        "no data folder: pass --data-dir, set HWQ_DATA, or place the data in ../shared/data "
        "(only the 'digits' dataset needs none)"
    )


def _require_dir(path: Path, dataset: str) -> Path:
    if not path.is_dir():
        raise DataError(f"{path}: data folder for {dataset} not found")
    return path


def _load_digits(data_dir: str | Path | None) -> Dataset:
    from hwq.data.digits import load_digits

    return load_digits()


def _load_mnist(data_dir: str | Path | None) -> Dataset:
    from hwq.data.mnist import load_mnist

    return load_mnist(_require_dir(resolve_data_dir(data_dir) / "mnist", "mnist"))


def _load_cifar10(data_dir: str | Path | None) -> Dataset:
    from hwq.data.cifar10 import load_cifar10

    return load_cifar10(_require_dir(resolve_data_dir(data_dir) / "cifar10-jpeg", "cifar10"))


#: name -> loader(data_dir)
DATASETS: dict[str, Callable[[str | Path | None], Dataset]] = {
    "digits": _load_digits,
    "mnist": _load_mnist,
    "cifar10": _load_cifar10,
}


def load_dataset(name: str, data_dir: str | Path | None = None) -> Dataset:
    """Load a dataset by name (``digits``, ``mnist``, ``cifar10``)."""
    try:
        loader = DATASETS[name]
    except KeyError:
        raise DataError(f"unknown dataset '{name}'; known: {', '.join(DATASETS)}") from None
    return loader(data_dir)


def as_tensors(
    name: str, train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray,
    classes: tuple[str, ...],
) -> Dataset:
    """Wrap NumPy arrays (images ``uint8 (N, C, H, W)``) as a :class:`Dataset`."""
    return Dataset(
        name=name,
        train_x=torch.from_numpy(np.ascontiguousarray(train_x, dtype=np.uint8)),
        train_y=torch.from_numpy(np.asarray(train_y, dtype=np.int64)),
        test_x=torch.from_numpy(np.ascontiguousarray(test_x, dtype=np.uint8)),
        test_y=torch.from_numpy(np.asarray(test_y, dtype=np.int64)),
        classes=classes,
    )
