# SPDX-License-Identifier: BSD-3-Clause
"""Per-layer, per-bit-width sensitivities of a quantized model (lower is better), the scores the allocator
(:mod:`hwq.mixed.allocate`) minimises. Both are measured on the model as it trains, at its current bits, with
its weight quantizers' outputs swapped for the duration of the measurement (:func:`hwq.quant.views.quantizer_views`)
and the model in eval mode (no dropout noise, BatchNorm statistics untouched).

- :func:`bit_gradient_sensitivity` (BMPQ): the gradient of the loss with respect to each bit plane of the layer's
  weights written as 8-bit integers, summed over the planes a ``b``-bit layer drops.
- :func:`sharpness_sensitivity` (SAQ's generator): the loss increase when that layer alone is moved, SAM-style,
  along its gradient by as much as ``b``-bit quantization moves it.

>>> scores = bit_gradient_sensitivity(model, batches, F.cross_entropy, (2, 4, 8))   # doctest: +SKIP
>>> scores["features.2"]                                                             # doctest: +SKIP
{2: 0.041, 4: 0.0093, 8: 0.0}
"""

from __future__ import annotations

from typing import Callable, Iterable, Sequence

import torch
from torch import nn

from hwq.models.modes import evaluating
from hwq.quant.views import quantizer_views, quantizers

#: The bits the bit planes are counted from: the widest weight a precision map takes.
TOP_BITS = 8
WEIGHT_PROXY = ".weight_quant"

Batches = Iterable[tuple[torch.Tensor, torch.Tensor]]
LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def weight_layers(model: nn.Module) -> dict[str, nn.Module]:
    """Layer name (a precision map's name, e.g. ``features.2``) -> its weight quantizer proxy."""
    return {name.removesuffix(WEIGHT_PROXY): proxy for name, proxy, role in quantizers(model) if role == "weight"}


def _quantized_weight_gradients(model: nn.Module, batches: Batches, loss_fn: LossFn
                                ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], float]:
    """Per layer, the mean over ``batches`` of ``|dL/dQ(w)|`` (the gradient at the quantized weight the layer
    computes with) and of ``dL/dQ(w)``, and the mean loss. The latent weights' ``.grad`` are left as they were."""
    layers = weight_layers(model)
    by_proxy = {id(proxy): name for name, proxy in layers.items()}
    leaves: dict[str, torch.Tensor] = {}

    def weight_view(proxy, inputs, out):
        value = (out.value if hasattr(out, "value") else out).detach().requires_grad_(True)
        leaves[by_proxy[id(proxy)]] = value
        return value

    magnitude = {name: None for name in layers}
    signed = {name: None for name in layers}
    losses, count = 0.0, 0
    with evaluating(model), quantizer_views(model, weight_view, lambda *args: None):
        for inputs, labels in batches:
            leaves.clear()
            loss = loss_fn(model(inputs), labels)
            grads = torch.autograd.grad(loss, [leaves[name] for name in layers], allow_unused=True)
            for name, grad in zip(layers, grads):
                grad = torch.zeros_like(leaves[name]) if grad is None else grad
                magnitude[name] = grad.abs() if magnitude[name] is None else magnitude[name] + grad.abs()
                signed[name] = grad if signed[name] is None else signed[name] + grad
            losses += float(loss.detach())
            count += 1
    if count == 0:
        raise ValueError("sensitivity: no batches")
    return ({n: g / count for n, g in magnitude.items()}, {n: g / count for n, g in signed.items()}, losses / count)


def _latent_weight(proxy: nn.Module, model: nn.Module) -> torch.Tensor:
    for module in model.modules():
        if getattr(module, "weight_quant", None) is proxy:
            return module.weight.detach()
    raise ValueError("sensitivity: a weight quantizer without its layer")


def dropped_bit_planes(w: torch.Tensor, bits: int, top_bits: int = TOP_BITS) -> tuple[torch.Tensor, float]:
    """``(r, s)``: ``w`` as ``top_bits``-bit sign-magnitude integers ``q = round(w / s)`` (``s = max|w| / (2^(top-1)
    - 1)``), and ``r``, the value of the magnitude bit planes a ``bits``-bit weight drops (the low ``top - bits``
    planes: ``|q| mod 2^(top - bits)``). A plane ``k`` holds ``2^k``; one bit keeps the sign alone.

    >>> dropped_bit_planes(torch.tensor([127.0, -5.0, 64.0]), 4)[0].tolist()
    [15.0, 5.0, 0.0]
    """
    largest = 2 ** (top_bits - 1) - 1
    scale = float(w.abs().max()) / largest or 1.0
    q = torch.round(w / scale).clamp(-largest, largest).abs()
    return torch.remainder(q, 2 ** (top_bits - bits)), scale


