# SPDX-License-Identifier: BSD-3-Clause
"""Which node of the user's QONNX graph a FINN node came from, so that errors name the user's node.

FINN renames every node and tensor as it goes (``Mul_0``, ``Im2Col_0``, ``MultiThreshold_3``) and makes new
nodes out of old ones (a Conv becomes Transpose, Im2Col, MatMul; a GlobalAveragePool becomes GlobalAccPool and
Mul). So before the first step :func:`record_user_nodes` tags every node of the user's graph with itself (name and
op type, in the node's ``doc_string``, which no ONNX runtime, checker or FINN transform reads; a node changed in
place or renamed keeps it), and while the build runs :func:`tracking_user_nodes` gives every node a transformation
creates the tag of the node it replaces (:func:`_inherit`): the old producer of a tensor it now computes, else the
removed consumer of a tensor it reads (a Conv's Im2Col and MatMul read what the Conv read), else the one tagged
node the transformation removed, else its input's producer. :func:`describe` then names both.

>>> model = record_user_nodes(model)                               # doctest: +SKIP
>>> with tracking_user_nodes():                                    # doctest: +SKIP
...     finn_model = model.transform(InferGlobalAccPoolLayer())
>>> describe(finn_model, finn_model.get_nodes_by_op_type("Mul")[0])  # doctest: +SKIP
"'Mul_0' (Mul), made from the user's node 'GlobalAveragePool_0' (GlobalAveragePool)"
"""

from __future__ import annotations

import contextlib
import functools
import json
import re
from typing import Iterator

from qonnx.core.modelwrapper import ModelWrapper

#: The ``doc_string`` prefix of a tag; the rest is ``[name, op_type]`` of the user's node, as JSON.
PREFIX = "hwq user node: "
MADE_FROM = "made from the user's node"


def _tag(node) -> tuple[str, str] | None:
    return _parse_tag(node.doc_string)


@functools.lru_cache(maxsize=None)
def _parse_tag(doc_string: str) -> tuple[str, str] | None:
    # cached: every transformation of a build reads every node's tag (millions of json.loads on ReActNet)
    if doc_string.startswith(PREFIX):
        name, op_type = json.loads(doc_string[len(PREFIX):])
        return name, op_type
    return None


def _set_tag(node, tag: tuple[str, str]) -> None:
    node.doc_string = PREFIX + json.dumps(list(tag))


def record_user_nodes(model: ModelWrapper) -> ModelWrapper:
    """Tag every node with itself (in place; returns ``model``); a node already tagged (a resumed build's
    checkpoint) keeps its tag."""
    for node in model.graph.node:
        if _tag(node) is None:
            _set_tag(node, (node.name, node.op_type))
    return model


def user_node(node) -> tuple[str, str] | None:
    """``(name, op_type)`` of the user's node ``node`` was made from; None for an untagged node."""
    return _tag(node)


def _snapshot(model: ModelWrapper) -> dict:
    producers, consumers, tags = {}, {}, []
    for node in model.graph.node:
        tag = _tag(node)
        tags.append(tag)
        for out in node.output:
            producers[out] = tag
        for i in node.input:
            consumers.setdefault(i, []).append(tag)
    return {"producers": producers, "consumers": consumers, "tags": tags}


def _inherit(before: dict, model: ModelWrapper) -> None:
    """Tag the nodes of ``model`` that a transformation made (untagged) from what the graph was ``before`` it."""
    nodes = list(model.graph.node)
    if all(_tag(n) is not None for n in nodes) or None in before["tags"]:
        # nothing new; or a transformation run inside another one that made nodes (qonnx's cleanup after an
        # apply): those are the outer one's to tag, from what the graph was before it
        return
    now_tags = [_tag(n) for n in nodes]
    removed = [t for t in set(t for t in before["tags"] if t) if t not in now_tags]
    now_consumers: dict[str, list] = {}
    for node, tag in zip(nodes, now_tags):
        for i in node.input:
            now_consumers.setdefault(i, []).append(tag)
    producers = {o: n for n in nodes for o in n.output}
    for node in nodes:
        if _tag(node) is not None:
            continue
        tag = next((before["producers"][o] for o in node.output if before["producers"].get(o)), None)
        if tag is None:  # a consumer of one of its inputs that the transformation removed
            tag = next((t for i in node.input for t in before["consumers"].get(i, ())
                        if t and t not in now_consumers.get(i, ())), None)
        if tag is None and len(removed) == 1:
            tag = removed[0]
        if tag is None:
            tag = next((_tag(producers[i]) for i in node.input if i in producers and _tag(producers[i])), None)
        if tag is not None:
            _set_tag(node, tag)


@contextlib.contextmanager
def tracking_user_nodes() -> Iterator[None]:
    """While it is entered, every ``ModelWrapper.transform`` (qonnx's, FINN's and hwq's transformations, also the
    ones nested in another) tags the nodes it makes (:func:`_inherit`). ``ModelWrapper.transform`` is restored on
    exit, also on error."""
    original = ModelWrapper.transform

    def transform(self, *args, **kwargs):
        before = _snapshot(self)
        result = original(self, *args, **kwargs)
        _inherit(before, result)
        return result

    transform.__doc__ = original.__doc__
    ModelWrapper.transform = transform
    try:
        yield
    finally:
        ModelWrapper.transform = original


def describe(model: ModelWrapper, node) -> str:
    """``'name' (op)`` of ``node``, and the user's node it was made from when that is another one."""
    here = f"'{node.name}' ({node.op_type})"
    origin = user_node(node)
    if origin is None or origin == (node.name, node.op_type):
        return here
    return f"{here}, {MADE_FROM} '{origin[0]}' ({origin[1]})"


def name_user_nodes(model: ModelWrapper | None, text: str) -> str:
    """``text`` (an error message) followed by the user's node of each node of ``model`` that it names, where
    that is another node: ``... Mul_0 ... [node 'Mul_0' (Mul) was made from the user's node
    'GlobalAveragePool_0' (GlobalAveragePool)]``; unchanged when it names none of them or already says so."""
    if model is None or MADE_FROM in text:  # already named (e.g. by create_dataflow_partition's check)
        return text
    names = {n.name: n for n in model.graph.node if n.name}
    if not names:
        return text
    pattern = re.compile(r"(?<![\w/.-])(" + "|".join(sorted(map(re.escape, names), key=len, reverse=True))
                         + r")(?![\w/.-])")
    added: dict[str, tuple[str, str]] = {}
    for match in pattern.finditer(text):
        name = match.group(1)
        origin = user_node(names[name])
        if origin is not None and origin != (name, names[name].op_type) and name not in added:
            added[name] = origin
    if not added:
        return text
    notes = "; ".join(f"node '{n}' ({names[n].op_type}) was {MADE_FROM} '{o[0]}' ({o[1]})"
                      for n, o in added.items())
    return f"{text} [{notes}]"
