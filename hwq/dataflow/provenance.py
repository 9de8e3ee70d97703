# SPDX-License-Identifier: BSD-3-Clause
"""Which node of the user's QONNX graph a FINN node came from, so that errors name the user's node.

FINN renames every node and tensor as it goes (``Mul_0``, ``Im2Col_0``, ``MultiThreshold_3``) and makes new
nodes out of old ones (a Conv becomes Transpose, Im2Col, MatMul; a GlobalAveragePool becomes GlobalAccPool and
Mul). Tensor annotations survive that: qonnx's ``rename_tensor`` renames a tensor's ``quantization_annotation``
with it (that is where FINN keeps each tensor's datatype). So before the first step, :func:`record_user_nodes`
writes into each tensor's annotation the user's node that computes it (key :data:`KEY`) and the user's nodes that
read it (:data:`READERS`); :func:`user_nodes` maps a later node back (its outputs' producer, else the readers of
the nearest recorded tensor before it, else the producer of the nearest one after it). Annotations change nothing a graph computes.

>>> model = record_user_nodes(model)                               # doctest: +SKIP
>>> describe(finn_model, finn_model.get_node_from_name("Mul_0"))   # doctest: +SKIP
"'Mul_0' (Mul), made from the user's node 'GlobalAveragePool_0' (GlobalAveragePool)"
"""

from __future__ import annotations

import json
import re
from collections import deque
from typing import Iterable

from qonnx.core.modelwrapper import ModelWrapper

#: The tensor-annotation key holding ``[[name, op_type]]`` of the user's node that computes the tensor.
KEY = "hwq_user_node"
#: The key holding ``[[name, op_type], ...]`` of the user's nodes that read the tensor.
READERS = "hwq_user_readers"
MADE_FROM = "made from"


def _annotation(model: ModelWrapper, tensor: str):
    for qa in model.graph.quantization_annotation:
        if qa.tensor_name == tensor:
            return qa
    return None


def _recorded(model: ModelWrapper, tensor: str, key: str = KEY) -> list[tuple[str, str]]:
    """The user's nodes recorded on ``tensor`` under ``key``: its producer (``KEY``) or its readers (``READERS``)."""
    qa = _annotation(model, tensor)
    for entry in qa.quant_parameter_tensor_names if qa is not None else ():
        if entry.key == key:
            return [tuple(pair) for pair in json.loads(entry.value)]
    return []


def record_user_nodes(model: ModelWrapper) -> ModelWrapper:
    """Annotate every node's output tensors with that node, and every tensor with the nodes that read it (in
    place; returns ``model``). A tensor already annotated keeps its annotation, so recording twice (a resumed
    build) changes nothing."""
    readers: dict[str, list] = {}
    for node in model.graph.node:
        for i in node.input:
            readers.setdefault(i, []).append([node.name, node.op_type])
    for node in model.graph.node:
        for out in node.output:
            if out:
                _record(model, out, KEY, [[node.name, node.op_type]])
    for tensor, nodes in readers.items():
        if tensor and model.get_initializer(tensor) is None:
            _record(model, tensor, READERS, nodes)
    return model


def _record(model: ModelWrapper, tensor: str, key: str, nodes: list) -> None:
    if _recorded(model, tensor, key):
        return
    qa = _annotation(model, tensor)
    if qa is None:
        qa = model.graph.quantization_annotation.add(tensor_name=tensor)  # add(): append() would store a copy
    qa.quant_parameter_tensor_names.add(key=key, value=json.dumps(nodes))


def _walk(start: Iterable[str], step) -> Iterable[str]:
    seen, queue = set(start), deque(start)
    while queue:
        tensor = queue.popleft()
        yield tensor
        for nxt in step(tensor):
            if nxt not in seen:
                seen.add(nxt)
                queue.append(nxt)


def user_nodes(model: ModelWrapper, node) -> list[tuple[str, str]]:
    """``(name, op_type)`` of the user's node(s) that ``node`` was made from; empty when the graph carries no
    annotations (it was not recorded).

    In this order: the user's node that computes one of ``node``'s outputs; else the user's node that reads the
    nearest recorded tensor before ``node`` (a Conv's Im2Col and MatMul read what the Conv read; several where a
    fork fed several user nodes); else the user's node computing the nearest recorded tensor after it."""
    def upstream(tensor: str) -> list[str]:
        producer = model.find_producer(tensor)
        return [] if producer is None else [i for i in producer.input if model.get_initializer(i) is None]

    def downstream(tensor: str) -> list[str]:
        return [o for c in model.find_consumers(tensor) or [] for o in c.output]

    for out in node.output:
        if _recorded(model, out):
            return _recorded(model, out)
    for tensor in _walk([i for i in node.input if i and model.get_initializer(i) is None], upstream):
        if _recorded(model, tensor, READERS):
            return _recorded(model, tensor, READERS)
    for tensor in _walk(list(node.output), downstream):
        if _recorded(model, tensor):
            return _recorded(model, tensor)
    return []


def describe(model: ModelWrapper, node) -> str:
    """``'name' (op)`` of ``node``, and the user's node it was made from when that is another one."""
    here = f"'{node.name}' ({node.op_type})"
    origins = user_nodes(model, node)
    if not origins or origins == [(node.name, node.op_type)]:
        return here
    return f"{here}, {_made_from(origins)}"


def _made_from(origins: list[tuple[str, str]]) -> str:
    named = ", ".join(f"'{name}' ({op})" for name, op in origins)
    return f"{MADE_FROM} the user's node {named}" if len(origins) == 1 else \
        f"{MADE_FROM} one of the user's nodes {named}"


def name_user_nodes(model: ModelWrapper | None, text: str) -> str:
    """``text`` (an error message) followed by the user's node of each node of ``model`` that it names, where
    that is another node: ``... Mul_0 ... [node 'Mul_0' (Mul) was made from the user's node
    'GlobalAveragePool_0' (GlobalAveragePool)]``; unchanged when it names none of them."""
    if model is None or f"{MADE_FROM} the user's" in text or f"{MADE_FROM} one of the user's" in text:
        # already named (e.g. by create_dataflow_partition's check)
        return text
    names = {n.name: n for n in model.graph.node if n.name}
    if not names:
        return text
    pattern = re.compile(r"(?<![\w/.-])(" + "|".join(sorted(map(re.escape, names), key=len, reverse=True))
                         + r")(?![\w/.-])")
    added = {}
    for match in pattern.finditer(text):
        name = match.group(1)
        origins = user_nodes(model, names[name])
        if origins and origins != [(name, names[name].op_type)] and name not in added:
            added[name] = origins
    if not added:
        return text
    notes = "; ".join(f"node '{n}' ({names[n].op_type}) was {_made_from(o)}" for n, o in added.items())
    return f"{text} [{notes}]"
