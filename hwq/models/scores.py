# SPDX-License-Identifier: BSD-3-Clause
"""A PyTorch model's class scores in the integer domain, for the class rule of :mod:`hwq.classes`.

Every hwq model ends ``activation quantizer -> (dropout, flatten) -> classifier -> TensorNorm``. The classifier's
integer scores are ``a_int @ w_int^T``: its input divided by the activation quantizer's scale, its weights divided
by their (single) scale. They are recovered from one forward pass with hooks, and trusted only when they
reproduce the classifier's float output to within half an integer step (so a BiTAT classifier that is not yet
binary, or an input behind an average pool, falls back to the float logits). A negative TensorNorm scale turns
the ranking around, so the scores are oriented by its sign.

>>> scores = model_scores(model.eval(), images)                  # doctest: +SKIP
>>> scores.source, scores.classes()[:3]                          # doctest: +SKIP
('integer classifier accumulators', array([7, 2, 1]))
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from hwq.classes import Scores
from hwq.models.tensor_norm import TensorNorm

#: The float output may differ from ``scale * integer`` by float rounding; half a step still names one integer.
HALF_STEP = 0.5


def output_scale(module: nn.Module) -> float | None:
    """The step of the integer grid a quantizer module outputs on, or None for a module that is not one."""
    act_quant = getattr(module, "act_quant", None)          # Brevitas QuantIdentity
    if act_quant is not None and hasattr(act_quant, "scale"):
        scale = act_quant.scale()
        return float(scale) if scale is not None and scale.numel() == 1 else None
    step = getattr(module, "step", None)                    # N2UQ: levels 0..2^b-1 times the step
    if isinstance(step, float):
        return step
    inner = getattr(module, "quant", None)                   # BiTAT: a Brevitas activation once binary
    if isinstance(inner, nn.Module) and getattr(module, "binary", False):
        return output_scale(inner)
    return None


class _Recorder:
    """Forward hooks on every module of a model: in call order, each module with its first input and output.

    Only the classifier (``nn.Linear``) and ``TensorNorm`` calls keep their tensors; every other call keeps a
    ``(data_ptr, numel)`` fingerprint, all the search for the classifier's input quantizer compares. Keeping every
    module's output alive held all activations of the batch at once: about 20 GB for the CIFAR-10 ``reactnet``
    (width 0.25) on a 1000-image evaluation batch. A fingerprint of a freed tensor may name storage reused later,
    but the quantizer that produced the classifier's input comes after any such earlier call, and the search walks
    from the classifier backwards."""

    def __init__(self, model: nn.Module) -> None:
        self.calls: list[tuple[nn.Module, Any, Any]] = []
        self._handles = [m.register_forward_hook(self._hook) for m in model.modules()]

    def _hook(self, module, args, output) -> None:
        output = _plain(output)
        if isinstance(output, torch.Tensor):
            first = _plain(args[0]) if args else None
            first = first if isinstance(first, torch.Tensor) else None
            if not isinstance(module, (nn.Linear, TensorNorm)):
                first, output = _fingerprint(first), _fingerprint(output)
            self.calls.append((module, first, output))

    def close(self) -> None:
        for handle in self._handles:
            handle.remove()


def _plain(value: Any) -> Any:
    """A Brevitas QuantTensor's values (the adder family's activations carry their scale), else ``value``."""
    inner = getattr(value, "value", None)
    return inner if not isinstance(value, torch.Tensor) and isinstance(inner, torch.Tensor) else value


def _fingerprint(t: torch.Tensor | None) -> tuple[int, int] | None:
    return None if t is None else (t.data_ptr(), t.numel())


def _same_storage(a, b) -> bool:
    """Whether two tensors (or fingerprints of tensors) are views of the same data, of the same size."""
    a, b = (x if x is None or isinstance(x, tuple) else _fingerprint(x) for x in (a, b))
    return a is not None and b is not None and a == b


@torch.no_grad()
def model_scores(model: nn.Module, inputs: torch.Tensor) -> Scores:
    """Run ``model`` on ``inputs`` (model inputs, as the caller's mode leaves it) and return its scores."""
    recorder = _Recorder(model)
    try:
        logits = model(inputs)
    finally:
        recorder.close()
    integer = _integer_scores(recorder.calls, logits)
    return Scores(logits=logits.detach().cpu().numpy(), integer=integer)


def _integer_scores(calls, logits: torch.Tensor) -> np.ndarray | None:
    linear_calls = [i for i, (m, _, _) in enumerate(calls) if isinstance(m, nn.Linear)]
    if not linear_calls:
        return None
    index = linear_calls[-1]
    classifier, x, y = calls[index]
    if x is None or getattr(classifier, "bias", None) is not None or not hasattr(classifier, "quant_weight"):
        return None
    weight = classifier.quant_weight()
    # A plain tensor: quantization off (the two-step recipe's real weights); per-class scales: no common scale.
    if getattr(weight, "scale", None) is None or weight.scale.numel() != 1:
        return None
    w_scale = float(weight.scale)
    w_int = torch.round(weight.value / w_scale)

    a_scale = _input_scale(calls[:index], x)
    if a_scale is None:
        return None
    flat = x.reshape(len(x), -1)
    a_int = torch.round(flat / a_scale)
    if float((a_int * a_scale - flat).abs().max()) > 1e-6 * max(1.0, float(flat.abs().max())):
        return None  # not on the quantizer's grid
    # Exact in float64: integer products and sums far below 2^53.
    dot = a_int.double() @ w_int.double().T
    step = a_scale * w_scale
    if float((y.double() / step - dot).abs().max()) >= HALF_STEP:
        return None  # the float output is not this integer sum (e.g. BiTAT's latent weights before the switch)
    sign = _orientation(calls[index + 1:], y, logits)
    if sign is None:
        return None
    return (sign * dot).round().to(torch.int64).cpu().numpy()


def _input_scale(earlier_calls, x: torch.Tensor) -> float | None:
    """The grid step of the quantizer that produced ``x``, found from the calls before the classifier (latest
    first): pass-throughs (dropout in eval mode, identity) and containers (``nn.Sequential``) hand the same
    storage on; the first other module to have produced it must be a quantizer."""
    for module, arg, out in reversed(earlier_calls):
        if not _same_storage(out, x) or _same_storage(arg, out):
            continue
        scale = output_scale(module)
        if scale is not None or not any(True for _ in module.children()):
            return scale or None
    return None


def _orientation(later_calls, y: torch.Tensor, logits: torch.Tensor) -> int | None:
    """+1 when the logits rank classes as ``y`` does, -1 when reversed, None when that cannot be read off."""
    if _same_storage(y, logits):
        return 1
    for module, arg, out in later_calls:
        if _same_storage(arg, y) and out is logits and isinstance(module, TensorNorm):
            weight = float(module.weight.reshape(-1)[0])
            return None if weight == 0 else (1 if weight > 0 else -1)
    return None
