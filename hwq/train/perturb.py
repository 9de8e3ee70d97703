# SPDX-License-Identifier: BSD-3-Clause
"""Weight perturbations for sharpness-aware objectives (:mod:`hwq.train.objectives`: ``sam``, ``hero``).

A perturbation ``eps = rho * g / ||g||`` is applied to *targets*: a parameter (perturbed in place and restored bit
for bit afterwards) or a quantized layer, whose perturbation is added to its quantized weight ``Q(w)`` after the
quantizer (SAQ's choice: the quantizer is not re-run on ``w + eps``, so the perturbation is neither rounded away nor
mismatched with the gradient it came from). ``g`` is the gradient with respect to each target: ``param.grad`` for a
parameter, the gradient of ``Q(w)`` for a quantized layer (read during the first pass with :func:`quantized_weights`).
"""

from __future__ import annotations

import contextlib
from typing import Iterator, Union

import torch
from torch import nn

#: What a perturbation is applied to: a parameter itself, or a quantized layer's ``Q(w)``.
Target = Union[nn.Parameter, nn.Module]


def quantized_layers(model: nn.Module) -> list[nn.Module]:
    """The layers whose weight passes through an enabled Brevitas weight quantizer."""
    return [m for m in model.modules()
            if getattr(m, "weight_quant", None) is not None and getattr(m.weight_quant, "is_quant_enabled", False)]


def weight_quantizer_parameters(model: nn.Module) -> set[nn.Parameter]:
    """Parameters inside a weight quantizer (its learned scale): SAQ does not perturb them (``include_wclip`` off
    in its reference code)."""
    return {p for layer in quantized_layers(model) for p in layer.weight_quant.parameters()}


@contextlib.contextmanager
def quantized_weights(layers: list[nn.Module],
                      perturbation: dict[nn.Module, torch.Tensor] | None = None) -> Iterator[dict]:
    """While active, each layer's quantized weight ``Q(w)`` of the last forward pass is in the yielded dict (with
    its gradient kept by ``retain_grad``); with ``perturbation``, ``Q(w) + eps[layer]`` is what the layer uses."""
    seen: dict[nn.Module, torch.Tensor] = {}
    handles = []

    def tap(layer: nn.Module):
        def hook(module, inputs, out):
            value = out.value
            if value.requires_grad:
                value.retain_grad()
            seen[layer] = value
            if perturbation is not None and layer in perturbation:
                return out._replace(value=value + perturbation[layer])  # a QuantTensor is a named tuple
            return None
        return hook

    try:
        for layer in layers:
            handles.append(layer.weight_quant.register_forward_hook(tap(layer)))
        yield seen
    finally:
        for handle in handles:
            handle.remove()


def ascent_direction(grads: dict[Target, torch.Tensor], rho: float) -> dict[Target, torch.Tensor]:
    """``eps = rho * g / ||g||`` with the norm over every target's gradient together (SAM, SAQ and HERO alike)."""
    norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads.values()]))
    scale = rho / (norm + 1e-12)
    return {target: g * scale for target, g in grads.items()}


@contextlib.contextmanager
def perturbed(eps: dict[Target, torch.Tensor], layers: list[nn.Module]) -> Iterator[None]:
    """Parameters in ``eps`` moved by their perturbation and quantized layers using ``Q(w) + eps``; on exit every
    parameter holds its previous bits again."""
    params = {t: e for t, e in eps.items() if isinstance(t, nn.Parameter)}
    layer_eps = {t: e for t, e in eps.items() if not isinstance(t, nn.Parameter)}
    saved = {p: p.detach().clone() for p in params}
    try:
        with torch.no_grad():
            for p, e in params.items():
                p.add_(e)
        with quantized_weights([m for m in layers if m in layer_eps], layer_eps):
            yield
    finally:
        with torch.no_grad():
            for p, old in saved.items():
                p.copy_(old)
