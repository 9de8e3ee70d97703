# SPDX-License-Identifier: BSD-3-Clause
"""MNIST from the four gzipped IDX files (``train-images-idx3-ubyte.gz`` ...)."""

from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path

import numpy as np

from hwq.data.dataset import Dataset, as_tensors
from hwq.errors import DataError

FILES = {
    "train_x": "train-images-idx3-ubyte.gz",
    "train_y": "train-labels-idx1-ubyte.gz",
    "test_x": "t10k-images-idx3-ubyte.gz",
    "test_y": "t10k-labels-idx1-ubyte.gz",
}
#: IDX magic numbers: 0x0803 = unsigned bytes, 3 dimensions; 0x0801 = unsigned bytes, 1 dimension.
IMAGE_MAGIC, LABEL_MAGIC = 2051, 2049
COUNTS = {"train": 60000, "test": 10000}


def read_idx(path: Path, magic: int, ndim: int) -> np.ndarray:
    """Read one gzipped IDX file of unsigned bytes, checking its header against its size."""
    if not path.is_file():
        raise DataError(f"{path}: MNIST file not found")
    try:
        raw = gzip.decompress(path.read_bytes())
    except (OSError, EOFError, zlib.error) as err:
        raise DataError(f"{path}: not a readable gzip file ({err})") from None
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path}: too short for an IDX header ({len(raw)} bytes)")
    (found,) = struct.unpack(">i", raw[:4])
    if found != magic:
        raise DataError(f"{path}: IDX magic number {found}, expected {magic}")
    dims = struct.unpack(f">{ndim}i", raw[4:header])
    expected = int(np.prod(dims))
    if len(raw) - header != expected:
        raise DataError(f"{path}: header says {dims} ({expected} bytes) but {len(raw) - header} bytes follow")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims).copy()


def load_mnist(folder: Path) -> Dataset:
    """The standard 60,000 / 10,000 split, images ``(N, 1, 28, 28)``."""
    arrays = {}
    for key, name in FILES.items():
        is_images = key.endswith("_x")
        arrays[key] = read_idx(folder / name, IMAGE_MAGIC if is_images else LABEL_MAGIC, 3 if is_images else 1)
    for split, count in COUNTS.items():
        n_x, n_y = len(arrays[f"{split}_x"]), len(arrays[f"{split}_y"])
        if n_x != count or n_y != count:
            raise DataError(f"{folder}: MNIST {split} split has {n_x} images and {n_y} labels, expected {count}")
    if arrays["train_y"].max() > 9 or arrays["test_y"].max() > 9:
        raise DataError(f"{folder}: MNIST labels outside 0..9")
    return as_tensors(
        "mnist", arrays["train_x"][:, None], arrays["train_y"], arrays["test_x"][:, None], arrays["test_y"],
        tuple(str(d) for d in range(10)),
    )
