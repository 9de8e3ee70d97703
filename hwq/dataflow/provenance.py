# SPDX-License-Identifier: BSD-3-Clause
"""Which node of the user's QONNX graph a FINN node came from, so that errors name the user's node.

FINN renames every node and tensor as it goes (``Mul_0``, ``Im2Col_0``, ``MultiThreshold_3``) and makes new
nodes out of old ones (a Conv becomes Transpose, Im2Col, MatMul; a GlobalAveragePool becomes GlobalAccPool and
Mul). Tensor annotations survive that: qonnx's ``rename_tensor`` renames a tensor's ``quantization_annotation``
with it (that is where FINN keeps each tensor's datatype). So before the first step, :func:`record_user_nodes`
writes the user's node (name and op type) into the annotation of each tensor it outputs, under the key
:data:`KEY`; :func:`user_node` maps a later node back: the user node whose output the node computes, i.e. the
first annotated tensor at or after the node's outputs (breadth first through its consumers), else the nearest
annotated tensor before it. Annotations change nothing a graph computes.

>>> model = record_user_nodes(model)                               # doctest: +SKIP
>>> describe(finn_model, finn_model.get_node_from_name("Mul_0"))   # doctest: +SKIP
"'Mul_0' (Mul), made from the user's node 'GlobalAveragePool_0' (GlobalAveragePool)"
"""

from __future__ import annotations

import json
import re
from collections import deque
from typing import Iterable

from onnx import StringStringEntryProto, TensorAnnotation
from qonnx.core.modelwrapper import ModelWrapper

#: The tensor-annotation key holding ``[name, op_type]`` of the user's node that computes the tensor.
KEY = "hwq_user_node"
MADE_FROM = "made from the user's node"


def _annotation(model: ModelWrapper, tensor: str):
    for qa in model.graph.quantization_annotation:
        if qa.tensor_name == tensor:
            return qa
    return None


def _recorded(model: ModelWrapper, tensor: str) -> tuple[str, str] | None:
    qa = _annotation(model, tensor)
    if qa is None:
        return None
    for entry in qa.quant_parameter_tensor_names:
        if entry.key == KEY:
            name, op_type = json.loads(entry.value)
            return name, op_type
    return None


def record_user_nodes(model: ModelWrapper) -> ModelWrapper:
    """Annotate every node's output tensors with that node (in place; returns ``model``). A tensor already
    annotated keeps its annotation, so recording twice (a resumed build) changes nothing."""
    for node in model.graph.node:
        for out in node.output:
            if not out or _recorded(model, out) is not None:
                continue
            qa = _annotation(model, out)
            if qa is None:
                qa = TensorAnnotation(tensor_name=out)
                model.graph.quantization_annotation.append(qa)
            qa.quant_parameter_tensor_names.append(
                StringStringEntryProto(key=KEY, value=json.dumps([node.name, node.op_type])))
    return model


def _walk(start: Iterable[str], step) -> Iterable[str]:
    seen, queue = set(start), deque(start)
    while queue:
        tensor = queue.popleft()
        yield tensor
        for nxt in step(tensor):
            if nxt not in seen:
                seen.add(nxt)
                queue.append(nxt)


def user_node(model: ModelWrapper, node) -> tuple[str, str] | None:
    """``(name, op_type)`` of the user's node that ``node`` computes (see the module docstring); None when the
    graph carries no annotations (it was not recorded)."""
    def downstream(tensor: str) -> list[str]:
        return [o for c in model.find_consumers(tensor) or [] for o in c.output]

    def upstream(tensor: str) -> list[str]:
        producer = model.find_producer(tensor)
        return [] if producer is None else [i for i in producer.input if model.get_initializer(i) is None]

    for tensors, step in ((list(node.output), downstream),
                          ([i for i in node.input if model.get_initializer(i) is None], upstream)):
        for tensor in _walk(tensors, step):
            found = _recorded(model, tensor)
            if found is not None:
                return found
    return None


def describe(model: ModelWrapper, node) -> str:
    """``'name' (op)`` of ``node``, and the user's node it was made from when that is another one."""
    here = f"'{node.name}' ({node.op_type})"
    origin = user_node(model, node)
    if origin is None or origin == (node.name, node.op_type):
        return here
    return f"{here}, {MADE_FROM} '{origin[0]}' ({origin[1]})"


def name_user_nodes(model: ModelWrapper | None, text: str) -> str:
    """``text`` (an error message) followed by the user's node of each node of ``model`` that it names, where
    that is another node: ``... Mul_0 ... [node 'Mul_0' (Mul) was made from the user's node
    'GlobalAveragePool_0' (GlobalAveragePool)]``; unchanged when it names none of them."""
    if model is None or MADE_FROM in text:  # already named (e.g. by create_dataflow_partition's check)
        return text
    names = {n.name: n for n in model.graph.node if n.name}
    if not names:
        return text
    pattern = re.compile(r"(?<![\w/.-])(" + "|".join(sorted(map(re.escape, names), key=len, reverse=True))
                         + r")(?![\w/.-])")
    added = {}
    for match in pattern.finditer(text):
        name = match.group(1)
        origin = user_node(model, names[name])
        if origin is not None and origin != (name, names[name].op_type) and name not in added:
            added[name] = origin
    if not added:
        return text
    notes = "; ".join(f"node '{n}' ({names[n].op_type}) was {MADE_FROM} '{o[0]}' ({o[1]})"
                      for n, o in added.items())
    return f"{text} [{notes}]"
