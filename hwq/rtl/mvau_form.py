# SPDX-License-Identifier: BSD-3-Clause
"""Which form the open backend builds an integer MVAU in: ``integer`` (one multiply-free or multiplying dot product
of the integer weights, :func:`hwq.rtl.blocks.mvau_verilog`) or ``planes`` (K binary weight planes, a sum of K
bipolar dot products scaled by a per-channel integer basis, :func:`hwq.rtl.blocks.plane_mvau_verilog`).

:func:`to_plane_form` is the pass: every integer MVAU whose weights decompose (:func:`hwq.rtl.planes
.plane_decomposition`, e.g. every MVAU of an ``--method lqnet`` run, with K = its weight bits) gets its planes;
the others stay integer MVAUs and the report says why. Nothing else in the graph changes, nor any output: the two
forms compute the same integers.

>>> import numpy as np
>>> from hwq.rtl.layers import ElemType, MVAULayer
>>> lq = MVAULayer("fc0", 3, 2, 1, 3, False, ElemType(2, False), ElemType(5, True),
...                np.array([[3, -1], [-1, 1], [1, -3]]), None)
>>> graph, report = to_plane_form([lq])
>>> report["fc0"]
{'form': 'planes', 'planes': 2}
>>> graph[0].plane_basis.tolist()
[[1, 2], [1, 2]]
"""

from __future__ import annotations

import dataclasses

from hwq.errors import ConfigError
from hwq.rtl.graph import LayerGraph, as_graph
from hwq.rtl.layers import MVAULayer
from hwq.rtl.planes import MAX_PLANES, PlaneDecompositionError, plane_decomposition

#: The forms ``OpenBuildConfig.mvau_form`` / ``hwq build --backend open --mvau-form`` accept.
MVAU_FORMS = ("integer", "planes")


def check_mvau_form(form: str) -> None:
    """A one-line ConfigError for a form that is not one of :data:`MVAU_FORMS`."""
    if form not in MVAU_FORMS:
        raise ConfigError(f"mvau_form (--mvau-form): '{form}' is not one of {', '.join(MVAU_FORMS)}")


def to_plane_form(layers, max_planes: int = MAX_PLANES) -> tuple[LayerGraph, dict[str, dict]]:
    """``layers`` (a :class:`LayerGraph` or a chain) with every integer MVAU in its plane form where its weights
    decompose; returns (graph, report): per MVAU, ``{"form": "planes", "planes": K}`` or ``{"form": "integer",
    "reason": ...}`` (an XNOR or adder MVAU, or the one-line decomposition error)."""
    graph = as_graph(layers)
    report, out = {}, []
    for layer in graph:
        if isinstance(layer, MVAULayer):
            layer = _convert(layer, report, max_planes)
        out.append(layer)
    return LayerGraph(out, dict(graph.feeds), graph.output), report


def _convert(layer: MVAULayer, report: dict, max_planes: int) -> MVAULayer:
    if layer.planes is not None:
        report[layer.name] = {"form": "planes", "planes": int(layer.planes.shape[0])}
        return layer
    if layer.xnor or layer.adder:
        reason = "an XNOR-popcount MVAU (one binary plane already)" if layer.xnor else "an adder MVAU (no dot product)"
        report[layer.name] = {"form": "integer", "reason": reason}
        return layer
    try:
        form = plane_decomposition(layer.weights, layer.name, max_planes)
    except PlaneDecompositionError as err:   # the message without the layer's name, which the report keys
        report[layer.name] = {"form": "integer", "reason": str(err).removeprefix(f"{layer.name}: ")}
        return layer
    report[layer.name] = {"form": "planes", "planes": form.k}
    return dataclasses.replace(layer, planes=form.planes, plane_basis=form.basis)


def layers_in_form(layers, form: str) -> tuple[LayerGraph, dict[str, dict]]:
    """``layers`` in ``form`` (:data:`MVAU_FORMS`): unchanged for ``integer`` (an empty report), else
    :func:`to_plane_form`."""
    check_mvau_form(form)
    if form == "integer":
        return as_graph(layers), {}
    return to_plane_form(layers)
