# SPDX-License-Identifier: BSD-3-Clause
"""Calibration pieces: what a module sees on the calibration images, and the Brevitas scales PTQ sets.

The uniform family's weight scale is Brevitas' ``PARAMETER_FROM_STATS`` (initialised from ``max|w|`` at the first
forward pass) and its activation scale a ``PARAMETER`` (initialised from ``max_val``). PTQ sets both directly: the
parameter ``value`` is the scale times a constant of the grid (its largest integer), read back rather than assumed,
and the weight's statistics are switched off (``init_done``) so the scale set is the scale used, and saved.
"""

from __future__ import annotations

from typing import Mapping

import torch
from torch import nn

from hwq.models.modes import evaluating

#: Clipping points tried for an activation scale: k / ACT_CANDIDATES of the largest input, k = 1..ACT_CANDIDATES.
ACT_CANDIDATES = 100


def captured(model: nn.Module, modules: Mapping[str, nn.Module], images: torch.Tensor, what: str,
             batch: int = 1024) -> dict[str, torch.Tensor]:
    """Name -> the ``what`` ("input" or "output") of each of ``modules`` while ``model`` (eval mode) runs ``images``."""
    seen: dict[str, list[torch.Tensor]] = {name: [] for name in modules}

    def hook_for(name: str):
        def hook(module, inputs, output):
            value = inputs[0] if what == "input" else output
            seen[name].append(getattr(value, "value", value).detach())  # a QuantTensor's float value
        return hook

    handles = [module.register_forward_hook(hook_for(name)) for name, module in modules.items()]
    try:
        with evaluating(model):
            for start in range(0, len(images), batch):
                model(images[start:start + batch])
    finally:
        for handle in handles:
            handle.remove()
    return {name: torch.cat(values) for name, values in seen.items()}


def fake_quantize(x: torch.Tensor, scale: float, bits: int, signed: bool) -> torch.Tensor:
    """``scale * clamp(round(x / scale))`` on the full ``bits``-bit grid (signed or unsigned): the activation grid."""
    low, high = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
    return torch.clamp(torch.round(x / scale), low, high) * scale


def calibrate_act_scale(inputs: torch.Tensor, targets: torch.Tensor, bits: int, signed: bool) -> float:
    """The scale whose quantized ``inputs`` are closest (squared error) to ``targets``, the float network's
    activation of the same values (its ReLU or hardtanh), over clipping points up to ``max|inputs|``."""
    top = float(inputs.abs().max()) if signed else float(inputs.clamp(min=0).max())
    if top == 0.0:
        return 1.0
    high = 2 ** (bits - 1) - 1 if signed else 2**bits - 1
    best_scale, best_error = top / high, float("inf")
    for k in range(1, ACT_CANDIDATES + 1):
        scale = top * k / ACT_CANDIDATES / high
        error = float((fake_quantize(inputs, scale, bits, signed) - targets).pow(2).sum())
        if error < best_error:
            best_scale, best_error = scale, error
    return best_scale


def set_act_scale(module: nn.Module, scale: float) -> None:
    """Give a Brevitas ``QuantIdentity`` with a parameter scale the scale ``scale``."""
    impl = module.act_quant.fused_activation_quant_proxy.tensor_quant.scaling_impl
    with torch.no_grad():
        impl.value.fill_(1.0)
        unit = float(module.act_quant.scale())  # the scale of value 1: 1 / the grid's largest integer
        impl.value.fill_(scale / unit)


def set_weight_scale(module: nn.Module, scale: float) -> None:
    """Give a Brevitas weight layer with a ``PARAMETER_FROM_STATS`` scale the scale ``scale``, fixed."""
    impl = module.weight_quant.tensor_quant.scaling_impl
    with torch.no_grad():
        impl.init_done = True
        impl.value.fill_(1.0)
        unit = float(module.quant_weight().scale)
        impl.value.fill_(scale / unit)
