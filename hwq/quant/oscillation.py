# SPDX-License-Identifier: BSD-3-Clause
"""Oscillation dampening and iterative weight freezing (Nagel et al., "Overcoming Oscillations in Quantization-Aware
Training", ICML 2022) as the ``osc`` family (``--method osc``).

What the paper and its reference code (``qualcomm-ai-research/oscillations-qat``) do, per weight quantizer:

* an *oscillation* is an integer weight changing in the opposite direction of its previous change; its frequency is
  the EMA (momentum ``m``) of these events, one update per training step (:class:`OscillationTracker`);
* dampening: ``lambda * sum((sg(q(w)) - clip(w, s * n, s * p))^2)``, pulling each latent weight towards its grid
  point (:func:`dampening_loss`); the code anneals ``lambda`` on a cosine (0 to 0.1);
* freezing: a weight whose frequency passes the threshold (annealed on a cosine, 0.1 to 0.01) keeps from then on
  the rounded EMA of its integer values.

hwq puts all of it in one Brevitas ``int_quant`` (:class:`OscillationIntQuant`, an ``IntQuant`` that also tracks,
freezes and dampens) in ``uniform``'s weight quantizer, with the training hooks ``hwq_on_step`` (schedules, one
tracking update per step), ``hwq_extra_loss`` (dampening) and ``hwq_after_step`` (a frozen latent weight is set to
``frozen_int * scale``, so that the exported ``Quant`` node, which rounds the latent weight, gives the frozen integer).
Eval mode is the plain ``uniform`` quantizer of the latent weights, so the run exports as ``--quant uniform`` does.
"""

from __future__ import annotations

import math

import torch
from brevitas.core.quant import IntQuant
from torch import Tensor, nn

from hwq.options import OSC_OPTIONS
from hwq.quant.brevitas_map import to_injector
from hwq.quant.family import UniformFamily, register_family


def cosine_anneal(progress: float, start: float, end: float) -> float:
    """``start`` at progress 0 to ``end`` at progress 1 on half a cosine (the reference code's ``CosineTempDecay``)."""
    p = min(max(progress, 0.0), 1.0)
    return end + (start - end) * 0.5 * (1.0 + math.cos(math.pi * p))


def dampening_loss(w: Tensor, w_q: Tensor, low: Tensor, high: Tensor) -> Tensor:
    """The paper's ``sum((sg(w_q) - clip(w, low, high))^2)``: ``w_q`` the quantized weights, ``low, high`` the grid's
    ends in weight units (``s * n``, ``s * p``)."""
    return (w_q.detach() - torch.clamp(w, low, high)).square().sum()


class OscillationTracker(nn.Module):
    """The EMA of oscillation events of an integer tensor, updated by :meth:`update` once per step, and the freezing
    of entries whose frequency passes a threshold (at the rounded EMA of their integer values).

    The state is buffers (saved and resumed with the model); they take the tensor's shape at the first update (a
    loaded state dict gives them its shapes).
    """

    STATE = ("prev_int", "prev_dir", "frequency", "ema_int", "frozen", "frozen_int")

    def __init__(self, momentum: float) -> None:
        super().__init__()
        self.momentum = float(momentum)
        for name in self.STATE:
            self.register_buffer(name, torch.zeros(0, dtype=torch.bool if name == "frozen" else torch.float32))
        self.register_buffer("updates", torch.zeros((), dtype=torch.long))
        #: Oscillation events at the last update (for reports).
        self.last_events = 0

    def started(self) -> bool:
        return self.prev_int.numel() > 0

    def _start(self, x_int: Tensor) -> None:
        self.prev_int = x_int.clone()
        self.ema_int = x_int.clone()
        self.prev_dir = torch.zeros_like(x_int)
        self.frequency = torch.zeros_like(x_int)
        self.frozen = torch.zeros_like(x_int, dtype=torch.bool)
        self.frozen_int = torch.zeros_like(x_int)

    def apply_frozen(self, x_int: Tensor) -> Tensor:
        """``x_int`` with the frozen entries at their frozen integers."""
        if not self.started() or not bool(self.frozen.any()):
            return x_int
        return torch.where(self.frozen, self.frozen_int, x_int)

    @torch.no_grad()
    def update(self, x_int: Tensor, freeze_threshold: float) -> None:
        """One step's integers (frozen entries already applied): count oscillations, update the EMAs, freeze."""
        x_int = x_int.detach().to(torch.float32)
        if not self.started():
            self._start(x_int)
            self.updates += 1
            return
        direction = torch.sign(torch.round(x_int - self.prev_int))
        oscillated = (direction * self.prev_dir) == -1
        m = self.momentum
        self.frequency.mul_(1 - m).add_(m * oscillated.to(torch.float32))
        self.prev_dir = torch.where(direction != 0, direction, self.prev_dir)
        self.prev_int = x_int.clone()
        self.last_events = int(oscillated.sum())
        if freeze_threshold > 0:
            newly = (self.frequency > freeze_threshold) & ~self.frozen
            self.frozen_int = torch.where(newly, torch.round(self.ema_int), self.frozen_int)
            self.frozen = self.frozen | newly  # not in place: the forward pass saved the old mask
        self.ema_int.mul_(1 - m).add_(m * x_int)
        self.updates += 1

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        for name in self.STATE:
            if prefix + name in state_dict:
                setattr(self, name, torch.empty_like(state_dict[prefix + name]))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


