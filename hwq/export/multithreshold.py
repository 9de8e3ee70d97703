# SPDX-License-Identifier: BSD-3-Clause
"""Export threshold activations (N2UQ's, LQ-Nets') as QONNX ``MultiThreshold`` nodes, exactly.

An N2UQ activation *is* a multi-threshold function (``step * #{k : x >= t_k}``), so it is exported as one:
a ``MultiThreshold`` node (domain ``qonnx.custom_op.general``, thresholds ``(P, n)`` as an initializer,
``out_dtype`` ``UINTb``) followed by a ``Mul`` by the output step. That is the very pattern FINN's
``ConvertQONNXtoFINN`` makes from a uniform activation, so streamlining treats both alike.

How: while :func:`multithreshold_export` is active, every threshold activation in the model (:func:`threshold_form`:
N2UQ's, LQ-Nets') is swapped for a :class:`MultiThresholdAct` holding its thresholds as float32 buffers (computed
once, by the same function the PyTorch forward uses), whose autograd ``symbolic`` writes the two nodes. The swap is
undone on exit. An LQ-Nets activation's thresholds may repeat (non-uniform levels on an integer grid), so its count
jumps by several steps at one input.

>>> from hwq.models import ModelSpec, build_model
>>> model = build_model(ModelSpec("tfc", 2, 2, quant="n2uq", image_shape=(1, 8, 8))).eval()
>>> with multithreshold_export(model) as swapped:
...     len(swapped)
3
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator

import numpy as np
import torch
from torch import nn

from hwq.quant.n2uq import N2UQAct, multithreshold

DOMAIN = "qonnx.custom_op.general"


def out_dtype(bits: int) -> str:
    """The QONNX datatype of the threshold count: ``UINTb``, and ``UINT2`` at 1 bit (the values stay 0/1).

    Not ``BINARY``, FINN's name for 0/1: a threshold activation's count feeds a layer with multi-level or bipolar
    weights, and finn-plus 1.6.1's MVAU code generation refuses a 0/1 input outside XNOR mode ("True binary
    (non-bipolar) inputs not yet supported"): an N2UQ W1A1 build failed at ``hw_codegen`` until this change."""
    return f"UINT{max(bits, 2)}"


class _MultiThresholdFn(torch.autograd.Function):
    """``step * multithreshold(x, thresholds)``; exported as ``MultiThreshold`` then ``Mul``."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, thresholds: torch.Tensor, step: torch.Tensor, dtype: str) -> torch.Tensor:
        return multithreshold(x, thresholds) * step

    @staticmethod
    def symbolic(g, x, thresholds, step, dtype: str):
        count = g.op(f"{DOMAIN}::MultiThreshold", x, thresholds, out_dtype_s=dtype)
        return g.op("Mul", count, step)


def threshold_form(module: nn.Module) -> tuple[torch.Tensor, float, int] | None:
    """``(thresholds (P, n), step, count bits)`` of an activation that is a multi-threshold function, else None.

    N2UQ activations are one; any other module says so with ``hwq_threshold_form()`` (LQ-Nets' ``LQAct``, whose
    thresholds may repeat so that the count jumps by several steps at once).
    """
    if isinstance(module, N2UQAct):
        return module.thresholds(), module.step, module.bits
    form = getattr(module, "hwq_threshold_form", None)
    return form() if callable(form) else None


class MultiThresholdAct(nn.Module):
    """A frozen threshold activation: thresholds and step as buffers (they become the graph's initializers)."""

    def __init__(self, act: nn.Module) -> None:
        super().__init__()
        thresholds, step, bits = threshold_form(act)
        with torch.no_grad():
            self.register_buffer("thresholds", thresholds.detach().float().cpu().clone())
        self.register_buffer("step", torch.tensor(step, dtype=torch.float32))
        self.dtype_name = out_dtype(bits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _MultiThresholdFn.apply(x, self.thresholds, self.step, self.dtype_name)


def needs_multithreshold(model: nn.Module) -> bool:
    """Whether ``model`` holds an activation that exports as MultiThreshold."""
    return any(threshold_form(module) is not None for module in model.modules())


@contextlib.contextmanager
def multithreshold_export(model: nn.Module) -> Iterator[dict[str, MultiThresholdAct]]:
    """Swap each threshold activation for a :class:`MultiThresholdAct` for the duration; yields ``{module name:
    stand-in}``."""
    swapped: dict[str, tuple[nn.Module, str, nn.Module, MultiThresholdAct]] = {}
    for name, module in list(model.named_modules()):  # a copy: the loop body changes the module tree
        if threshold_form(module) is not None:
            parent_name, _, child = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            swapped[name] = (parent, child, module, MultiThresholdAct(module))
    try:
        for parent, child, _, frozen in swapped.values():
            setattr(parent, child, frozen)
        yield {name: entry[3] for name, entry in swapped.items()}
    finally:
        for parent, child, original, _ in swapped.values():
            setattr(parent, child, original)


def multithreshold_nodes(model_wrapper) -> list[dict[str, Any]]:
    """Analysis: each MultiThreshold node of a QONNX graph with its thresholds' shape, dtype and order check.

    >>> [n["out_dtype"] for n in multithreshold_nodes(wrapper)]  # doctest: +SKIP
    ['UINT2', 'UINT2', 'UINT2']
    """
    from qonnx.custom_op.registry import getCustomOp

    found = []
    for node in model_wrapper.graph.node:
        if node.op_type != "MultiThreshold":
            continue
        thresholds = model_wrapper.get_initializer(node.input[1])
        found.append({
            "name": node.name, "domain": node.domain, "out_dtype": getCustomOp(node).get_nodeattr("out_dtype"),
            "thresholds_shape": None if thresholds is None else list(thresholds.shape),
            "sorted": None if thresholds is None else bool(np.all(np.diff(thresholds, axis=1) >= 0)),
        })
    return found
