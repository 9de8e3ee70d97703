# SPDX-License-Identifier: BSD-3-Clause
"""Vertical layering (once-QAT): one set of weights from which every lower bit-width is sliced.

A network trained at ``B`` bits (the run's ``--wbits`` / ``--abits``, the ``uniform`` family) holds integers
``q_B`` and a scale ``s`` per quantizer. Its ``b``-bit member keeps the ``b`` most significant bits of each
integer, rounded: ``q_b = clamp(floor(q_B / 2^k + 1/2))`` with ``k = B - b``, on the grid of step ``s * 2^k``, so
a ``b``-bit model is a function of the ``B``-bit one and no other weights exist (Wu et al., "vertical layered
representation": the lower-precision models are nested in the higher one). An activation of the member is the
member's own quantizer on the run's grid coarsened by ``2^k`` (:func:`member_activation`: activations are not
stored, so nothing is sliced; rounded once, exactly as deployed). The 8-bit input quantizer is left alone.

- :func:`slice_integers`: the slice on integers;
- :func:`layered_view`: inside a ``with`` block, the model computes as its ``(wb, ab)``-bit member (forward hooks
  on the Brevitas quantizers, straight-through gradient to the ``B``-bit latent weights and scales): what the
  ``layered`` objective trains;
- :func:`member_model`: the ``(wb, ab)``-bit member as an ordinary ``uniform`` model at those bits, whose own
  quantizers give exactly the sliced integers and scales (``hwq export RUN --bits b`` exports it).

>>> import torch
>>> slice_integers(torch.tensor([-7., -6., -2., -1., 0., 1., 2., 5., 7.]), top_bits=4, bits=2, signed=True,
...                narrow=True).tolist()
[-1.0, -1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0]
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch
from torch import nn

from hwq.errors import ConfigError
from hwq.quant.views import quantizer_views, quantizers

__all__ = ["integer_range", "slice_integers", "member_activation", "check_members", "layered_view",
           "member_model", "quantizers"]


def integer_range(bits: int, signed: bool, narrow: bool) -> tuple[int, int]:
    """The integers of a ``bits``-bit grid: ``[-(2^(b-1) - narrow), 2^(b-1) - 1]`` signed, ``[0, 2^b - 1]`` not."""
    if not signed:
        return 0, 2 ** bits - 1
    return -(2 ** (bits - 1)) + int(narrow), 2 ** (bits - 1) - 1


def slice_integers(q: torch.Tensor, top_bits: int, bits: int, signed: bool, narrow: bool) -> torch.Tensor:
    """The ``bits``-bit member's integers of the ``top_bits``-bit integers ``q``: ``q / 2^(top - bits)`` rounded
    half up, clamped to the member's range."""
    if not 2 <= bits <= top_bits:
        raise ValueError(f"slice_integers: bits {bits} must be in 2..{top_bits}")
    low, high = integer_range(bits, signed, narrow)
    return torch.floor(q / 2 ** (top_bits - bits) + 0.5).clamp(low, high)