class OscillationIntQuant(IntQuant):
    """Brevitas ``IntQuant`` of a weight that tracks its oscillations, freezes oscillating entries and keeps the
    dampening loss of its last training forward pass (the osc family; module docstring)."""

    def __init__(self, narrow_range: bool, signed: bool, input_view_impl: nn.Module, float_to_int_impl: nn.Module,
                 tensor_clamp_impl: nn.Module, osc_dampen: float, osc_dampen_end: float,
                 osc_freeze_threshold: float, osc_freeze_threshold_end: float, osc_momentum: float) -> None:
        super().__init__(narrow_range, signed, input_view_impl, float_to_int_impl, tensor_clamp_impl)
        self.dampen_schedule = (float(osc_dampen), float(osc_dampen_end))
        self.threshold_schedule = (float(osc_freeze_threshold), float(osc_freeze_threshold_end))
        self.tracker = OscillationTracker(osc_momentum)
        self.dampen_weight = self.dampen_schedule[0]
        self.freeze_threshold = self.threshold_schedule[0]
        #: Track at the first training forward pass of each step (an objective may run several).
        self._track_pending = False
        self._dampening: Tensor | None = None
        #: (latent weight, scale, zero point) of the last training forward pass, for the after-step projection. A
        #: latent tensor that is not a parameter (none of hwq's layers) is left alone: eval mode then rounds it.
        self._latent: list = []

    def hwq_on_step(self, progress: float) -> None:
        self.dampen_weight = cosine_anneal(progress, *self.dampen_schedule)
        self.freeze_threshold = cosine_anneal(progress, *self.threshold_schedule)
        self._track_pending = True

    def forward(self, scale: Tensor, zero_point: Tensor, bit_width: Tensor, x: Tensor) -> Tensor:
        y_int = self.to_int(scale, zero_point, bit_width, x)
        if self.training:
            y_int = self.tracker.apply_frozen(y_int)
            if self._track_pending:
                self.tracker.update(y_int, self.freeze_threshold)
                self._track_pending = False
            s = scale.detach()
            low = (self.min_int(bit_width) - zero_point) * s
            high = (self.max_int(bit_width) - zero_point) * s
            y = (y_int - zero_point) * scale
            self._dampening = (self.dampen_weight * dampening_loss(x, y, low, high)
                               if self.dampen_weight > 0 else None)
            # Brevitas hands over a view of the weight parameter (a full slice): keep the parameter itself.
            base = x._base if isinstance(x._base, nn.Parameter) and x._base.shape == x.shape else x
            self._latent = [base, s, zero_point.detach()]
            return self.delay_wrapper(x, y)
        return self.delay_wrapper(x, (y_int - zero_point) * scale)

    def hwq_extra_loss(self) -> Tensor:
        loss, self._dampening = self._dampening, None
        return loss if loss is not None else torch.zeros(())

    @torch.no_grad()
    def hwq_after_step(self) -> None:
        """A frozen entry's latent weight goes to its frozen integer times the scale: the exported network (which
        rounds the latent weights) and eval mode then quantize it to the frozen integer."""
        if not self._latent or not self.tracker.started() or not bool(self.tracker.frozen.any()):
            return
        latent, s, zero_point = self._latent
        if isinstance(latent, nn.Parameter):
            latent.copy_(torch.where(self.tracker.frozen, (self.tracker.frozen_int - zero_point) * s, latent))


def oscillation_report(model: nn.Module) -> dict:
    """Over the model's tracked weights: how many, the mean oscillation frequency (EMA), the fraction of weights
    whose frequency is above 0.01 and the fraction frozen."""
    trackers = [m for m in model.modules() if isinstance(m, OscillationTracker) and m.started()]
    n = sum(t.frequency.numel() for t in trackers)
    if n == 0:
        return {"weights": 0, "mean_frequency": 0.0, "oscillating": 0.0, "frozen": 0.0}
    return {
        "weights": n,
        "mean_frequency": sum(float(t.frequency.sum()) for t in trackers) / n,
        "oscillating": sum(int((t.frequency > 0.01).sum()) for t in trackers) / n,
        "frozen": sum(int(t.frozen.sum()) for t in trackers) / n,
    }


@register_family
class OscFamily(UniformFamily):
    """``uniform``'s weight quantizers with oscillation tracking, dampening and freezing at 2..8 bits; activations as
    ``uniform``. At 1 bit the binary quantizer of ``uniform``: sign is not an integer grid that Brevitas' ``IntQuant``
    rounds to, so nothing is tracked there."""

    name = "osc"
    declared_options = OSC_OPTIONS

    def weight_quant(self, bits: int, per_channel: bool = True):
        if bits == 1:
            return super().weight_quant(bits, per_channel)
        settings = {name: self._option(name) for name in ("osc_dampen", "osc_dampen_end", "osc_freeze_threshold",
                                                          "osc_freeze_threshold_end", "osc_momentum")}
        return to_injector(self.weight_spec(bits)).let(int_quant=OscillationIntQuant, **settings)
