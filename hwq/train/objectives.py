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

    def attach(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, config: Any) -> None:
        """Called once per run, after the model and optimizer are made and before a checkpoint is loaded into them
        (an objective with parameters of its own adds their group to ``optimizer`` here)."""

    def on_batch(self, inputs: torch.Tensor, labels: torch.Tensor, progress: float) -> None:
        """Called before each step with its batch and the training's progress (0..1) at the step's end."""

    def gradients(self, closure: Closure, optimizer: torch.optim.Optimizer) -> tuple[torch.Tensor, torch.Tensor]:
        optimizer.zero_grad(set_to_none=True)
        loss, logits = closure()
        loss.backward()
        return loss, logits


def trained_parameters(optimizer: torch.optim.Optimizer) -> list[torch.nn.Parameter]:
    """The parameters the optimizer updates that have a gradient now (a frozen layer's have none)."""
    return [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]


class SsqlObjective(Objective):
    """SSQL (Cao et al. ECCV 2022): for the first ``ssql_pretrain_epochs`` the step is SSQL-SimSiam's, on two
    augmented views of the batch through a full-precision and a random-bit view of the network and a projection
    head (:mod:`hwq.train.ssql`; no labels); afterwards the plain step (supervised QAT at the run's bit-widths).

    The head lives here, not in the model: it is in no ``model.pt`` and no export. Its weights are not in the
    checkpoint either: a run resumed during pretraining starts a new head (seeded); the network's weights resume.
    """

    def attach(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, config: Any) -> None:
        from hwq.errors import ConfigError
        from hwq.train.ssql import SsqlHead, classifier_of

        for key in ("ssql_wbits", "ssql_abits"):
            values = self.options[key]
            if not values or any(v != int(v) for v in values):
                raise ConfigError(f"method_options.{key}: expected a non-empty list of integer bit-widths, "
                                  f"got {values!r}")
        self.wbits = [int(v) for v in self.options["ssql_wbits"]]
        self.abits = [int(v) for v in self.options["ssql_abits"]]
        pretrain = self.options["ssql_pretrain_epochs"]
        if pretrain >= 1 and (pretrain != int(pretrain) or pretrain >= config.epochs):
            raise ConfigError(f"method_options.ssql_pretrain_epochs: expected a fraction in (0, 1) or a whole number "
                              f"of epochs below --epochs {config.epochs} (fine-tuning needs one), got {pretrain!r}")
        #: Pretraining runs while the training's progress (at a step's end) is at most this.
        self.pretrain_until = pretrain if pretrain < 1 else pretrain / config.epochs
        self.model, self.seed = model, int(config.seed)
        classifier = classifier_of(model)
        self.head = SsqlHead(classifier.in_features, self.options["ssql_dim"])
        generator = torch.Generator().manual_seed(self.seed)
        with torch.no_grad():  # the head's initial weights from the run's seed, not from the global generator
            for param in self.head.parameters():
                if param.dim() > 1:
                    bound = 1.0 / param.shape[1] ** 0.5
                    param.copy_(torch.empty_like(param).uniform_(-bound, bound, generator=generator))
        device = next(model.parameters()).device
        self.head.to(device)
        self._features: torch.Tensor | None = None
        self._feature_hook = classifier.register_forward_pre_hook(self._keep_features)
        optimizer.add_param_group({"params": list(self.head.parameters()), "lr_scale": 1.0,
                                   "lr": optimizer.param_groups[0]["lr"]})
        self._batch: tuple[torch.Tensor, float] | None = None

    def _keep_features(self, module, inputs) -> None:
        x = inputs[0]
        self._features = x.value if hasattr(x, "value") else x

    def pretraining(self, progress: float) -> bool:
        return progress <= self.pretrain_until + 1e-9

    def on_batch(self, inputs: torch.Tensor, labels: torch.Tensor, progress: float) -> None:
        self._batch = (inputs, progress)

    def step_generator(self, progress: float) -> torch.Generator:
        """The step's random source (views and bit-widths): a function of the seed and the step, so a resumed run
        draws what the straight one drew."""
        return torch.Generator().manual_seed(self.seed * 1_000_003 + int(round(progress * 1e9)))

    def gradients(self, closure: Closure, optimizer: torch.optim.Optimizer) -> tuple[torch.Tensor, torch.Tensor]:
        inputs, progress = self._batch
        if not self.pretraining(progress):
            if self._feature_hook is not None:  # the features are not needed any more
                self._feature_hook.remove()
                self._feature_hook, self._features = None, None
            return super().gradients(closure, optimizer)
        from hwq.train.ssql import augment_views, draw_bits, precision_view, ssql_loss

        optimizer.zero_grad(set_to_none=True)
        generator = self.step_generator(progress)
        views = [augment_views(inputs, generator), augment_views(inputs, generator)]
        bits = draw_bits(self.wbits, self.abits, generator)
        self.last_bits = bits
        self.head.train()
        outputs = {}
        for name, precision in (("full", None), ("quant", bits)):
            with precision_view(self.model, precision):
                for i, view in enumerate(views):
                    logits = self.model(view)
                    outputs[name, i] = (*self.head(self._features), logits)
        loss = ssql_loss([outputs["full", i][1] for i in (0, 1)], [outputs["quant", i][1] for i in (0, 1)],
                         [outputs["full", i][0] for i in (0, 1)])
        loss.backward()
        return loss, outputs["full", 0][2].detach()


#: Objective name -> its class. A new objective subclasses :class:`Objective` and declares its options.
OBJECTIVES: dict[str, type[Objective]] = {
    "plain": Objective,
    "ssql": SsqlObjective,
}


def make_objective(name: str, method_options: dict[str, Any]) -> Objective:
    """The objective ``name`` with its options read from ``method_options`` (already checked by the config)."""
    declared = OBJECTIVE_OPTIONS[name]
    return OBJECTIVES[name]({opt.name: opt.read(method_options, "method_options") for opt in declared})
