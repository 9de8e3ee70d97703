# SPDX-License-Identifier: BSD-3-Clause
"""Dataset loaders: shapes, splits, the data-folder lookup and clear errors for missing or corrupt files."""

from __future__ import annotations

import gzip
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest

from hwq.data import load_dataset, resolve_data_dir
from hwq.data.cifar10 import decode_zip
from hwq.data.mnist import FILES, IMAGE_MAGIC, read_idx
from hwq.errors import DataError

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def test_digits_split_and_range():
    ds = load_dataset("digits")
    assert ds.train_x.shape == (1437, 1, 8, 8) and ds.test_x.shape == (360, 1, 8, 8)
    assert ds.train_x.dtype.is_floating_point is False and int(ds.train_x.max()) == 255
    assert sorted(ds.test_y.unique().tolist()) == list(range(10))
    # the split is fixed: the same call gives the same images
    assert (load_dataset("digits").test_x == ds.test_x).all()


def test_train_subset_is_class_balanced_seeded_and_leaves_the_test_set_whole():
    ds = load_dataset("digits")
    sub = ds.with_train_subset(205, seed=3)
    counts = np.bincount(sub.train_y.numpy(), minlength=10)
    assert counts.sum() == 205 and counts.max() - counts.min() <= 1  # 20 or 21 of every class
    assert sub.test_x is ds.test_x and sub.test_y is ds.test_y
    # every kept image is one of the originals with its own label, none twice
    rows = {bytes(x.numpy()): int(y) for x, y in zip(ds.train_x, ds.train_y)}
    assert len({bytes(x.numpy()) for x in sub.train_x}) == 205
    assert all(rows[bytes(x.numpy())] == int(y) for x, y in zip(sub.train_x, sub.train_y))
    assert (ds.with_train_subset(205, seed=3).train_x == sub.train_x).all()
    assert not (ds.with_train_subset(205, seed=4).train_x == sub.train_x).all()
    assert len(ds.with_train_subset(len(ds.train_y), seed=0).train_y) == len(ds.train_y)
    for bad in (0, len(ds.train_y) + 1):
        with pytest.raises(DataError, match=rf"train_subset: expected 1\.\.1437 images of digits, got {bad}"):
            ds.with_train_subset(bad, seed=0)


def test_test_subset_is_class_balanced_and_the_same_images_whatever_the_seed():
    ds = load_dataset("digits")
    sub = ds.with_test_subset(105)
    counts = np.bincount(sub.test_y.numpy(), minlength=10)
    assert counts.sum() == 105 and counts.max() - counts.min() <= 1
    assert sub.train_x is ds.train_x  # training data untouched
    again = ds.with_train_subset(300, seed=7).with_test_subset(105)  # another run's seed: same test images
    assert (again.test_x == sub.test_x).all() and (again.test_y == sub.test_y).all()
    assert not (ds.with_test_subset(105).test_x == ds.test_x[:105]).all()  # drawn over the classes, not a prefix
    for bad in (0, len(ds.test_y) + 1):
        with pytest.raises(DataError, match=rf"test_subset: expected 1\.\.360 images of digits, got {bad}"):
            ds.with_test_subset(bad)


@pytest.mark.skipif(not (SHARED / "mnist").is_dir(), reason="../shared/data/mnist not present")
def test_mnist_from_idx_files():
    ds = load_dataset("mnist", SHARED)
    assert ds.train_x.shape == (60000, 1, 28, 28) and ds.test_x.shape == (10000, 1, 28, 28)
    assert ds.train_y[:5].tolist() == [5, 0, 4, 1, 9] and ds.test_y[:5].tolist() == [7, 2, 1, 0, 4]
    assert np.bincount(ds.train_y.numpy()).tolist()[:3] == [5923, 6742, 5958]


def _write_idx(path: Path, magic: int, dims: tuple[int, ...], payload: bytes | None = None) -> None:
    body = payload if payload is not None else bytes(int(np.prod(dims)))
    path.write_bytes(gzip.compress(struct.pack(f">i{len(dims)}i", magic, *dims) + body))


