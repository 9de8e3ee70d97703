# SPDX-License-Identifier: BSD-3-Clause
"""Adder layers in a QONNX graph (``--method adder``, :mod:`hwq.quant.adder`): found, and refused by FINN.

An adder layer exports as ``Sub(x, W) -> Abs -> ReduceSum -> Neg``, ``W`` a constant, i.e. ``-sum_k |x - w|``.
FINN has no hardware layer for it (its MVAU multiplies), so a FINN build stops before any FINN step with one line
naming the user's nodes. The open backend builds it with its adder MVAU block, without FINN's steps
(:mod:`hwq.rtl.adder_steps`).

>>> adder_layers(ModelWrapper("runs/adder/model.onnx"))[0].nodes     # doctest: +SKIP
('Sub_0', 'Abs_0', 'ReduceSum_0', 'Neg_0')
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from hwq.dataflow.errors import MappingError


@dataclass(frozen=True)
class AdderLayer:
    """One ``Sub -> Abs -> ReduceSum -> Neg`` chain: its node names, input tensor, weight initializer, output."""

    nodes: tuple[str, ...]
    input: str
    weight: str
    output: str


def adder_layers(model) -> list[AdderLayer]:
    """Every adder layer of ``model`` in graph order (a read-only analysis)."""
    found = []
    for sub in model.graph.node:
        if sub.op_type != "Sub" or len(sub.input) != 2 or model.get_initializer(sub.input[1]) is None:
            continue
        chain, tensor = [sub], sub.output[0]
        for op in ("Abs", "ReduceSum", "Neg"):
            consumers = model.find_consumers(tensor) or []
            if len(consumers) != 1 or consumers[0].op_type != op:
                break
            chain.append(consumers[0])
            tensor = consumers[0].output[0]
        if len(chain) == 4:
            found.append(AdderLayer(tuple(n.name for n in chain), sub.input[0], sub.input[1], tensor))
    return found


def refuse_adder_layers(model, source: Path) -> None:
    """A one-line MappingError naming the first adder layer of ``model`` (read from ``source``), if it has one."""
    layers = adder_layers(model)
    if layers:
        more = f" (and {len(layers) - 1} more)" if len(layers) > 1 else ""
        raise MappingError(f"{source}: node '{layers[0].nodes[0]}' ({' -> '.join(layers[0].nodes)}: an adder layer, "
                           f"-sum|x - w|){more}: FINN has no adder MVAU (its MVAU multiplies); build it with "
                           f"--backend open")
