# SPDX-License-Identifier: BSD-3-Clause
"""ONNX files are untrusted input: refuse a graph whose nodes name an unknown domain, before qonnx sees it.

qonnx finds the Python class of a custom node by importing the module its ``domain`` names
(``importlib.import_module(node.domain)`` in ``qonnx.custom_op.registry``), so a node with domain ``this`` prints
the Zen of Python and a domain naming any importable module runs that module's code. Every graph file hwq reads
(the exported model, a build's HW graph) is checked here first: each node's domain, also inside subgraphs and
model-local functions, must be one of :data:`KNOWN_DOMAINS`. Parsing the protobuf imports nothing.

>>> check_domains("runs/tfc-digits/model.onnx")          # doctest: +SKIP
<onnx ModelProto>
>>> check_domains(model_with_domain_this)                # doctest: +SKIP
Traceback (most recent call last):
UnknownDomainError: model.onnx: node 'Zen' (Foo) has domain 'this', which is not an ONNX, qonnx or FINN ...
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import onnx

from hwq.errors import HwqError

#: The domains hwq's graphs use, and the others of the same three sources that qonnx/FINN resolve to their own
#: modules. Standard ONNX (``''`` is ``ai.onnx``); qonnx's custom ops (``onnx.brevitas`` is what older Brevitas
#: exports wrote, an alias qonnx maps to ``qonnx.custom_op.general``); FINN's HW layers, abstract and
#: specialised, and its general ops.
KNOWN_DOMAINS = (
    "", "ai.onnx", "ai.onnx.ml",
    "qonnx.custom_op.general", "qonnx.custom_op.channels_last", "onnx.brevitas",
    "finn.custom_op.fpgadataflow", "finn.custom_op.fpgadataflow.hls", "finn.custom_op.fpgadataflow.rtl",
    "finn.custom_op.general",
)


class UnknownDomainError(HwqError):
    """A graph node names a domain that is not ONNX's, qonnx's or FINN's (qonnx would import it as a module)."""


def _nodes(graph: onnx.GraphProto) -> Iterator[onnx.NodeProto]:
    """Every node of ``graph``, including those of subgraphs held in attributes (If, Loop, Scan)."""
    for node in graph.node:
        yield node
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from _nodes(attr.g)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for sub in attr.graphs:
                    yield from _nodes(sub)


def check_domains(model: onnx.ModelProto | str | Path, source: str | Path | None = None) -> onnx.ModelProto:
    """Return ``model`` (loaded if it is a path) after checking every node's domain against :data:`KNOWN_DOMAINS`.

    ``source`` names the file in the error (default: the path given). Raises :class:`UnknownDomainError`, one line
    naming the node, its op type and its domain. A path is parsed without external data (whose locations the
    untrusted file would choose).
    """
    if isinstance(model, (str, Path)):
        source = source or model
        try:
            model = onnx.load(str(model), load_external_data=False)
        except Exception as err:  # protobuf's DecodeError, OSError, ...: the file is not an ONNX model
            raise HwqError(f"{source}: not a valid ONNX file ({type(err).__name__})") from None
    where = f"{source}: " if source else ""
    functions = [node for function in model.functions for node in function.node]
    for index, node in enumerate([*_nodes(model.graph), *functions]):
        if node.domain not in KNOWN_DOMAINS:
            name = f"'{node.name}'" if node.name else f"#{index} (unnamed)"
            raise UnknownDomainError(
                f"{where}node {name} ({node.op_type}) has domain '{node.domain}', which is not an ONNX, qonnx or "
                f"FINN domain (expected one of {', '.join(repr(d) for d in KNOWN_DOMAINS)}); not loading it, "
                "since qonnx would import a Python module of that name")
    return model
