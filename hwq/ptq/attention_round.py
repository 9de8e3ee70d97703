# SPDX-License-Identifier: BSD-3-Clause
"""Attention Round (Diao et al., arXiv 2207.03088): every weight may land on any value of its grid.

A weight's latent ``v`` (in grid steps, ``w / scale`` at the start) is given a probability for each integer ``q`` of
the grid, ``p(q) = exp(-(v - q)^2 / (2 sigma^2))`` normalised over the grid, and the layer uses the expected weight
``scale * sum_q p(q) q``. The latents are trained with Adam to reconstruct the float layer's output on calibration
inputs while sigma decays geometrically from ``sigma_start`` to ``sigma_end``, so the assignment hardens; each weight
then takes its most probable value, which is the grid value nearest its latent.

>>> import torch
>>> grid = torch.arange(-1.0, 2.0)                     # the 2-bit narrow grid -1, 0, 1
>>> p = gaussian_assignment(torch.tensor([0.2]), grid, sigma=0.5)
>>> [round(x, 3) for x in p[0].tolist()], round(float(p.sum()), 6)
([0.045, 0.734, 0.221], 1.0)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch


def gaussian_assignment(latent: torch.Tensor, grid: torch.Tensor, sigma: float) -> torch.Tensor:
    """The probability of each grid value for each latent: shape ``latent.shape + (len(grid),)``, summing to 1
    over the last axis (a softmax of ``-(v - q)^2 / (2 sigma^2)``, stable for any sigma)."""
    distance = latent.unsqueeze(-1) - grid
    return torch.softmax(-distance.pow(2) / (2.0 * sigma * sigma), dim=-1)


def soft_weight(latent: torch.Tensor, grid: torch.Tensor, sigma: float) -> torch.Tensor:
    """The expected grid value of each latent under :func:`gaussian_assignment` (in grid steps)."""
    return gaussian_assignment(latent, grid, sigma) @ grid


def hard_weight(latent: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """Each latent's most probable grid value (for any sigma: the nearest grid value; ties go to the lower one)."""
    return grid[torch.argmin((latent.unsqueeze(-1) - grid).abs(), dim=-1)]


def sigma_at(step: int, steps: int, sigma_start: float, sigma_end: float) -> float:
    """The geometric decay ``sigma_start * (sigma_end / sigma_start)^(step / (steps - 1))``: both ends are hit."""
    if steps <= 1:
        return sigma_end
    return sigma_start * (sigma_end / sigma_start) ** (step / (steps - 1))


@dataclass(frozen=True)
class RoundingProblem:
    """One layer to round: its float weight, grid, and how its output is computed and compared.

    ``forward(inputs, weight)`` is the layer's operation (``F.linear``, ``F.conv2d`` with its stride ...);
    ``inputs`` are the layer's inputs in the partly quantized network, ``targets`` the float network's outputs of
    the same layer for the same images, and ``channel_weight`` scales each output channel's error (the following
    BatchNorm's ``gamma / sqrt(var + eps)``: an error matters as much as it moves the normalised value).
    """

    weight: torch.Tensor
    scale: float
    grid: torch.Tensor
    forward: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    inputs: torch.Tensor
    targets: torch.Tensor
    channel_weight: torch.Tensor

    def error(self, integers: torch.Tensor, rows: torch.Tensor | slice = slice(None)) -> torch.Tensor:
        """Mean squared weighted output error of the layer with weight ``scale * integers`` (differentiable)."""
        out = self.forward(self.inputs[rows], self.scale * integers)
        shape = (1, -1) + (1,) * (out.dim() - 2)
        return ((out - self.targets[rows]) * self.channel_weight.view(shape)).pow(2).mean()


def nearest_integers(problem: RoundingProblem) -> torch.Tensor:
    """Round-to-nearest on the grid (clipped to its ends)."""
    return hard_weight(problem.weight / problem.scale, problem.grid)


def attention_round_integers(
    problem: RoundingProblem, iterations: int, lr: float, sigma_start: float, sigma_end: float,
    batch_size: int, seed: int,
) -> torch.Tensor:
    """The grid integers Attention Round chooses for ``problem.weight`` (see the module docstring).

    Minibatches of ``batch_size`` rows of the inputs are drawn with ``seed``, so a run is repeatable.
    """
    latent = (problem.weight / problem.scale).clone().requires_grad_(True)
    optimizer = torch.optim.Adam([latent], lr=lr)
    generator = torch.Generator().manual_seed(seed)
    n = len(problem.inputs)
    for step in range(iterations):
        rows = torch.randint(n, (min(batch_size, n),), generator=generator)
        sigma = sigma_at(step, iterations, sigma_start, sigma_end)
        loss = problem.error(soft_weight(latent, problem.grid, sigma), rows)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return hard_weight(latent.detach(), problem.grid)


def mse_weight_scale(weight: torch.Tensor, levels: int, candidates: int = 100) -> float:
    """The per-tensor scale whose round-to-nearest grid ``-levels..levels`` reproduces ``weight`` with the least
    squared error, over clipping points ``k / candidates * max|w|`` (k = 1..candidates). At 2 bits (``levels`` 1)
    the ``max|w|`` scale would round nearly every weight to 0; the search picks a clipping point instead."""
    top = float(weight.abs().max())
    if top == 0.0:
        return 1.0
    best_scale, best_error = top / levels, float("inf")
    for k in range(1, candidates + 1):
        scale = top * k / candidates / levels
        error = float((torch.clamp(torch.round(weight / scale), -levels, levels) * scale - weight).pow(2).sum())
        if error < best_error:
            best_scale, best_error = scale, error
    return best_scale
