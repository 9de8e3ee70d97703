# SPDX-License-Identifier: BSD-3-Clause
"""The two-step binary training recipe (ReActNet, Real-to-Binary), as a plan over epochs and what it switches.

Step 1 trains binary activations with real-valued weights (every 1-bit weight quantizer is off, its latent
weights act as they are), with a small weight decay; step 2 switches the binary weights on, starting from step 1's
weights, with its own weight decay (0 by default: decay pulls latent weights to zero, where signs flip at random).
Each step is a training of its own, as in the papers: the learning-rate schedule restarts at the switch and
Adam's moments are reset. k-bit weights (an 8-bit first layer) stay quantized in both steps. The plan is pure
arithmetic on epochs, so a run resumed at any epoch (the boundary included) trains as an uninterrupted one.

>>> plan = TwoStepPlan(step1_epochs=3, epochs=5, weight_decay=(1e-5, 0.0))
>>> [plan.step_of(e) for e in range(5)], plan.window(4)
([1, 1, 1, 2, 2], (3, 2))
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import torch
from brevitas.proxy.parameter_quant import WeightQuantProxyFromInjector
from torch import nn

from hwq.errors import CheckpointError
from hwq.train.config import Recipe, TrainConfig


@dataclass(frozen=True)
class TwoStepPlan:
    #: Epochs of step 1 (0-based epochs ``0 .. step1_epochs - 1``); step 2 runs to ``epochs``.
    step1_epochs: int
    epochs: int
    #: Adam weight decay of step 1 and of step 2.
    weight_decay: tuple[float, float]

    @classmethod
    def for_run(cls, config: TrainConfig, checkpoint: dict | None = None) -> "TwoStepPlan | None":
        """The plan of ``config`` (None for the plain recipe). Unset ``step1_epochs`` is half the epochs (rounded
        down), or, when resuming, the boundary the checkpoint's run was trained with (a resume may add epochs; the
        switch stays where it was)."""
        if config.recipe is not Recipe.TWO_STEP:
            return None
        first = config.step1_epochs
        saved = (checkpoint or {}).get("recipe")
        if first is None:
            first = int(saved["step1_epochs"]) if saved else config.epochs // 2
        if saved and int(saved["step1_epochs"]) != first:
            raise CheckpointError(f"step1_epochs: the checkpoint's run switched to binary weights after epoch "
                                  f"{saved['step1_epochs']}; a resumed run keeps its steps, got {first}")
        if checkpoint is not None and not saved:
            raise CheckpointError("recipe: the checkpoint was not trained with the two-step recipe")
        if first >= config.epochs:
            raise CheckpointError(f"epochs: the run's step 1 has {first} epochs; the two-step recipe needs more "
                                  f"epochs than that, got {config.epochs}")
        return cls(first, config.epochs, (config.step1_weight_decay, config.step2_weight_decay))

    def step_of(self, epoch: int) -> int:
        """1 or 2: the step ``epoch`` (0-based) belongs to."""
        return 1 if epoch < self.step1_epochs else 2

    def window(self, epoch: int) -> tuple[int, int]:
        """``(first epoch, length)`` of the step ``epoch`` belongs to: the learning-rate schedule's span."""
        if self.step_of(epoch) == 1:
            return 0, self.step1_epochs
        return self.step1_epochs, self.epochs - self.step1_epochs

    def record(self) -> dict[str, Any]:
        """What ``metrics.json`` and the checkpoint say about the recipe."""
        return {"name": Recipe.TWO_STEP.value, "step1_epochs": self.step1_epochs,
                "steps": [{"step": 1, "epochs": [1, self.step1_epochs], "weights": "real",
                           "weight_decay": self.weight_decay[0]},
                          {"step": 2, "epochs": [self.step1_epochs + 1, self.epochs], "weights": "binary",
                           "weight_decay": self.weight_decay[1]}]}

    def start_epoch(self, model: nn.Module, optimizer: torch.optim.Optimizer, epoch: int) -> None:
        """Set the model and the optimizer for ``epoch``: binary weights off in step 1 and on in step 2, the step's
        weight decay, and fresh Adam moments at the first epoch of step 2."""
        step = self.step_of(epoch)
        set_binary_weights(model, enabled=step == 2)
        for group in optimizer.param_groups:
            group["weight_decay"] = self.weight_decay[step - 1]
        if epoch == self.step1_epochs:
            optimizer.state = defaultdict(dict)


def binary_weight_proxies(model: nn.Module) -> list[WeightQuantProxyFromInjector]:
    """The Brevitas weight quantizers of ``model`` that make 1-bit weights (looked at with quantization on)."""
    out = []
    for module in model.modules():
        proxy = getattr(module, "weight_quant", None)
        if not isinstance(proxy, WeightQuantProxyFromInjector):
            continue
        disabled, proxy.disable_quant = proxy.disable_quant, False
        try:
            bits = proxy.bit_width()
        finally:
            proxy.disable_quant = disabled
        if bits is not None and int(bits) == 1:
            out.append(proxy)
    return out


def set_binary_weights(model: nn.Module, enabled: bool) -> int:
    """Turn every 1-bit weight quantizer of ``model`` on (binary weights) or off (the latent weights as they are);
    returns how many. Off, a Brevitas layer computes with its float weight, so step 1 trains real weights."""
    proxies = binary_weight_proxies(model)
    for proxy in proxies:
        proxy.disable_quant = not enabled
    return len(proxies)
