# SPDX-License-Identifier: BSD-3-Clause
"""Objectives: how one optimizer step turns a batch into gradients (a method's ``objective``, :mod:`hwq.methods`).

The train step (:func:`hwq.train.loop.train_step`) hands an objective a ``closure`` that runs the forward pass and
returns ``(loss, logits)`` (task loss, distillation and every layer's extra loss), and the optimizer (whose
``param_groups`` hold the parameters being trained); the objective leaves the gradients in ``param.grad`` and
returns the loss and logits to report. The
optimizer step, latent-weight clipping and the after-step hooks follow, the same for every objective.

``plain`` calls the closure once and back-propagates. A sharpness-aware objective (SAM) may call it twice with the
weights perturbed in between and restore them before returning. An objective declares its options in
:data:`hwq.options.OBJECTIVE_OPTIONS` under the same name and receives them read (defaults filled in).
"""

from __future__ import annotations

from typing import Any, Callable

import torch

from hwq.options import OBJECTIVE_OPTIONS

Closure = Callable[[], tuple[torch.Tensor, torch.Tensor]]


class Objective:
    """The plain objective: one forward pass, one backward pass."""

    def __init__(self, options: dict[str, Any]) -> None:
        self.options = options

    def gradients(self, closure: Closure, optimizer: torch.optim.Optimizer) -> tuple[torch.Tensor, torch.Tensor]:
        optimizer.zero_grad(set_to_none=True)
        loss, logits = closure()
        loss.backward()
        return loss, logits


def trained_parameters(optimizer: torch.optim.Optimizer) -> list[torch.nn.Parameter]:
    """The parameters the optimizer updates that have a gradient now (a frozen layer's have none)."""
    return [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]


#: Objective name -> its class. A new objective subclasses :class:`Objective` and declares its options.
OBJECTIVES: dict[str, type[Objective]] = {
    "plain": Objective,
}


def make_objective(name: str, method_options: dict[str, Any]) -> Objective:
    """The objective ``name`` with its options read from ``method_options`` (already checked by the config)."""
    declared = OBJECTIVE_OPTIONS[name]
    return OBJECTIVES[name]({opt.name: opt.read(method_options, "method_options") for opt in declared})
