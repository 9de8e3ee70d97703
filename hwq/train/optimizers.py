# SPDX-License-Identifier: BSD-3-Clause
"""Optimizers (a method's ``optimizer``, :mod:`hwq.methods`): what turns gradients into new weights.

Every optimizer keeps one parameter group per learning-rate scale (a parameter may carry ``hwq_lr_scale``, e.g.
N2UQ's thresholds), each group recording its ``lr_scale``, because the schedule sets ``lr = config.lr * lr_scale
* factor`` per group each epoch. An optimizer declares its options in :data:`hwq.options.OPTIMIZER_OPTIONS` under
the same name.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Callable

import torch
from torch import nn

from hwq.options import OPTIMIZER_OPTIONS
from hwq.train.madam import Madam


def lr_groups(model: nn.Module, lr: float, params: list[nn.Parameter] | None = None,
              scale: float = 1.0) -> list[dict[str, Any]]:
    """The trainable parameters (of ``params`` if given) grouped by ``hwq_lr_scale`` (times ``scale``), each group
    with its ``lr_scale`` and ``lr``."""
    groups: dict[float, list[nn.Parameter]] = {}
    for param in (model.parameters() if params is None else params):
        if param.requires_grad:
            groups.setdefault(float(getattr(param, "hwq_lr_scale", 1.0)) * scale, []).append(param)
    return [{"params": ps, "lr_scale": s, "lr": lr * s} for s, ps in sorted(groups.items())]


def adam(model: nn.Module, lr: float, weight_decay: float, options: dict[str, Any]) -> torch.optim.Optimizer:
    """Adam (FINN's bnn_pynq and ReActNet's optimizer)."""
    return torch.optim.Adam(lr_groups(model, lr), lr=lr, weight_decay=weight_decay)


class SplitOptimizer:
    """Two or more optimizers over disjoint parameters that the train loop drives as one (the schedule sets each
    group's ``lr``; ``state_dict`` holds every optimizer's)."""

    def __init__(self, *optimizers: torch.optim.Optimizer) -> None:
        self.optimizers = optimizers

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        return [g for o in self.optimizers for g in o.param_groups]

    @property
    def state(self):
        return {p: s for o in self.optimizers for p, s in o.state.items()}

    @state.setter
    def state(self, value) -> None:  # the two-step recipe resets the moments this way
        for o in self.optimizers:
            o.state = defaultdict(dict)

    def step(self, closure=None):
        for o in self.optimizers:
            o.step()

    def zero_grad(self, set_to_none: bool = True) -> None:
        for o in self.optimizers:
            o.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict[str, Any]:
        return {"optimizers": [o.state_dict() for o in self.optimizers]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for o, s in zip(self.optimizers, state["optimizers"], strict=True):
            o.load_state_dict(s)


def weight_tensors(model: nn.Module) -> list[nn.Parameter]:
    """The layers' weight matrices and kernels: trainable parameters of two or more dimensions."""
    return [p for p in model.parameters() if p.requires_grad and p.dim() > 1]


def madam(model: nn.Module, lr: float, weight_decay: float, options: dict[str, Any]) -> SplitOptimizer:
    """Madam on the weight tensors (on the LNS grid with ``lns_bits``), Adam on the rest: a normalisation's bias,
    a learned scale, N2UQ's thresholds (a bias starting at 0 would stay 0 under a multiplicative update)."""
    weights = weight_tensors(model)
    chosen = set(weights)
    rest = [p for p in model.parameters() if p.requires_grad and p not in chosen]
    multiplicative = Madam(lr_groups(model, lr, weights, options["madam_lr_scale"]), lr=lr,
                           lns_bits=options["lns_bits"], lns_gamma=options["lns_gamma"])
    optimizers = [torch.optim.Adam(lr_groups(model, lr, rest), lr=lr, weight_decay=weight_decay)] if rest else []
    return SplitOptimizer(*optimizers, multiplicative)


#: Optimizer name -> ``make(model, lr, weight_decay, options)``.
OPTIMIZERS: dict[str, Callable[..., torch.optim.Optimizer]] = {
    "adam": adam,
    "madam": madam,
}


def make_optimizer_named(name: str, model: nn.Module, lr: float, weight_decay: float,
                         method_options: dict[str, Any]) -> torch.optim.Optimizer:
    declared = OPTIMIZER_OPTIONS[name]
    options = {opt.name: opt.read(method_options, "method_options") for opt in declared}
    return OPTIMIZERS[name](model, lr, weight_decay, options)
