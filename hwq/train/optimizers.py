# SPDX-License-Identifier: BSD-3-Clause
"""Optimizers (a method's ``optimizer``, :mod:`hwq.methods`): what turns gradients into new weights.

Every optimizer keeps one parameter group per learning-rate scale (a parameter may carry ``hwq_lr_scale``, e.g.
N2UQ's thresholds), each group recording its ``lr_scale``, because the schedule sets ``lr = config.lr * lr_scale
* factor`` per group each epoch. An optimizer declares its options in :data:`hwq.options.OPTIMIZER_OPTIONS` under
the same name.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn

from hwq.options import OPTIMIZER_OPTIONS


def lr_groups(model: nn.Module, lr: float) -> list[dict[str, Any]]:
    """The trainable parameters grouped by ``hwq_lr_scale``, each group with its ``lr_scale`` and ``lr``."""
    groups: dict[float, list[nn.Parameter]] = {}
    for param in model.parameters():
        if param.requires_grad:
            groups.setdefault(float(getattr(param, "hwq_lr_scale", 1.0)), []).append(param)
    return [{"params": ps, "lr_scale": scale, "lr": lr * scale} for scale, ps in sorted(groups.items())]


def adam(model: nn.Module, lr: float, weight_decay: float, options: dict[str, Any]) -> torch.optim.Optimizer:
    """Adam (FINN's bnn_pynq and ReActNet's optimizer)."""
    return torch.optim.Adam(lr_groups(model, lr), lr=lr, weight_decay=weight_decay)


#: Optimizer name -> ``make(model, lr, weight_decay, options)``.
OPTIMIZERS: dict[str, Callable[..., torch.optim.Optimizer]] = {
    "adam": adam,
}


def make_optimizer_named(name: str, model: nn.Module, lr: float, weight_decay: float,
                         method_options: dict[str, Any]) -> torch.optim.Optimizer:
    declared = OPTIMIZER_OPTIONS[name]
    options = {opt.name: opt.read(method_options, "method_options") for opt in declared}
    return OPTIMIZERS[name](model, lr, weight_decay, options)
