# SPDX-License-Identifier: BSD-3-Clause
"""BiTAT's second design (``--quant bitat``, ``bitat_design: second``): the schedule of the paper's concept figure.

The binary weight layers are quantized one at a time, input side first, in blocks of ``bitat_block_size``
(:class:`hwq.train.progressive.LayerPhases`); activations are binary from the start (the two-step recipe's first
step: binary activations, real weights). During its phase, a layer's forward weight moves from its real weights
``W`` to its binary weights ``Q = scale * sign(W)`` along the directions of an orthonormal basis ``V`` of its
input, least important last::

    W_t = Q + (W - Q) V diag(g_t) V^T,    g_t = (1 - t) ** s      (t: 0 -> 1 over the phase)

so the transformation acts in the forward pass and the task loss trains ``V`` (the PCA of the layer's input in
the partly quantized network, rotated by a trained Cayley transform, so it stays orthonormal) and ``S`` (the
importance vector, initialised from the eigenvalues). At the phase's start the signs are chosen under the
importance-weighted metric ``V diag(S) V^T`` (:func:`hwq.quant.bitat_transform.importance_aware_codes`); at its end
``W_t = Q``, the layer is binary and frozen, and the layers above keep training. While a block is processed, the
output of each of its layers quantized so far is kept close to the teacher's layer of the same name (the block
objective, "aggregation"). The deployed network is plain binary. Decisions: ``docs/bitat.md``, "Second design".
"""

from __future__ import annotations

import torch
from torch import nn

from hwq.errors import ConfigError
from hwq.quant import bitat_transform as T
from hwq.quant.bitat import BiTATConv2d, BiTATLinear, _BiTATWeights
from hwq.quant.teacher_layers import matching_teacher_layer, representation_distance


class SecondDesignSchedule:
    """What every second-design layer of one model shares: the phases, the number of units and the block size."""

    def __init__(self, phases, block_size: int, freeze: bool, aggregate: bool | None, aggregate_weight: float) -> None:
        self.phases, self.block_size = phases, block_size
        self.freeze, self.aggregate, self.aggregate_weight = freeze, aggregate, aggregate_weight
        self.units: list[_SecondDesignWeights] = []


