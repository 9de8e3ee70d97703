# SPDX-License-Identifier: BSD-3-Clause
"""Madam, the multiplicative weight update, optionally on a logarithmic number system (LNS-Madam).

Madam (Bernstein et al. 2020; reference code ``jxbz/madam``, ``pytorch/optim/madam.py``) updates a weight by a
factor: ``w <- w * exp(-lr * sign(w) * g*)``, where ``g* = g / sqrt(v)`` is the gradient over the root of its
bias-corrected running second moment (``v <- 0.999 v + 0.001 g^2``), clamped to ``[-g_bound, g_bound]``. A factor
never changes a sign, so a weight never crosses zero. ``|w|`` is kept at most ``top = 3 * rms(w)`` of the tensor's
first value (the reference's ``p_scale = 3``).

LNS-Madam (Zhao et al. 2022) keeps the weights themselves in a logarithmic number system, with no
high-precision copy: ``w = sign * top * 2^(-k / gamma)``, ``k`` an integer in ``[0, 2^(bits-1) - 1]`` (one sign bit,
``bits - 1`` bits of exponent, base ``2^(1/gamma)``). Madam's update is additive in ``log2|w|``, so it becomes an
integer step of the exponent: ``k <- clamp(round(k + gamma * lr * sign(w) * g* / ln 2))``. The first step puts
each weight on the grid (the nearest exponent in log space).
"""

from __future__ import annotations

import math
from typing import Any

import torch

#: Madam's defaults in its reference code.
G_BOUND = 10.0
P_SCALE = 3.0
BETA2 = 0.999


def lns_levels(bits: int) -> int:
    """The largest exponent ``k`` of a ``bits``-bit LNS number (one bit is the sign)."""
    return 2 ** (bits - 1) - 1


def lns_value(sign: torch.Tensor, exponent: torch.Tensor, top: float, gamma: int) -> torch.Tensor:
    """``sign * top * 2^(-exponent / gamma)``: the weight an LNS code stands for."""
    return sign * top * torch.exp2(-exponent.to(torch.float32) / gamma)


def lns_exponent(weight: torch.Tensor, top: float, gamma: int, bits: int) -> torch.Tensor:
    """The nearest exponent (in log space) of each weight's magnitude, clamped to the grid."""
    magnitude = weight.abs().clamp_min(torch.finfo(torch.float32).tiny)
    return torch.round(-gamma * torch.log2(magnitude / top)).clamp_(0, lns_levels(bits))


class Madam(torch.optim.Optimizer):
    """Madam on every parameter of its groups; with ``lns_bits`` set, the weights stay on the LNS grid."""

    def __init__(self, params, lr: float, lns_bits: int | None = None, lns_gamma: int = 8,
                 g_bound: float = G_BOUND) -> None:
        super().__init__(params, dict(lr=lr, lns_bits=lns_bits, lns_gamma=lns_gamma, g_bound=g_bound))

    @torch.no_grad()
    def step(self, closure=None):  # noqa: D102 (torch's signature)
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    self._update(p, group)
        return None

    def _update(self, p: torch.nn.Parameter, group: dict[str, Any]) -> None:
        state = self.state[p]
        bits, gamma = group["lns_bits"], group["lns_gamma"]
        if not state:
            state["step"] = 0
            state["top"] = P_SCALE * float(p.square().mean().sqrt())
            state["exp_avg_sq"] = torch.zeros_like(p)
            # A zero weight would stay zero under a factor: it starts as the smallest positive one.
            state["sign"] = torch.where(p < 0, -1.0, 1.0).to(p.dtype)
            if bits is not None:
                state["exponent"] = lns_exponent(p, state["top"], gamma, bits)
        state["step"] += 1
        state["exp_avg_sq"].mul_(BETA2).add_(p.grad.square(), alpha=1 - BETA2)
        normed = p.grad / (state["exp_avg_sq"] / (1 - BETA2 ** state["step"])).sqrt()
        normed = torch.nan_to_num(normed, nan=0.0).clamp_(-group["g_bound"], group["g_bound"])
        sign = state["sign"]
        if bits is None:
            p.mul_(torch.exp(-group["lr"] * sign * normed)).clamp_(-state["top"], state["top"])
        else:
            step = gamma * group["lr"] * sign * normed / math.log(2)  # in exponent units: k counts down |w|
            state["exponent"] = torch.round(state["exponent"] + step).clamp_(0, lns_levels(bits))
            p.copy_(lns_value(sign, state["exponent"], state["top"], gamma))
