# SPDX-License-Identifier: BSD-3-Clause
"""Layer-wise objectives against a teacher: find the teacher's layer that matches a student layer, and the
scale-free distance between their outputs (BiTAT's block objective, DIR-Net's RBD)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from hwq.errors import ConfigError


def matching_teacher_layer(teacher: nn.Module, name: str, weight: torch.Tensor, option: str,
                           remedy: str) -> nn.Module:
    """The teacher's layer called ``name`` with weights of ``weight``'s shape; otherwise a one-line ConfigError
    naming ``model_options.<option>`` and ending with ``remedy`` (e.g. ``set bitat_aggregate=false``)."""
    try:
        layer = teacher.get_submodule(name)
    except AttributeError:
        raise ConfigError(f"model_options.{option}: the teacher has no layer '{name}' (a teacher of the same "
                          f"model is needed); {remedy}") from None
    if getattr(layer, "weight", None) is None or layer.weight.shape != weight.shape:
        raise ConfigError(f"model_options.{option}: the teacher's layer '{name}' has weights "
                          f"{tuple(getattr(layer, 'weight', torch.empty(0)).shape)}, expected "
                          f"{tuple(weight.shape)} (a teacher of the same model and width)")
    return layer


def representation_distance(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """``|| s / ||s|| - t / ||t|| ||^2`` per image (flattened), averaged over the batch.

    Scale-free, because a binary layer's outputs are a positive multiple of a real one's at best (a normalisation
    follows both); 0 exactly when the two point the same way, at most 4.

    >>> x = torch.randn(3, 5)
    >>> float(representation_distance(x, 2 * x)) < 1e-6, float(representation_distance(x, -x))
    (True, 4.0)
    """
    s, t = F.normalize(student.flatten(1), dim=1), F.normalize(teacher.flatten(1), dim=1)
    return (s - t).pow(2).sum(1).mean()