class _SecondDesignWeights(_BiTATWeights):
    """A first-design BiTAT layer (its correlation, basis, importance and codes) driven by the phase schedule."""

    def _setup_second(self, schedule: SecondDesignSchedule) -> None:
        self.schedule, self.unit_index = schedule, len(schedule.units)
        schedule.units.append(self)
        # t: progress through this layer's phase (0 before, 1 = binary); frozen: weights no longer trained.
        self._register_flags(t=0.0, frozen=False)
        self._teacher_output: torch.Tensor | None = None
        self._own_output: torch.Tensor | None = None
        self._progress = 0.0

    # --- schedule --------------------------------------------------------------------------------------------
    def _n_units(self) -> int:
        return len(self.schedule.units)

    def hwq_on_epoch_start(self, epoch: int, epochs: int) -> None:
        return None  # the second design moves per step (hwq_on_step)

    @torch.no_grad()
    def hwq_on_step(self, progress: float) -> None:
        """Set this layer's phase progress for the step that ends at training ``progress`` (0..1)."""
        self._progress = progress
        if self.binary:
            return  # never back (a resumed run with more epochs moves the phases, not what is already binary)
        t = self.schedule.phases.t(self.unit_index, self._n_units(), progress)
        self.set_flag("t", t)
        if t >= 1.0 and not self.binary:
            self.set_flag("binary", True)
            self.set_flag("frozen", self.schedule.freeze)

    def _observing(self) -> bool:
        """Collect ``E[x x^T]`` from the start of the previous layer's phase (one phase length before one's own
        for the first layer), so the PCA at the phase's start sees the partly quantized network."""
        u, n = self.unit_index, self._n_units()
        start, end = self.schedule.phases.phase(u, n)
        since = self.schedule.phases.phase(u - 1, n)[0] if u > 0 else start - (end - start)
        return self._progress >= since

    @torch.no_grad()
    def _start_phase(self) -> None:
        """PCA of the inputs seen so far -> ``V`` (rotation 0) and ``S``; then the importance-aware codes."""
        self._init_transform()
        if self.transform == "cayley":
            self.rotation_raw.zero_()

    def aggregating(self) -> bool:
        """In the block objective now: the phase started and the block is not finished."""
        if not (self.schedule.aggregate and self.schedule.aggregate_weight and self.t > 0.0):
            return False
        return self._progress < self.schedule.phases.block_end(self.unit_index, self._n_units(),
                                                               self.schedule.block_size)

    # --- teacher (the block objective) ---------------------------------------------------------------------
    def hwq_attach_teacher(self, name: str, teacher: nn.Module | None) -> None:
        """Record the output of the teacher's layer called ``name`` at each of its forward passes. An unset
        ``aggregate`` (a model built outside a run) turns on exactly when there is a teacher."""
        if self.schedule.aggregate is None:
            self.schedule.aggregate = teacher is not None
        if not self.schedule.aggregate:
            return
        if teacher is None:
            raise ConfigError("model_options.bitat_aggregate: the block objective compares each layer's output with "
                              "the teacher's layer of the same name; give --teacher RUN (a full-precision run of the "
                              "same model) or set bitat_aggregate=false")
        layer = matching_teacher_layer(teacher, name, self.weight, "bitat_aggregate", "set bitat_aggregate=false")

        def keep_output(module, inputs, output, owner=self):
            owner._teacher_output = output.detach() if owner.aggregating() else None

        layer.register_forward_hook(keep_output)

    def hwq_extra_loss(self) -> torch.Tensor:
        """``aggregate_weight *`` the distance between this layer's output and the teacher's, each normalised per
        image (scale-free: a binary layer's scale differs from the real one's and a normalisation follows)."""
        own, teacher = self._own_output, self._teacher_output
        self._own_output = self._teacher_output = None
        if not (self.training and own is not None and teacher is not None):
            return self.weight.new_zeros(())
        return self.schedule.aggregate_weight * representation_distance(own, teacher)

    def hwq_after_step(self) -> None:
        """With ``bitat_codes_every = k > 0``, re-choose the codes every k steps of the layer's phase."""
        if 0.0 < self.t < 1.0:
            self.set_flag("steps_binary", self.steps_binary + 1)
            if self.codes == "importance" and self.codes_every and self.steps_binary % self.codes_every == 0:
                self.apply_importance_codes()

    # --- forward ---------------------------------------------------------------------------------------------
    def phase_weight(self) -> torch.Tensor:
        """``W_t = Q + (W - Q) V diag((1 - t) ** s) V^T`` (straight-through ``Q``)."""
        q = self.quant_weight().value
        residual = self.grouped_weight(self.weight - q)
        keep = (1.0 - self.t) ** self.importance()
        residual = T.apply_metric(residual, self._metric_basis(), keep)
        return q + residual.reshape(self.weight.shape)

    def _bitat_forward(self, x: torch.Tensor, plain_forward) -> torch.Tensor:
        if self.t == 0.0:
            if self.training and self._observing():
                self.observe(x)
            out = self._run(x, self.weight)
        else:
            if not self.transform_ready:  # the first step of the phase
                if self.training:
                    self.observe(x)
                self._start_phase()
            if self.t >= 1.0:
                if not self.training:
                    return plain_forward(x)  # the exact Brevitas path that export traces
                q = self.quant_weight().value
                out = self._run(x, q.detach() if self.frozen else q)
            else:
                out = self._run(x, self.phase_weight())
        if self.training and self.aggregating():
            self._own_output = out
        return out


class SecondDesignLinear(_SecondDesignWeights, BiTATLinear):
    """A binary ``QuantLinear`` quantized in its phase of the second design."""


class SecondDesignConv2d(_SecondDesignWeights, BiTATConv2d):
    """A binary ``QuantConv2d`` quantized in its phase of the second design."""

