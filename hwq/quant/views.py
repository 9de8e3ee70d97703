# SPDX-License-Identifier: BSD-3-Clause
"""Views of a model: its Brevitas quantizers replaced, for the duration of a ``with`` block, by what forward hooks
compute from each quantizer's input and output, without touching the model (SSQL's precision views,
:mod:`hwq.train.ssql`; once-QAT's members, :mod:`hwq.quant.layered`)."""

from __future__ import annotations

import contextlib
from typing import Callable, Iterator

from brevitas.proxy.parameter_quant import WeightQuantProxyFromInjector
from brevitas.proxy.runtime_quant import ActQuantProxyFromInjector
from torch import nn

Hook = Callable[[nn.Module, tuple, object], object]


def quantizers(model: nn.Module) -> list[tuple[str, nn.Module, str]]:
    """``(name, proxy, role)`` of the model's weight and activation quantizers (role ``weight`` or ``act``); the 8-bit
    input quantizer (``hwq_input_quant``) and the pass-through proxies of Brevitas layers (a ``QuantLinear``'s
    disabled ``input_quant``) are left out."""
    inputs = {id(p) for m in model.modules() if getattr(m, "hwq_input_quant", False) for p in m.modules()}
    found = []
    for name, module in model.named_modules():
        if not getattr(module, "is_quant_enabled", True):
            continue
        if isinstance(module, WeightQuantProxyFromInjector):
            found.append((name, module, "weight"))
        elif isinstance(module, ActQuantProxyFromInjector) and id(module) not in inputs:
            found.append((name, module, "act"))
    return found


@contextlib.contextmanager
def quantizer_views(model: nn.Module, weight_view: Hook, act_view: Hook) -> Iterator[None]:
    """Inside the block, each weight quantizer's output is ``weight_view(proxy, inputs, out)`` and each activation
    quantizer's ``act_view(...)``. A view returns plain tensors, so layers that hand over QuantTensors
    (``return_quant_tensor``, ReActNet's shortcuts) hand over plain ones inside the block; the models take either."""
    handing_over = [m for m in model.modules() if getattr(m, "return_quant_tensor", False)]
    for module in handing_over:
        module.return_quant_tensor = False
    handles = [proxy.register_forward_hook(weight_view if role == "weight" else act_view)
               for _, proxy, role in quantizers(model)]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
        for module in handing_over:
            module.return_quant_tensor = True
