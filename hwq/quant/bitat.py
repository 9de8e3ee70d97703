# SPDX-License-Identifier: BSD-3-Clause
"""BiTAT: binarization with a task-dependent aggregated transformation (Park et al., 2022), as ``--quant bitat``.

Each weight layer is a Brevitas binary layer (so the deployed network is a plain W1A1 network, exported like
any other) that also carries, for training only:

* the input correlation ``C = E[x x^T]`` (running average) and its orthonormal eigenbasis ``U`` (optionally
  rotated further by a learned Cayley transform, ``bitat_transform: cayley``);
* an importance vector ``s > 0`` (softplus, mean 1), initialised from the eigenvalues when the layer is binarized
  and trained with the task loss through a zero-valued probe (see :meth:`_BiTATWeights._probe`);
* the importance-weighted binarization penalty ``(w - alpha b)^T U diag(s) U^T (w - alpha b)``;
* optionally (``bitat_codes: importance``; default ``sign``), importance-aware codes: when a layer switches to
  binary, its latent weights are re-signed to the binary codes that keep that weighted error small (GPTQ-style
  error feedback, :func:`hwq.quant.bitat_transform.importance_aware_codes`), so the layer starts from the
  binarization that loses least of the full-precision weights' information in the important directions
  (``bitat_codes_every``: k > 0 re-applies them every k steps).

Layers (and the activation after each) start in full precision and switch to binary bottom-to-top, epoch by
epoch (:mod:`hwq.train.progressive`), never back. Decisions and ablations: ``docs/bitat.md``.

>>> from hwq.models import ModelSpec, build_model
>>> model = build_model(ModelSpec("tfc", 1, 1, quant="bitat", image_shape=(1, 8, 8)))
>>> [bool(m.binary) for m in bitat_layers(model)]   # all full precision until the first epoch starts
[False, False, False, False]
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from brevitas.nn import QuantConv2d, QuantIdentity, QuantLinear
from torch import nn

from hwq.errors import ConfigError
from hwq.options import BITAT_MAX_EIGEN_DIM, BITAT_OPTIONS, option_named
from hwq.quant import bitat_transform as T
from hwq.quant.brevitas_map import to_injector
from hwq.quant.family import UniformFamily, register_family

if TYPE_CHECKING:
    from hwq.train.progressive import ProgressivePlan

TRANSFORMS = option_named(BITAT_OPTIONS, "bitat_transform").choices
CODES = option_named(BITAT_OPTIONS, "bitat_codes").choices
#: Weight of the running average of ``E[x x^T]`` given to each new batch.
CORR_MOMENTUM = 0.1
#: Layers with more inputs than this keep the coordinate basis (``bitat_max_eigen_dim``); MobileNet's pointwise
#: layers (at most 512 inputs) and TFC (784) are below it, its flattened classifier (8192) above.
MAX_EIGEN_DIM = BITAT_MAX_EIGEN_DIM


class _Unit:
    """Where a layer sits in the progressive order (a plain object shared by a layer and its activation)."""

    def __init__(self, index: int, plan: ProgressivePlan, units: list) -> None:
        self.index, self.plan, self.units = index, plan, units

    def should_be_binary(self, epoch: int, epochs: int) -> bool:
        return self.plan.start_epoch(self.index, len(self.units), epochs) <= epoch


class _HostFlags:
    """Schedule flags read as Python values and saved as buffers (``<name>_state``) for checkpoints.

    Read from a GPU buffer (``bool(buffer)``), a flag waits for the GPU to finish its queue: several such reads
    per layer and step stalled the benchmark's processes on a shared GPU. Writes go to both (the buffer write is
    asynchronous); loading a state dict refreshes the Python values from the buffers."""

    def _register_flags(self, **defaults: bool | int | float) -> None:
        if not hasattr(self, "_flag_types"):
            self._flag_types = {}
            self.register_load_state_dict_post_hook(_HostFlags._reload_flags)
        self._flag_types.update({name: type(value) for name, value in defaults.items()})
        for name, value in defaults.items():
            self.register_buffer(f"{name}_state", torch.tensor(value))
            setattr(self, name, value)

    def set_flag(self, name: str, value: bool | int | float) -> None:
        setattr(self, name, value)
        getattr(self, f"{name}_state").fill_(value)

    @staticmethod
    def _reload_flags(module: "_HostFlags", incompatible_keys) -> None:
        for name, kind in module._flag_types.items():
            setattr(module, name, kind(getattr(module, f"{name}_state").item()))


class _BiTATWeights(_HostFlags):
    """Mixin for a Brevitas binary weight layer; ``_setup`` after the layer's own ``__init__``."""

    def _setup(self, groups: int, n: int, unit: _Unit, transform: str, importance: bool, penalty: float,
               power: float, codes: str = "sign", codes_every: int = 0) -> None:
        rows = self.weight.shape[0] // groups
        self.bitat_groups, self.bitat_rows, self.bitat_n = groups, rows, n
        self._unit, self.transform, self.penalty_weight, self.importance_power = unit, transform, penalty, power
        self.use_importance, self.codes, self.codes_every = importance, codes, codes_every
        # Buffers and extra state, so a checkpoint resumes the schedule and the statistics exactly.
        # transform_ready: False until the basis and importance were initialised from real inputs (a layer may
        # switch to binary before it has seen any: then the first training batch after the switch initialises
        # them). steps_binary: optimizer steps since the switch.
        self._register_flags(binary=False, corr_seen=False, transform_ready=False, steps_binary=0)
        # The coordinate basis needs only the diagonal of E[x x^T]: (G, n) instead of (G, n, n), which on an
        # 8192-input layer saves a 200-sample x 8192^2 product per step.
        self.register_buffer("corr", torch.zeros(groups, n) if transform == "none" else torch.zeros(groups, n, n))
        # ... and no stored basis (U = I): on that layer a dense identity would be 268 MB in every checkpoint.
        self.register_buffer("basis", None if transform == "none" else torch.eye(n).repeat(groups, 1, 1))
        self.importance_raw = nn.Parameter(T.inverse_softplus(torch.ones(groups, n)), requires_grad=importance)
        if transform == "cayley":
            self.rotation_raw = nn.Parameter(torch.zeros(groups, n, n))

    # --- the transformation ------------------------------------------------------------------------------
    def transform_basis(self) -> torch.Tensor:
        """``U`` per group, ``(G, n, n)``: the eigenbasis, times the learned rotation in the Cayley variant, or the
        identity (the coordinate basis, built on request)."""
        if self.transform == "none":
            eye = torch.eye(self.bitat_n, dtype=self.corr.dtype, device=self.corr.device)
            return eye.expand(self.bitat_groups, -1, -1)
        if self.transform == "cayley":
            return self.basis @ T.cayley(self.rotation_raw)
        return self.basis

    def _metric_basis(self) -> torch.Tensor | None:
        """``U`` for the penalty, the probe and the codes; ``None`` for the coordinate basis (``U = I``, skipped)."""
        return None if self.transform == "none" else self.transform_basis()

    def importance(self) -> torch.Tensor:
        """``s`` per group, ``(G, n)``, positive with mean 1 (all ones in the no-importance ablation)."""
        if not self.use_importance:
            return torch.ones_like(self.importance_raw)
        return T.normalized_importance(self.importance_raw)

    def grouped_weight(self, weight: torch.Tensor | None = None) -> torch.Tensor:
        w = self.weight if weight is None else weight
        return w.reshape(self.bitat_groups, self.bitat_rows, self.bitat_n)

    @torch.no_grad()
    def observe(self, x: torch.Tensor) -> None:
        """Fold a batch of inputs into the running ``E[x x^T]``."""
        corr = T.correlation(self._patches(x.detach().float()), diagonal=self.transform == "none")
        if not self.corr_seen:
            self.corr.copy_(corr)
            self.set_flag("corr_seen", True)
        else:
            self.corr.lerp_(corr, CORR_MOMENTUM)
        if self.binary and not self.transform_ready:
            self._init_transform()

    def _eigendecompose(self) -> tuple[torch.Tensor | None, torch.Tensor]:
        """``(U, lambda)`` of the running correlation; ``(None, diag(C))`` for the coordinate basis."""
        if self.transform == "none":
            return None, self.corr.clone()
        return T.eigenbasis(self.corr)

    @torch.no_grad()
    def refresh_basis(self) -> torch.Tensor:
        """Recompute the eigenbasis from the current correlation; returns the eigenvalues."""
        u, lam = self._eigendecompose()
        if u is not None and self.transform != "cayley":
            # The Cayley variant keeps its starting basis (set at the switch): the learned rotation is relative
            # to it.
            self.basis.copy_(u)
        return lam

    @torch.no_grad()
    def binarize(self) -> None:
        """Switch to binary (once): fix the basis from the inputs seen so far and initialise ``s`` from it."""
        if self.binary:
            return
        self.set_flag("binary", True)
        if self.corr_seen:
            self._init_transform()

    @torch.no_grad()
    def _init_transform(self) -> None:
        u, lam = self._eigendecompose()  # lam = diag(U^T C U)
        if u is not None:
            self.basis.copy_(u)
        if self.use_importance:
            s = T.importance_from_eigenvalues(lam, self.importance_power, floor=0.05, ceil=20.0)
            self.importance_raw.copy_(T.inverse_softplus(s))
        self.set_flag("transform_ready", True)
        if self.codes == "importance":
            self.apply_importance_codes()

    @torch.no_grad()
    def apply_importance_codes(self) -> None:
        """Re-sign the latent weights (magnitudes kept) to the importance-aware binary codes, so the deployed
        ``sign(W)`` is the binarization that loses least of the current weights under ``U diag(s) U^T``."""
        if not self.use_importance:
            return  # s = 1: the metric is the identity and the codes are the signs
        w = self.grouped_weight().detach()
        u = self._metric_basis()
        codes = T.importance_aware_codes(w, None if u is None else u.detach(), self.importance().detach())
        self.weight.copy_((w.abs().clamp_min(1e-6) * codes).reshape(self.weight.shape))

    # --- hooks called by the train loop ------------------------------------------------------------------
    def hwq_on_epoch_start(self, epoch: int, epochs: int) -> None:
        if not self.binary:
            if self._unit.should_be_binary(epoch, epochs):
                self.binarize()
        elif self.transform == "eigen" and self.transform_ready:
            self.refresh_basis()  # follow the inputs as the layers below keep training

    @torch.no_grad()
    def hwq_after_step(self) -> None:
        """With ``codes_every = k > 0``, also re-apply the importance-aware codes every k steps of a binary layer."""
        if not self.binary:
            return
        self.set_flag("steps_binary", self.steps_binary + 1)
        if self.codes == "importance" and self.codes_every and self.transform_ready \
                and self.steps_binary % self.codes_every == 0:
            self.apply_importance_codes()

    def hwq_extra_loss(self) -> torch.Tensor:
        """``penalty_weight *`` the importance-weighted binarization error (zero before the switch)."""
        if not (self.training and self.binary and self.penalty_weight):
            return self.weight.new_zeros(())
        with torch.no_grad():  # s and U are trained by the task loss only (see docs/bitat.md)
            u, s = self._metric_basis(), self.importance()
        return self.penalty_weight * T.weighted_binarization_error(self.grouped_weight(), u, s)

    # --- forward -----------------------------------------------------------------------------------------
    def _probe(self) -> torch.Tensor | float:
        """A zero-valued term whose gradient trains ``s`` (and the rotation) with the task loss.

        Its value is ``W M - W M`` with ``M = U diag(s) U^T``; its gradient w.r.t. ``s_j`` is the loss change if
        the latent weights' component along ``u_j`` were scaled, so ``s_j`` grows where the task uses it.
        """
        if not (self.use_importance or self.transform == "cayley"):
            return 0.0
        u, s = self._metric_basis(), self.importance()
        wm = T.apply_metric(self.grouped_weight().detach(), u, s)
        return (wm - wm.detach()).reshape(self.weight.shape)

    def _bitat_forward(self, x: torch.Tensor, plain_forward) -> torch.Tensor:
        if self.training:
            self.observe(x)
        if not self.binary:
            return self._run(x, self.weight)
        if not self.training:
            return plain_forward(x)  # the exact Brevitas path that export traces
        return self._run(x, self.quant_weight().value + self._probe())

    def orthonormality_error(self) -> float:
        return T.orthonormality_error(self.transform_basis().detach())


