# SPDX-License-Identifier: BSD-3-Clause
"""A training run's directory: the files it holds, and replacing it only once its replacement is trained.

``runs/NAME/`` holds the training stage's files (``config.yaml``, ``checkpoint.pt``, ``model.pt``,
``metrics.json``, ``train.log``) and, once later stages ran, their outputs (``model.onnx``, ``export.json``,
``build-*/``, ``flow.json``), which were made from its weights.

An overwrite trains into a fresh folder beside the run (:class:`StagedReplacement`) and swaps it in only when
training finished: a failed or interrupted overwrite leaves the previous run whole. On the swap, the previous
run's later-stage outputs are deleted with it (they describe weights that no longer exist, and a stale
``model.onnx`` must not be built); its ``train.log`` is continued by the new run, and any file that no hwq stage
writes (a note, a plot) moves into the new run.

>>> with StagedReplacement(Path("runs/demo")) as staging:   # doctest: +SKIP
...     train_into(staging)                                  # runs/demo is replaced only if this returns
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import tempfile
from pathlib import Path
from typing import Any, Iterator

CONFIG_FILE, CHECKPOINT_FILE, MODEL_FILE, METRICS_FILE, LOG_FILE = (
    "config.yaml", "checkpoint.pt", "model.pt", "metrics.json", "train.log",
)
TRAIN_FILES = (CONFIG_FILE, CHECKPOINT_FILE, MODEL_FILE, METRICS_FILE, LOG_FILE)
#: What later stages write into a run directory from its weights: the export (``model.failed.onnx`` is a
#: failed one, ``.model.unverified.onnx`` one under way), the flow's report; and ``build-*/`` folders
#: (:func:`is_downstream`).
DOWNSTREAM_FILES = ("model.onnx", "model.failed.onnx", ".model.unverified.onnx", "export.json", "flow.json")


def holds_run(run_dir: Path) -> bool:
    """Whether ``run_dir`` holds a training run, finished or not (a checkpoint or metrics)."""
    return (run_dir / CHECKPOINT_FILE).exists() or (run_dir / METRICS_FILE).exists()


def is_downstream(name: str) -> bool:
    """Whether ``name`` in a run directory is a later stage's output, made from the run's weights."""
    return name in DOWNSTREAM_FILES or name.startswith("build-")


def _is_leftover(name: str) -> bool:
    """A temporary file of an interrupted atomic write (``.model.pt.x8f2.tmp``, hwq._io.write_atomic)."""
    return name.startswith(".") and name.endswith(".tmp")


def remove_downstream(run_dir: Path) -> list[str]:
    """Delete the later stages' outputs in ``run_dir`` (new weights make them stale); returns their names."""
    removed = []
    for entry in sorted(run_dir.iterdir()):
        if not is_downstream(entry.name):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()
        removed.append(entry.name)
    return removed


class StagedReplacement:
    """A folder beside ``run_dir`` to train into; when the ``with`` body returns, it replaces ``run_dir``.

    If the body raises (an error, Ctrl-C, SIGTERM), the folder is deleted and ``run_dir`` is left as it was.
    The folder starts with a copy of the old ``train.log``, so the log stays append-only across overwrites.
    ``replaced`` says whether the swap happened (an interruption right after it must not be reported as a
    discarded overwrite).
    """

    def __init__(self, run_dir: Path) -> None:
        self.target = run_dir.resolve()  # a symlinked run: replace the folder it points at, not the link
        self.path: Path | None = None
        self.replaced = False

    def __enter__(self) -> Path:
        self.path = Path(tempfile.mkdtemp(prefix=f".{self.target.name}.overwrite-", dir=self.target.parent))
        try:
            shutil.copymode(self.target, self.path)  # mkdtemp makes it private (0700); keep the run's permissions
            if (self.target / LOG_FILE).is_file():
                shutil.copy2(self.target / LOG_FILE, self.path / LOG_FILE)
        except BaseException:
            shutil.rmtree(self.path, ignore_errors=True)
            raise
        return self.path

    def __exit__(self, exc_type: Any, *exc: Any) -> None:
        try:
            if exc_type is None:
                with _signals_deferred():  # Ctrl-C between the two renames would strand both runs
                    _swap_in(self.target, self.path)
                    self.replaced = True
        finally:
            shutil.rmtree(self.path, ignore_errors=True)  # gone after the swap; the discarded attempt otherwise


@contextlib.contextmanager
def _signals_deferred() -> Iterator[None]:
    """Hold SIGINT and SIGTERM until the body is done (they are delivered right after it)."""
    signals = {signal.SIGINT, signal.SIGTERM}
    if not hasattr(signal, "pthread_sigmask"):
        yield
        return
    signal.pthread_sigmask(signal.SIG_BLOCK, signals)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, signals)


def _swap_in(target: Path, staging: Path) -> None:
    """Replace ``target`` by ``staging`` with two renames, then carry over what no stage writes."""
    retired = Path(tempfile.mkdtemp(prefix=f".{target.name}.replaced-", dir=target.parent))
    try:
        os.rename(target, retired)  # onto the empty folder mkdtemp made: POSIX allows it
    except OSError:
        retired.rmdir()
        raise
    try:
        os.rename(staging, target)
    except OSError:
        os.rename(retired, target)  # put the previous run back before reporting the error
        raise
    for entry in retired.iterdir():
        if entry.name not in TRAIN_FILES and not is_downstream(entry.name) and not _is_leftover(entry.name):
            os.rename(entry, target / entry.name)
    shutil.rmtree(retired)


@contextlib.contextmanager
def naming_errors(path: str | Path) -> Iterator[None]:
    """Add ``path`` to an OSError that names no file: a failed ``write()`` (ENOSPC, EFBIG) names none."""
    try:
        yield
    except OSError as err:
        if err.filename is None and err.errno is not None:
            raise OSError(err.errno, err.strerror, str(path)) from None
        raise