def bit_gradient_sensitivity(model: nn.Module, batches: Batches, loss_fn: LossFn, bits: Sequence[int],
                             top_bits: int = TOP_BITS) -> dict[str, dict[int, float]]:
    """BMPQ's layer sensitivity at each candidate ``bits``: ``sum_w sum_{k dropped} |dL/d beta_k(w)| beta_k(w)``.

    The bit gradient of plane ``k`` of weight ``w`` is ``dL/d beta_k = dL/dq * sign(q) * 2^k`` with ``dL/dq =
    s * dL/dQ(w)`` (the gradient at the quantized weight the layer computes with, magnitude averaged over the
    batches); summed over the planes a ``bits``-bit weight drops it is ``s * |dL/dQ(w)| * (|q| mod 2^(top - bits))``:
    the first-order loss change of truncating the layer to ``bits``. 0 at ``top_bits``; never smaller at fewer
    bits."""
    magnitude, _, _ = _quantized_weight_gradients(model, batches, loss_fn)
    layers = weight_layers(model)
    scores: dict[str, dict[int, float]] = {}
    for name, proxy in layers.items():
        w = _latent_weight(proxy, model)
        scores[name] = {}
        for b in bits:
            dropped, scale = dropped_bit_planes(w, b, top_bits)
            scores[name][b] = float((scale * magnitude[name] * dropped).sum())
    return scores


def rounding_error(w: torch.Tensor, bits: int, points: int = 100) -> torch.Tensor:
    """``Q_b(w) - w`` for per-tensor round-to-nearest on the narrow signed ``bits``-bit grid, the scale chosen by the
    least squared error over ``points`` clipping points ``k / points * max|w|`` (one bit: ``sign(w) mean|w|``)."""
    if bits == 1:
        return torch.sign(w) * w.abs().mean() - w
    largest = 2 ** (bits - 1) - 1
    top = float(w.abs().max()) or 1.0
    best = None
    for k in range(1, points + 1):
        scale = k / points * top / largest
        error = torch.round(w / scale).clamp(-largest, largest) * scale - w
        if best is None or float(error.pow(2).sum()) < float(best.pow(2).sum()):
            best = error
    return best


def sharpness_sensitivity(model: nn.Module, batches: Batches, loss_fn: LossFn, bits: Sequence[int]
                          ) -> dict[str, dict[int, float]]:
    """SAQ's sharpness of each layer at each candidate ``bits``: ``L(Q(w) + rho_b g / ||g||) - L(Q(w))`` with that
    layer alone perturbed (SAM's worst-case step, added to the quantized weight as SAQ does), ``g`` the layer's
    gradient at its quantized weight (averaged over the batches) and ``rho_b = ||Q_b(w) - w||`` the size of a
    ``bits``-bit rounding of its weights: flat layers lose little under the noise of fewer bits."""
    batches = list(batches)
    _, gradient, base_loss = _quantized_weight_gradients(model, batches, loss_fn)
    layers = weight_layers(model)
    scores: dict[str, dict[int, float]] = {}
    for name, proxy in layers.items():
        direction = gradient[name] / (gradient[name].norm() + 1e-12)
        w = _latent_weight(proxy, model)
        scores[name] = {}
        for b in bits:
            step = float(rounding_error(w, b).norm()) * direction
            scores[name][b] = _perturbed_loss(model, batches, loss_fn, proxy, step) - base_loss
    return scores


@torch.no_grad()
def _perturbed_loss(model: nn.Module, batches, loss_fn: LossFn, target: nn.Module, step: torch.Tensor) -> float:
    def weight_view(proxy, inputs, out):
        if proxy is not target:
            return None
        return (out.value if hasattr(out, "value") else out) + step

    total = 0.0
    with evaluating(model), quantizer_views(model, weight_view, lambda *args: None):
        for inputs, labels in batches:
            total += float(loss_fn(model(inputs), labels))
    return total / len(batches)
