# SPDX-License-Identifier: BSD-3-Clause
"""Objectives: how one optimizer step turns a batch into gradients (a method's ``objective``, :mod:`hwq.methods`).

The train step (:func:`hwq.train.loop.train_step`) hands an objective a ``closure`` that runs the forward pass and
returns ``(loss, logits)`` (task loss, distillation and every layer's extra loss), and the optimizer (whose
``param_groups`` hold the parameters being trained); the objective leaves the gradients in ``param.grad`` and
returns the loss and logits to report. The
optimizer step, latent-weight clipping and the after-step hooks follow, the same for every objective.

``plain`` calls the closure once and back-propagates. ``sam`` (sharpness-aware minimization; SAQ's variant on a
quantized model) calls it twice with the weights perturbed in between and restores them before returning; ``hero``
adds HERO's Hessian penalty to the perturbed pass. An objective declares its options in
:data:`hwq.options.OBJECTIVE_OPTIONS` under the same name and receives them read (defaults filled in); the run
hands it the model once (:meth:`Objective.attach`).
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from hwq.options import OBJECTIVE_OPTIONS
from hwq.train.perturb import (Target, ascent_direction, perturbed, quantized_layers, quantized_weights,
                               weight_quantizer_parameters)

Closure = Callable[[], tuple[torch.Tensor, torch.Tensor]]


class Objective:
    """The plain objective: one forward pass, one backward pass."""

    def __init__(self, options: dict[str, Any]) -> None:
        self.options = options
        self.model: nn.Module | None = None

    def attach(self, model: nn.Module, config: Any = None) -> None:
        """The model the closure runs (an objective that perturbs layers, not only parameters, needs it) and the run's
        ``TrainConfig`` (its seed and epochs; None outside a run)."""
        self.model = model

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


class SharpnessAware(Objective):
    """SAM (Foret et al. 2021): the gradient at ``w + eps``, ``eps = rho * g / ||g||``, then the weights restored.

    ``sam_point: quantized`` is SAQ's case (Liu et al., reference code ``utils/qsam.py``): a quantized layer's
    perturbation comes from the gradient of its quantized weight and is added after the quantizer, ``Q(w) + eps``;
    the other trained parameters (normalisation, activation scales) are perturbed themselves, the weight
    quantizers' scales not at all. ``latent`` perturbs every trained parameter itself, ``Q(w + eps)`` (plain SAM
    on the latent weights). A layer without a quantizer (``--quant float``) is perturbed itself either way.
    """

    def gradients(self, closure, optimizer):
        layers = quantized_layers(self.model) if self.options["sam_point"] == "quantized" else []
        optimizer.zero_grad(set_to_none=True)
        with quantized_weights(layers) as qweights:
            loss, logits = closure()
            loss.backward()
        eps = ascent_direction(self.ascent_gradients(optimizer, layers, qweights), self.options["rho"])
        optimizer.zero_grad(set_to_none=True)
        with perturbed(eps, layers):
            loss_at_eps, _ = closure()
            loss_at_eps.backward()
        return loss, logits

    def ascent_gradients(self, optimizer, layers, qweights) -> dict[Target, torch.Tensor]:
        """The gradient of each perturbation target after the first pass."""
        grads: dict[Target, torch.Tensor] = {m: qweights[m].grad for m in layers
                                              if m in qweights and qweights[m].grad is not None}
        skip = {m.weight for m in grads} | (weight_quantizer_parameters(self.model) if layers else set())
        grads.update({p: p.grad.detach().clone() for p in trained_parameters(optimizer) if p not in skip})
        return grads


class Hero(SharpnessAware):
    """HERO (Yang et al., DAC 2022; reference code ``cifar_hero.py``): SAM's perturbed gradient plus the gradient of
    ``hero_lambda * sum_l mean((grad_l L(w + eps) - grad_l L(w))^2)`` over the weight tensors ``l``, which is about
    ``hero_lambda * ||H eps||^2 / n_l``: it penalises the Hessian's large eigenvalues along the ascent direction.
    The parameters themselves are perturbed (HERO trains float or quantized weights; ``sam_point`` is not its)."""

    def gradients(self, closure, optimizer):
        optimizer.zero_grad(set_to_none=True)
        loss, logits = closure()
        loss.backward()
        clean = self.ascent_gradients(optimizer, [], {})
        params = list(clean)
        eps = ascent_direction(clean, self.options["rho"])
        optimizer.zero_grad(set_to_none=True)
        with perturbed(eps, []):
            loss_at_eps, _ = closure()
            grads = torch.autograd.grad(loss_at_eps, params, create_graph=True, allow_unused=True)
            grads = [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads)]
            penalty = hero_penalty(params, grads, [clean[p] for p in params], self.options["hero_lambda"])
            penalty_grads = (torch.autograd.grad(penalty, params, allow_unused=True) if penalty.requires_grad
                             else [None] * len(params))
            for p, g, h in zip(params, grads, penalty_grads):
                p.grad = g.detach() + (h.detach() if h is not None else 0.0)
        return loss, logits


def hero_penalty(params: list[torch.Tensor], grads, clean_grads, weight: float) -> torch.Tensor:
    """HERO's regulariser: ``weight * sum mean((g - g_clean)^2)`` over the weight tensors (2 or more dimensions:
    the reference code leaves out biases and normalisation parameters)."""
    terms = [F.mse_loss(g, c) for p, g, c in zip(params, grads, clean_grads) if p.dim() > 1]
    return weight * torch.stack(terms).sum() if terms else torch.zeros(())


class SsqlObjective(Objective):
    """SSQL (Cao et al. ECCV 2022): for the first ``ssql_pretrain_epochs`` the step is SSQL-SimSiam's, on two
    augmented views of the batch through a full-precision and a random-bit view of the network and a projection
    head (:mod:`hwq.train.ssql`; no labels); afterwards the plain step (supervised QAT at the run's bit-widths).

    The head lives here, not in the model, with its own Adam: it is in no ``model.pt``, no export and no
    ``checkpoint.pt``, so a run resumed during pretraining starts a new head (seeded); the network's weights resume.
    """

    def attach(self, model: nn.Module, config: Any = None) -> None:
        from hwq.errors import ConfigError
        from hwq.train.ssql import SsqlHead, classifier_of

        if config is None:
            raise ValueError("ssql: attach(model, config) needs the run's TrainConfig (its seed and epochs)")

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
        # The head's initial weights from the run's seed, leaving the global random state alone: a resumed run
        # (which restores that state before the objective is attached) then draws its dropout masks as a straight one.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            self.head = SsqlHead(classifier.in_features, self.options["ssql_dim"])
        device = next(model.parameters()).device
        self.head.to(device)
        self._features: torch.Tensor | None = None
        self._feature_hook = classifier.register_forward_pre_hook(self._keep_features)
        # The head has its own Adam, stepped here at the run's current learning rate, so the run's optimizer (and its
        # checkpoint) holds the deployed model's parameters only.
        self.head_optimizer = torch.optim.Adam(self.head.parameters(), lr=config.lr)
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
            # The feature hook stays (it keeps a reference, nothing more), so a caller that steps at an earlier
            # progress again (the benchmark's interleaved step timing) still finds the features.
            self._features = None
            return super().gradients(closure, optimizer)
        from hwq.train.ssql import augment_views, draw_bits, precision_view, ssql_loss

        optimizer.zero_grad(set_to_none=True)
        self.head_optimizer.zero_grad(set_to_none=True)
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
        for group in self.head_optimizer.param_groups:
            group["lr"] = optimizer.param_groups[0]["lr"]
        self.head_optimizer.step()
        return loss, outputs["full", 0][2].detach()


class LayeredObjective(Objective):
    """Once-QAT by vertical layering (:mod:`hwq.quant.layered`): each step's loss is the run's own (the ``B``-bit
    network) plus that of every member in ``once_bits`` (W = A bits), each the same network with its integers
    sliced to those bits; one backward pass through the sum. Every member is trained in every step, so one set of
    weights serves them all (``hwq export RUN --bits b`` exports a member).

    With ``once_sample: random`` a step trains one of the bit-widths instead (the run's or a member, uniformly),
    drawn from a generator seeded by the run's seed and the step's progress, so a resumed run, or a federated
    client seeded per round (:mod:`hwq.fed`), draws the same sequence whatever ran before it."""

    def attach(self, model: nn.Module, config: Any = None) -> None:
        from hwq.quant.layered import check_members

        self.model = model
        self.members = [(int(b), int(b)) for b in self.options["once_bits"]]
        self.seed = int(config.seed) if config is not None else 0
        self.progress = 0.0
        if config is not None:
            check_members((config.wbits, config.abits), self.members, "method_options.once_bits")

    def on_batch(self, inputs: torch.Tensor, labels: torch.Tensor, progress: float) -> None:
        self.progress = progress

    def drawn_bits(self) -> tuple[int, int] | None:
        """``once_sample: random``: the step's bit-widths, None for the run's own; ``all``: not called."""
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + int(round(self.progress * 1e9)))
        choice = int(torch.randint(len(self.members) + 1, (1,), generator=generator))
        return None if choice == 0 else self.members[choice - 1]

    def gradients(self, closure: Closure, optimizer: torch.optim.Optimizer) -> tuple[torch.Tensor, torch.Tensor]:
        from hwq.quant.layered import layered_view

        optimizer.zero_grad(set_to_none=True)
        if self.options["once_sample"] == "random":
            bits = self.drawn_bits()
            with layered_view(self.model, bits) if bits else contextlib.nullcontext():
                loss, logits = closure()
            loss.backward()
            return loss, logits
        loss, logits = closure()
        total = loss
        for bits in self.members:
            with layered_view(self.model, bits):
                member_loss, _ = closure()
            total = total + member_loss
        total.backward()
        return loss, logits


#: Objective name -> its class. A new objective subclasses :class:`Objective` and declares its options.
OBJECTIVES: dict[str, type[Objective]] = {
    "plain": Objective,
    "sam": SharpnessAware,
    "hero": Hero,


    "ssql": SsqlObjective,
    "layered": LayeredObjective,
}


def make_objective(name: str, method_options: dict[str, Any]) -> Objective:
    """The objective ``name`` with its options read from ``method_options`` (already checked by the config)."""
    declared = OBJECTIVE_OPTIONS[name]
    return OBJECTIVES[name]({opt.name: opt.read(method_options, "method_options") for opt in declared})