def test_idx_reader_checks_header_and_size(tmp_path):
    good = tmp_path / "good.gz"
    _write_idx(good, IMAGE_MAGIC, (2, 3, 3))
    assert read_idx(good, IMAGE_MAGIC, 3).shape == (2, 3, 3)
    short = tmp_path / "short.gz"
    _write_idx(short, IMAGE_MAGIC, (2, 3, 3), payload=bytes(10))
    with pytest.raises(DataError, match=r"short\.gz: header says \(2, 3, 3\) \(18 bytes\) but 10 bytes follow"):
        read_idx(short, IMAGE_MAGIC, 3)
    wrong = tmp_path / "wrong.gz"
    _write_idx(wrong, 2049, (2, 3, 3))
    with pytest.raises(DataError, match=r"wrong\.gz: IDX magic number 2049, expected 2051"):
        read_idx(wrong, IMAGE_MAGIC, 3)


def test_corrupt_mnist_file_is_named(tmp_path):
    folder = tmp_path / "mnist"
    folder.mkdir()
    (folder / FILES["train_x"]).write_bytes(b"this is not gzip")
    with pytest.raises(DataError, match=rf"{FILES['train_x']}: not a readable gzip file"):
        load_dataset("mnist", tmp_path)


def test_missing_mnist_file_is_named(tmp_path):
    (tmp_path / "mnist").mkdir()
    with pytest.raises(DataError, match=rf"{FILES['train_x']}: MNIST file not found"):
        load_dataset("mnist", tmp_path)


def test_missing_data_dir_is_a_clear_error(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(DataError, match=r"nowhere/mnist: data folder for mnist not found"):
        load_dataset("mnist", missing)


def test_data_dir_lookup_order(tmp_path, monkeypatch):
    monkeypatch.setenv("HWQ_DATA", str(tmp_path / "env"))
    assert resolve_data_dir(tmp_path / "flag") == tmp_path / "flag"
    assert resolve_data_dir() == tmp_path / "env"
    monkeypatch.delenv("HWQ_DATA")
    (tmp_path / "shared" / "data").mkdir(parents=True)
    (tmp_path / "repo").mkdir()
    monkeypatch.chdir(tmp_path / "repo")
    assert resolve_data_dir() == tmp_path / "shared" / "data"


def test_unknown_dataset():
    with pytest.raises(DataError, match="unknown dataset 'imagenet'; known: digits, mnist, cifar10"):
        load_dataset("imagenet")


def _jpeg_bytes(size=(32, 32)) -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", size, (200, 10, 10)).save(buf, format="JPEG")
    return buf.getvalue()


def test_cifar_zip_decoding_and_errors(tmp_path):
    good = tmp_path / "good.zip"
    with zipfile.ZipFile(good, "w") as z:
        z.writestr("cat/0001.jpg", _jpeg_bytes())
        z.writestr("airplane/0001.jpg", _jpeg_bytes())
    images, labels = decode_zip(good)
    assert images.shape == (2, 3, 32, 32) and labels.tolist() == [0, 3]  # sorted: airplane, cat
    assert abs(int(images[0, 0].mean()) - 200) < 10  # red channel first (C, H, W)

    bad_class = tmp_path / "bad_class.zip"
    with zipfile.ZipFile(bad_class, "w") as z:
        z.writestr("dragon/0001.jpg", _jpeg_bytes())
    with pytest.raises(DataError, match="bad_class.zip: entry 'dragon/0001.jpg' is not under one of the ten"):
        decode_zip(bad_class)

    bad_jpeg = tmp_path / "bad_jpeg.zip"
    with zipfile.ZipFile(bad_jpeg, "w") as z:
        z.writestr("cat/0001.jpg", b"garbage")
    with pytest.raises(DataError, match="bad_jpeg.zip: entry 'cat/0001.jpg' is not a readable JPEG"):
        decode_zip(bad_jpeg)

    not_zip = tmp_path / "train.zip"
    not_zip.write_bytes(b"nope")
    with pytest.raises(DataError, match="train.zip: not a valid zip archive"):
        decode_zip(not_zip)


def test_result_files_get_the_usual_permissions(tmp_path):
    """write_atomic's temporary file (mkstemp: 0600) is given 0666 minus the umask before it is moved in place."""
    import os

    from hwq._io import _umask, write_json

    path = write_json(tmp_path / "report.json", {"ok": True})
    assert os.stat(path).st_mode & 0o777 == 0o666 & ~_umask()


def test_a_failed_atomic_write_names_the_destination_and_keeps_the_old_file(tmp_path):
    import errno

    from hwq._io import write_atomic

    target = tmp_path / "metrics.json"
    target.write_text("old")

    def full_disk(tmp):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp))

    with pytest.raises(OSError) as failed:
        write_atomic(target, full_disk)
    assert failed.value.filename == str(target) and failed.value.errno == errno.ENOSPC
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["metrics.json"]
