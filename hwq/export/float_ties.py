# SPDX-License-Identifier: BSD-3-Clause
"""When QONNX and PyTorch disagree: is every difference a rounding tie broken by float32 summation order?

PyTorch's convolution kernels and QONNX's NumPy executor add a layer's products in different orders, so the value
an activation quantizer rounds, ``v = x/s + z``, differs between them by float32 noise (measured: up to a few 1e-6
of a step after one CNV layer). Where ``v`` lies within that noise of a rounding boundary the two sides pick
neighbouring levels, and the difference travels down the network: a 4-bit CNV trained on CIFAR-10 showed it in 6
of 20 test images (benchmarks/methods_cifar10_cnv, docs/export.md). The graph is right; the plain comparison of
final outputs cannot tell that from a wrong graph.

:func:`explain_differences` re-runs the QONNX graph on the differing images quantizer by quantizer, feeding each
activation quantizer's consumers PyTorch's quantized output (teacher forcing), so that every layer is compared on
identical inputs. A level that differs is accepted only when QONNX's own ``v`` lies within
:data:`TIE_TOLERANCE` (relative to ``max(1, |v|)``) of the boundary between the two levels; anything else is a
genuine difference, named by PyTorch's quantizer and QONNX's node. With every tie forced to PyTorch's level, the
graph's integer scores must then equal PyTorch's exactly. The export check reports how many values were such ties.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from hwq.classes import Scores
from hwq.export.scores import scores_of
from hwq.models.scores import model_scores
from hwq.quant.views import quantizers

#: How far (relative to ``max(1, |v|)``, in steps) from a rounding boundary a value may be rounded the other way by
#: float32 summation order. Measured differences of ``v`` between the two executors after one layer reach a few
#: 1e-6; 1e-4 leaves margin, while a wrong scale, bias or threshold puts a differing value anywhere in its step.
TIE_TOLERANCE = 1e-4


@dataclass
class TieReport:
    """What :func:`explain_differences` found."""

    explained: bool
    #: Values (over all images and quantizers) rounded to the other neighbouring level at a tie.
    values: int = 0
    images: int = 0
    #: PyTorch quantizer name -> values at a tie there.
    by_quantizer: dict[str, int] = field(default_factory=dict)
    #: Why the differences are not (all) ties; None when they are.
    problem: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"explained": self.explained, "values": self.values, "images": self.images,
                "by_quantizer": self.by_quantizer, "tolerance": TIE_TOLERANCE, "problem": self.problem}


def torch_quantizer_outputs(model: nn.Module, images: torch.Tensor) -> tuple[list[tuple[str, np.ndarray]], Scores]:
    """``(quantizer name, dequantized output)`` of every activation quantizer of ``model`` on ``images``, in the
    order they ran (the order the export traced them in), and the scores of that same forward pass (PyTorch's
    kernels may break a tie differently for another batch size, so the forced graph is held to this pass)."""
    fired: list[tuple[str, np.ndarray]] = []

    def record(name: str):
        def hook(_module, _inputs, out):
            value = out.value if hasattr(out, "value") else out
            fired.append((name, value.detach().cpu().numpy()))
        return hook

    handles = [proxy.register_forward_hook(record(name)) for name, proxy, role in quantizers(model) if role == "act"]
    try:
        with torch.no_grad():
            scores = model_scores(model.eval(), images)
    finally:
        for handle in handles:
            handle.remove()
    return fired, scores


def qonnx_activation_quants(model) -> list:
    """The activation ``Quant``/``BipolarQuant`` nodes of a QONNX graph, in graph order: not on a weight
    (initializer) and not on the graph input (the pixels' input quantizer, which PyTorch's side leaves out too)."""
    graph_in = model.graph.input[0].name
    return [n for n in model.graph.node if n.op_type in ("Quant", "BipolarQuant")
            and model.get_initializer(n.input[0]) is None and n.input[0] != graph_in]


def _rounding(node) -> str:
    for attribute in node.attribute:
        if attribute.name == "rounding_mode":
            return attribute.s.decode()
    return "ROUND"


def _levels(node, ctx: dict, value: np.ndarray) -> np.ndarray:
    """The integer level of ``value`` on ``node``'s grid."""
    if node.op_type == "BipolarQuant":
        return np.sign(value)
    scale, zero = ctx[node.input[1]], ctx[node.input[2]]
    return np.rint(value / scale + zero)