def _sliced(out, bits: int, narrow: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """``(value, integers)`` of a Brevitas QuantTensor ``out`` sliced to ``bits``."""
    top = int(out.bit_width)
    shift = 2 ** (top - bits)
    integers = slice_integers(torch.round(out.value / out.scale), top, bits, bool(out.signed), narrow)
    return integers * out.scale * shift, integers


def member_activation(x: torch.Tensor, step: torch.Tensor, bits: int, signed: bool) -> torch.Tensor:
    """An activation of the ``bits``-bit member: ``x`` rounded on the grid of ``step`` (the run's step times
    ``2^k``) and clamped to the member's range, as the member's own quantizer computes it when deployed; the
    gradient passes to ``x`` inside the range. Slicing the run's activation integers instead would round twice
    (5.6 -> 6 -> 1.5 -> 2, where the deployed member gives 5.6 / 4 -> 1)."""
    low, high = integer_range(bits, signed, narrow=False)  # hwq's uniform activations are full-range
    clipped = torch.minimum(torch.maximum(x, low * step), high * step)
    return clipped + (torch.round(x / step).clamp(low, high) * step - clipped).detach()


def check_members(top: tuple[int, int], members: list[tuple[int, int]], where: str) -> None:
    """Every member is 2..top bits in both (a 1-bit member would be a sign, not a slice)."""
    for wb, ab in members:
        if not (2 <= wb <= top[0] and 2 <= ab <= top[1]):
            raise ConfigError(f"{where}: member W{wb}A{ab}: expected 2..{top[0]} weight and 2..{top[1]} activation "
                              f"bits (the run trains W{top[0]}A{top[1]}; a member is a slice of it)")


@contextlib.contextmanager
def layered_view(model: nn.Module, bits: tuple[int, int]) -> Iterator[None]:
    """Inside the block, ``model`` computes as its ``(weight_bits, act_bits)`` member; gradients flow to the
    trained ``B``-bit parameters straight through the slicing."""
    wbits, abits = bits

    def weight_view(module, inputs, out):
        if not hasattr(out, "scale") or int(out.bit_width) <= wbits:
            return out
        value, _ = _sliced(out, wbits, narrow=True)  # hwq's uniform weights are narrow
        return out.value + (value - out.value).detach()

    def act_view(module, inputs, out):
        if not hasattr(out, "scale") or int(out.bit_width) <= abits:
            return out
        x = inputs[0].value if hasattr(inputs[0], "value") else inputs[0]
        return member_activation(x, out.scale * 2 ** (int(out.bit_width) - abits), abits, bool(out.signed))

    with quantizer_views(model, weight_view, act_view):
        yield


@torch.no_grad()
def member_model(top_model: nn.Module, member: nn.Module, sample: torch.Tensor) -> nn.Module:
    """Make ``member`` (the same model built at the member's bits, ``uniform`` family) compute exactly the slice
    of ``top_model``: its latent weights become the sliced integers times the member's step, and each quantizer's
    scale parameter is set so that its scale is ``s * 2^k``. ``sample`` (a batch of inputs) runs both once to read
    the scales; returns ``member`` in eval mode."""
    member.load_state_dict(top_model.state_dict())
    top_model.eval()
    member.eval()
    top_q = dict((name, (proxy, role)) for name, proxy, role in quantizers(top_model))
    member_q = dict((name, (proxy, role)) for name, proxy, role in quantizers(member))
    if set(top_q) != set(member_q):
        raise ValueError("member_model: the two models have different quantizers")
    outputs: dict[tuple[str, str], object] = {}

    def keep(tag: str, name: str):
        def hook(module, inputs, out):
            outputs[tag, name] = out
        return hook

    def run_both() -> None:
        outputs.clear()
        handles = [proxy.register_forward_hook(keep(tag, name)) for tag, quants in (("top", top_q), ("m", member_q))
                   for name, (proxy, _) in quants.items()]
        try:
            top_model(sample)
            member(sample)
        finally:
            for handle in handles:
                handle.remove()

    # 1. scales: a quantizer's scale is proportional to its parameter (the range it stores), so one pass tells the
    # ratio to apply. Activations first: they do not depend on the weights' values, only on the scale parameters.
    run_both()
    params = dict(member.named_parameters())
    for name, (proxy, role) in member_q.items():
        top_out, out = outputs["top", name], outputs["m", name]
        shift = 2 ** (int(top_out.bit_width) - int(out.bit_width))
        value = params.get(f"{name}.tensor_quant.scaling_impl.value") if role == "weight" else \
            params.get(f"{name}.fused_activation_quant_proxy.tensor_quant.scaling_impl.value")
        if value is None:
            raise ValueError(f"member_model: quantizer {name} has no learned scale (only the uniform family slices)")
        ratio = (top_out.scale * shift) / out.scale
        value.mul_(ratio.reshape(value.shape) if ratio.numel() == value.numel() else ratio.mean())
    # 2. weights: the sliced integers on the member's grid
    run_both()
    for name, (proxy, role) in member_q.items():
        if role != "weight":
            continue
        top_out, out = outputs["top", name], outputs["m", name]
        _, integers = _sliced(top_out, int(out.bit_width), narrow=True)
        layer = member.get_submodule(name.rsplit(".weight_quant", 1)[0])
        layer.weight.copy_((integers * out.scale).reshape(layer.weight.shape))
    return member
