# SPDX-License-Identifier: BSD-3-Clause
"""CIFAR-10 from the JPEG copy: ``train.zip`` and ``test.zip``, each laid out as ``<class>/<NNNN>.jpg``.

Decoding 60,000 JPEGs takes about 15 s, so the decoded arrays are cached (``$HWQ_CACHE`` or
``~/.cache/hwq``), keyed by each zip's size and modification time.
"""

from __future__ import annotations

import io
import os
import zipfile
from pathlib import Path

import numpy as np

from hwq.data.dataset import Dataset, as_tensors
from hwq.errors import DataError

#: The zips list images class by class; the test split is put in a fixed shuffled order, so that "the first n
#: test images" (export verification, build gates, on-device accuracy) cover every class.
TEST_ORDER_SEED = 0

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
COUNTS = {"train": 50000, "test": 10000}


def _cache_dir() -> Path:
    return Path(os.environ.get("HWQ_CACHE", Path.home() / ".cache" / "hwq"))


def decode_zip(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Decode every ``<class>/<name>.jpg`` of one zip into ``uint8 (N, 3, 32, 32)`` images and labels."""
    from PIL import Image, UnidentifiedImageError

    if not path.is_file():
        raise DataError(f"{path}: CIFAR-10 zip not found")
    try:
        archive = zipfile.ZipFile(path)
    except zipfile.BadZipFile:
        raise DataError(f"{path}: not a valid zip archive") from None
    with archive:
        names = sorted(n for n in archive.namelist() if n.lower().endswith(".jpg"))
        images = np.empty((len(names), 32, 32, 3), dtype=np.uint8)
        labels = np.empty(len(names), dtype=np.int64)
        for i, name in enumerate(names):
            cls = name.split("/")[0]
            if cls not in CLASSES:
                raise DataError(f"{path}: entry '{name}' is not under one of the ten class folders")
            try:
                image = Image.open(io.BytesIO(archive.read(name))).convert("RGB")
            except (UnidentifiedImageError, OSError, zipfile.BadZipFile) as err:
                raise DataError(f"{path}: entry '{name}' is not a readable JPEG ({err})") from None
            if image.size != (32, 32):
                raise DataError(f"{path}: entry '{name}' is {image.size[0]}x{image.size[1]}, expected 32x32")
            images[i] = np.asarray(image)
            labels[i] = CLASSES.index(cls)
    return images.transpose(0, 3, 1, 2).copy(), labels


def _load_split(folder: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    path = folder / f"{split}.zip"
    if not path.is_file():
        raise DataError(f"{path}: CIFAR-10 zip not found")
    stat = path.stat()
    cache = _cache_dir() / f"cifar10-{split}-{stat.st_size}-{stat.st_mtime_ns}.npz"
    if cache.is_file():
        with np.load(cache) as saved:
            x, y = saved["x"], saved["y"]
    else:
        x, y = decode_zip(path)
        try:
            from hwq._io import write_atomic

            write_atomic(cache, lambda p: np.savez(p.open("wb"), x=x, y=y))
        except OSError:
            pass  # a read-only home only costs the decode time next run
    if len(x) != COUNTS[split]:
        raise DataError(f"{path}: {len(x)} images, expected {COUNTS[split]}")
    return x, y


def load_cifar10(folder: Path) -> Dataset:
    """The standard 50,000 / 10,000 split of CIFAR-10 (JPEG copy), images ``(N, 3, 32, 32)``."""
    train_x, train_y = _load_split(folder, "train")
    test_x, test_y = _load_split(folder, "test")
    order = np.random.default_rng(TEST_ORDER_SEED).permutation(len(test_x))
    test_x, test_y = test_x[order], test_y[order]
    return as_tensors("cifar10", train_x, train_y, test_x, test_y, CLASSES)
