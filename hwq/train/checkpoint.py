# SPDX-License-Identifier: BSD-3-Clause
"""Checkpoints: written atomically, read with ``torch.load(weights_only=True)`` (no arbitrary code runs)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import torch

from hwq._io import write_atomic
from hwq.errors import CheckpointError
from hwq.train.rundir import naming_errors


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> Path:
    """Write ``state`` (tensors, numbers, strings, nested dicts and lists only) atomically.

    The state is serialised in memory first: torch's own file writer reports a full disk as a RuntimeError
    without the reason ("unexpected pos 704 vs 598"), Python's write as the OSError it is (ENOSPC), which the
    CLI turns into one line naming the file.
    """
    path = Path(path)
    buffer = io.BytesIO()
    torch.save(state, buffer)
    data = buffer.getbuffer()
    with naming_errors(path):
        return write_atomic(path, lambda tmp: tmp.write_bytes(data))


def load_checkpoint(path: str | Path, required: tuple[str, ...] = ()) -> dict[str, Any]:
    """Load a checkpoint safely; a missing, truncated or foreign file raises a CheckpointError naming it."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - foreign bytes make the unpickler raise anything (IndexError, KeyError...)
        raise CheckpointError(f"{path}: not a readable hwq checkpoint ({_load_failure(err)})") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: expected a dict of tensors, found {type(state).__name__}")
    missing = [key for key in required if key not in state]
    if missing:
        raise CheckpointError(f"{path}: checkpoint lacks {', '.join(missing)}")
    return state


def _load_failure(err: Exception) -> str:
    """The reason in torch.load's error, without its advice to load with ``weights_only=False`` (unsafe)."""
    text = str(err).strip()
    marker = "WeightsUnpickler error:"
    if marker in text:  # a paragraph of advice, then the reason: "Unsupported operand 55", "Unsupported global ..."
        reason = text.split(marker, 1)[1].strip().splitlines()[0].split(". ")[0].rstrip(".")
        return f"refused by the weights-only loader: {reason}"
    return text.splitlines()[0] if text else type(err).__name__


def check_state_dict(state: Any, path: str | Path) -> dict[str, torch.Tensor]:
    """``state`` if it is a model's weights (names -> tensors); anything else is a CheckpointError naming ``path``."""
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                              for k, v in state.items()):
        raise CheckpointError(f"{path}: expected model weights (parameter names -> tensors)")
    return state