def _at_boundary(node, ctx: dict, q_got: np.ndarray, q_want: np.ndarray) -> np.ndarray:
    """Per value: whether QONNX's input lies within :data:`TIE_TOLERANCE` of the boundary between the two sides'
    levels ``q_got`` and ``q_want`` (for BipolarQuant: of 0)."""
    x = ctx[node.input[0]].astype(np.float64)
    if node.op_type == "BipolarQuant":
        scale = np.abs(ctx[node.input[1]]) if len(node.input) > 1 else 1.0
        v, boundary = x / scale, 0.0
    else:
        scale, zero = ctx[node.input[1]], ctx[node.input[2]]
        v = x / scale + zero
        low, high = np.minimum(q_got, q_want), np.maximum(q_got, q_want)
        mode = _rounding(node)
        boundary = (low + 0.5 if mode == "ROUND" else high if mode == "FLOOR" else low if mode == "CEIL"
                    else np.where(low >= 0, high, low))                                  # ROUND_TO_ZERO
        boundary = np.where(high - low == 1, boundary, np.nan)                           # only neighbours tie
    near = np.abs(v - boundary) <= TIE_TOLERANCE * np.maximum(1.0, np.abs(v))
    return np.broadcast_to(near, x.shape)


def _execute(graph, ctx: dict, first, last) -> dict:
    """The nodes ``first`` .. ``last`` of ``graph`` on the tensors computed so far; the whole context."""
    from qonnx.core.onnx_exec import execute_onnx

    known = {name: value for name, value in ctx.items() if value is not None}
    return execute_onnx(graph, known, return_full_exec_context=True, start_node=first, end_node=last)


def explain_differences(wrapper, model: nn.Module, images: torch.Tensor) -> tuple[TieReport, Scores | None, Scores]:
    """Teacher-forced comparison of the QONNX graph ``wrapper`` with ``model`` on ``images`` (the differing
    ones): a :class:`TieReport`, the forced graph's scores (None when the comparison stopped) and PyTorch's
    scores of the same pass."""
    from qonnx.transformation.change_batchsize import ChangeBatchSize
    from qonnx.transformation.infer_shapes import InferShapes

    fired, reference = torch_quantizer_outputs(model, images)
    graph = wrapper.transform(ChangeBatchSize(len(images))).transform(InferShapes())
    nodes = qonnx_activation_quants(graph)
    if len(fired) != len(nodes):
        return TieReport(False, problem=f"cannot pair quantizers: PyTorch ran {len(fired)} activation quantizers, "
                                        f"the graph has {len(nodes)}"), None, reference
    report = TieReport(True)
    tied_images = np.zeros(len(images), dtype=bool)
    order = list(graph.graph.node)
    ctx: dict[str, np.ndarray] = {graph.graph.input[0].name: images.numpy().astype(np.float32)}
    start = order[0]
    for (name, want), node in zip(fired, nodes):
        ctx = _execute(graph, ctx, start, node)
        got = ctx[node.output[0]]
        if got.shape != want.shape:
            return TieReport(False, problem=f"cannot pair quantizers: {name} gives {want.shape}, graph node "
                                            f"{node.name} {got.shape}"), None, reference
        q_got, q_want = _levels(node, ctx, got), _levels(node, ctx, want)
        differ = q_got != q_want
        if differ.any():
            bad = differ & ~_at_boundary(node, ctx, q_got, q_want)
            if bad.any():
                where = np.argwhere(bad)[0]
                return TieReport(False, problem=(
                    f"{name} (graph node {node.name}) differs away from a rounding boundary at image {where[0]}, "
                    f"element {tuple(int(i) for i in where[1:])}: QONNX {float(got[tuple(where)]):.6g}, "
                    f"PyTorch {float(want[tuple(where)]):.6g}")), None, reference
            report.values += int(differ.sum())
            report.by_quantizer[name] = int(differ.sum())
            tied_images |= differ.reshape(len(images), -1).any(1)
        ctx[node.output[0]] = want.astype(np.float32)                  # PyTorch's level: teacher forcing
        start = order[order.index(node) + 1] if node is not order[-1] else None
    if start is not None:
        ctx = _execute(graph, ctx, start, order[-1])
    report.images = int(tied_images.sum())
    return report, scores_of(graph, ctx, len(images)), reference
