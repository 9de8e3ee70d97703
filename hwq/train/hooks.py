# SPDX-License-Identifier: BSD-3-Clause
"""The hooks a model's modules may define to shape training, collected once per run.

Quantizer families shape training without a loop of their own through methods on their modules:
``hwq_on_epoch_start(epoch, epochs)`` (e.g. a progressive schedule), ``hwq_on_step(progress)`` before every step
with the training's progress (0..1) at the step's end, ``hwq_extra_loss() -> Tensor`` (e.g. a regulariser, added
to every step's loss), ``hwq_after_step()`` (e.g. a projection of the latent weights) and
``hwq_attach_teacher(name, teacher)`` (once, with the run's teacher or None). A layer with ``latent_clip`` has
its latent weights clamped to ``[-clip, clip]`` after every step.

:class:`ModelHooks` finds them once, so a step of a model that defines none costs nothing (walking every module
twice per step cost about 1 ms on TFC and 2.5 ms on CNV):

>>> from torch import nn
>>> ModelHooks(nn.Sequential(nn.Linear(2, 2))).names()
[]
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn

#: The per-step and per-epoch hooks (``hwq_attach_teacher`` is called once, by name, with each module's name).
HOOKS = ("hwq_on_epoch_start", "hwq_on_step", "hwq_extra_loss", "hwq_after_step")


def call_hooks(model: nn.Module, hook: str, *args: Any) -> list[Any]:
    """Call ``hook(*args)`` on every submodule that defines it (the model itself included), walking the model."""
    return [getattr(module, hook)(*args) for module in model.modules() if hasattr(module, hook)]


class ModelHooks:
    """A model's hook methods and latent-clipped layers, found once (the model's modules do not change)."""

    def __init__(self, model: nn.Module) -> None:
        modules = list(model.modules())
        self._hooks: dict[str, list[Callable]] = {
            name: [getattr(m, name) for m in modules if hasattr(m, name)] for name in HOOKS}
        self._clipped = [(m, m.latent_clip) for m in modules if getattr(m, "latent_clip", None) is not None]

    def names(self) -> list[str]:
        """The hooks some module defines."""
        return [name for name, found in self._hooks.items() if found]

    def __call__(self, hook: str, *args: Any) -> list[Any]:
        return [method(*args) for method in self._hooks[hook]]

    @torch.no_grad()
    def clip_latent_weights(self) -> None:
        for module, clip in self._clipped:
            module.weight.clamp_(-clip, clip)