class BiTATLinear(_BiTATWeights, QuantLinear):
    """A binary ``QuantLinear`` with BiTAT's training-time state."""

    def _patches(self, x: torch.Tensor) -> torch.Tensor:
        return T.patches(x, 1)

    def _run(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        return F.linear(x, weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._bitat_forward(x, super().forward)


class BiTATConv2d(_BiTATWeights, QuantConv2d):
    """A binary ``QuantConv2d`` (any ``groups``, e.g. depthwise) with BiTAT's training-time state."""

    def _patches(self, x: torch.Tensor) -> torch.Tensor:
        return T.patches(x, self.groups, self.kernel_size, self.stride, self.padding, self.dilation)

    def _run(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, weight, None, self.stride, self.padding, self.dilation, self.groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._bitat_forward(x, super().forward)


class BiTATAct(_HostFlags, nn.Module):
    """``hardtanh`` (what ``sign`` approximates) until its unit switches, then a Brevitas binary activation."""

    def __init__(self, quant: nn.Module, unit: _Unit) -> None:
        super().__init__()
        self.quant, self._unit = quant, unit
        self._register_flags(binary=False)

    def hwq_on_epoch_start(self, epoch: int, epochs: int) -> None:
        if self._unit.should_be_binary(epoch, epochs):
            self.set_flag("binary", True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.quant(x) if self.binary else F.hardtanh(x)


@register_family
class BiTATFamily(UniformFamily):
    """W1A1 only. Options (``--option KEY=VALUE``; declared with their defaults in
    :data:`hwq.options.BITAT_OPTIONS`, tabled in ``docs/bitat.md``): ``bitat_transform`` eigen|cayley|none,
    ``bitat_importance`` (false: s = 1), ``bitat_progressive`` (false: all binary at once), ``bitat_penalty``
    (weight of the penalty), ``bitat_importance_power``, ``bitat_final``, ``bitat_warmup``, ``bitat_stages``,
    ``bitat_codes`` importance|sign (how a layer's signs are chosen at its switch), ``bitat_codes_every`` (steps;
    0: only at the switch), ``bitat_max_eigen_dim`` (layers with more inputs keep the coordinate basis)."""

    name = "bitat"
    weight_bits = (1,)
    act_bits = (1,)
    declared_options = BITAT_OPTIONS

    def __init__(self, options: dict | None = None) -> None:
        # Imported here: hwq.train imports the model registry, which imports this package.
        from hwq.train.progressive import ProgressivePlan

        super().__init__(options)
        self.design = self._option("bitat_design")
        self.transform = self._option("bitat_transform")
        self.use_importance = self._option("bitat_importance")
        self.penalty = self._option("bitat_penalty")
        self.power = self._option("bitat_importance_power")
        # Unset codes: the second design chooses them under its metric, the first keeps its measured default.
        self.codes = self._option("bitat_codes") or ("importance" if self.design == "second" else "sign")
        self.codes_every = self._option("bitat_codes_every")
        self.max_eigen_dim = self._option("bitat_max_eigen_dim")
        self.plan = ProgressivePlan(
            enabled=self._option("bitat_progressive"), final_fraction=self._option("bitat_final"),
            warmup_fraction=self._option("bitat_warmup"), stages=self._option("bitat_stages"),
        )
        #: Units in construction order, which is the forward order of the sequential models hwq builds.
        self.units: list[_Unit] = []
        self.second = self._second_design_schedule() if self.design == "second" else None

    def _second_design_schedule(self):
        from hwq.quant.bitat_second import SecondDesignSchedule
        from hwq.train.progressive import LayerPhases

        phases = LayerPhases(progressive=self._option("bitat_progressive"), warmup=self._option("bitat_warmup"),
                             final=self._option("bitat_final"))
        return SecondDesignSchedule(phases, self._option("bitat_block_size"), freeze=self._option("bitat_freeze"),
                                    aggregate=self._option("bitat_aggregate"),
                                    aggregate_weight=self._option("bitat_aggregate_weight"))

    def _new_unit(self) -> _Unit:
        unit = _Unit(len(self.units), self.plan, self.units)
        self.units.append(unit)
        return unit

    def _settings(self, n: int) -> dict:
        # An n x n eigendecomposition per epoch costs O(n^3): on MobileNet's flattened 8192-input classifier it
        # took 148 s on a 2-core CPU (scripts/bench_bitat_cost.py). Such layers keep the coordinate basis
        # (decision 11).
        transform = "none" if n > self.max_eigen_dim else self.transform
        return dict(transform=transform, importance=self.use_importance, penalty=self.penalty,
                    power=self.power, codes=self.codes, codes_every=self.codes_every)

    def _second_settings(self, n: int) -> dict:
        # The second design trains V (the PCA basis rotated by a Cayley transform) unless V = I is asked for.
        settings = self._settings(n)
        if settings["transform"] == "eigen":
            settings["transform"] = "cayley"
        return {**settings, "penalty": 0.0}

    def linear(self, in_features: int, out_features: int, bits: int) -> nn.Module:
        if self.second is not None:
            if bits != 1:  # a k-bit layer (a first layer, a classifier) is an ordinary uniform one
                return super().linear(in_features, out_features, bits)
            from hwq.quant.bitat_second import SecondDesignLinear

            layer = SecondDesignLinear(in_features, out_features, bias=False,
                                       weight_quant=to_injector(self.weight_spec(bits)))
            layer._setup(1, in_features, self._new_unit(), **self._second_settings(in_features))
            layer._setup_second(self.second)
            return self._init_weights(layer, bits)
        layer = BiTATLinear(in_features, out_features, bias=False, weight_quant=to_injector(self.weight_spec(bits)))
        layer._setup(1, in_features, self._new_unit(), **self._settings(in_features))
        return self._init_weights(layer, bits)

    def conv2d(self, in_channels: int, out_channels: int, kernel_size: int, bits: int,
               stride: int = 1, padding: int = 0, groups: int = 1) -> nn.Module:
        if self.second is not None:
            return self._second_conv2d(in_channels, out_channels, kernel_size, bits, stride, padding, groups)
        layer = BiTATConv2d(in_channels, out_channels, kernel_size, stride=stride, padding=padding, groups=groups,
                            bias=False, weight_quant=to_injector(self.weight_spec(bits)))
        n = in_channels // groups * kernel_size * kernel_size
        layer._setup(groups, n, self._new_unit(), **self._settings(n))
        return self._init_weights(layer, bits)

    def _second_conv2d(self, in_channels: int, out_channels: int, kernel_size: int, bits: int,
                       stride: int, padding: int, groups: int) -> nn.Module:
        if bits != 1:
            return super().conv2d(in_channels, out_channels, kernel_size, bits, stride, padding, groups)
        from hwq.quant.bitat_second import SecondDesignConv2d

        layer = SecondDesignConv2d(in_channels, out_channels, kernel_size, stride=stride, padding=padding,
                                   groups=groups, bias=False, weight_quant=to_injector(self.weight_spec(bits)))
        n = in_channels // groups * kernel_size * kernel_size
        layer._setup(groups, n, self._new_unit(), **self._second_settings(n))
        layer._setup_second(self.second)
        return self._init_weights(layer, bits)

    def act(self, bits: int, channels: int) -> nn.Module:
        if self.second is not None:
            return super().act(bits, channels)  # binary from the start: the design quantizes the weights
        if not self.units:
            raise ConfigError("bitat: an activation must follow a weight layer (it switches with that layer)")
        return BiTATAct(QuantIdentity(act_quant=to_injector(self.act_spec(bits))), self.units[-1])


def bitat_layers(model: nn.Module) -> list[_BiTATWeights]:
    """The model's BiTAT weight layers, input side first."""
    return [m for m in model.modules() if isinstance(m, _BiTATWeights)]


def check_deployable(model: nn.Module) -> None:
    """Raise a ConfigError unless every BiTAT layer and activation is binary (a plain W1A1 network)."""
    names = [name for name, m in model.named_modules() if isinstance(m, (_BiTATWeights, BiTATAct))
             and not m.binary]
    if names:
        raise ConfigError(f"bitat: layers still in full precision ({', '.join(names)}); train for more epochs")
