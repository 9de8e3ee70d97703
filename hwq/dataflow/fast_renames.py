# SPDX-License-Identifier: BSD-3-Clause
"""qonnx's tensor renaming (``GiveUniqueTensorNames``, ``GiveReadableTensorNames``) in one pass over the graph
instead of one pass per tensor (streamlining time, docs/dataflow.md; finn_compat workaround 10).

qonnx 1.0.0 renames a tensor with ``ModelWrapper.rename_tensor``, which searches every container of the graph (its
inputs, outputs, value infos, initializers, quantization annotations and every node's inputs and outputs) for the
one name, so renaming every tensor is quadratic in the graph's size: finn-plus's streamlining renames every tensor
after each of its transformations, and that was a third of its time on ReActNet after
:mod:`hwq.dataflow.fixed_points`.

The forks below make the same sequence of ``rename_tensor(old, new)`` calls as qonnx's ``apply`` (same names, same
order), but on a table of the graph's current names, and write the final names once. That is exactly what qonnx
does when each rename replaces every occurrence of ``old`` and ``new`` is not another tensor's name, which
:func:`_renamer` checks on the graph first (each name once per container and once per node's inputs and outputs,
no node reading its own output) and on every rename (``new`` unused); where either does not hold, qonnx's own
``apply`` runs instead. :func:`fast_tensor_renames` puts the forks in place while it is entered.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

from qonnx.transformation.general import GiveReadableTensorNames, GiveUniqueTensorNames


class _NotAMapping(Exception):
    """A rename that qonnx would not apply to every occurrence (or that merges two tensors)."""


class _Renamer:
    """The graph's tensor names, renamed as ``rename_tensor`` would rename them, and written back by :meth:`write`."""

    def __init__(self, graph) -> None:
        self.graph = graph
        self.current: dict[str, str] = {}  # a name in the graph now -> its name after the renames so far
        self.in_use: set[str] = set()
        self.initializers = {x.name for x in graph.initializer}  # by the name now (before any rename)
        for field in (graph.input, graph.output, graph.value_info, graph.initializer):
            names = [x.name for x in field]
            if len(set(names)) != len(names):
                raise _NotAMapping
            self.in_use.update(names)
        annotated = [x.tensor_name for x in graph.quantization_annotation]
        if len(set(annotated)) != len(annotated):
            raise _NotAMapping
        self.in_use.update(annotated)
        for node in graph.node:
            ins, outs = list(node.input), list(node.output)
            if len(set(ins)) != len(ins) or len(set(outs)) != len(outs) or set(ins) & set(outs):
                raise _NotAMapping
            self.in_use.update(ins)
            self.in_use.update(outs)
        self.original_of = {name: name for name in self.in_use}  # a name after the renames -> the name now

    def name(self, original: str) -> str:
        """The name the tensor called ``original`` now has after the renames so far."""
        return self.current.get(original, original)

    def rename(self, old: str, new: str) -> None:
        """``rename_tensor(old, new)``: ``old`` is a name as the graph would have it after the renames so far."""
        if old not in self.in_use or old == new:
            return  # rename_tensor finds nothing to rename / writes the same name
        if new in self.in_use:
            raise _NotAMapping
        original = self.original_of.pop(old)
        self.in_use.remove(old)
        self.in_use.add(new)
        self.original_of[new] = original
        self.current[original] = new

    def has_initializer(self, name: str) -> bool:
        return name in self.in_use and self.original_of[name] in self.initializers

    def write(self) -> None:
        graph, name = self.graph, self.name
        for field in (graph.input, graph.output, graph.value_info, graph.initializer):
            for x in field:
                x.name = name(x.name)
        for x in graph.quantization_annotation:
            x.tensor_name = name(x.tensor_name)
        for node in graph.node:
            for i, each in enumerate(node.input):
                node.input[i] = name(each)
            for i, each in enumerate(node.output):
                node.output[i] = name(each)


def _unique_tensor_names(original):
    """qonnx's ``GiveUniqueTensorNames.apply``, renaming in one pass (see the module docstring)."""
    def apply(self, model):
        try:
            renamer = _Renamer(model.graph)
            for i, name in enumerate(model.get_all_tensor_names()):
                renamer.rename(name, f"tensor_{i}")  # the name as listed before (qonnx's rename_tensor(name, ..))
        except _NotAMapping:
            return original(self, model)
        renamer.write()
        return (model, False)

    apply.__doc__ = original.__doc__
    return apply


def _readable_tensor_names(original):
    """qonnx's ``GiveReadableTensorNames.apply``, renaming in one pass (see the module docstring)."""
    def apply(self, model):
        model = model.transform(GiveUniqueTensorNames())
        graph = model.graph
        try:
            renamer = _Renamer(graph)
            for n in graph.node:
                if n.name == "":
                    raise _NotAMapping  # qonnx's assertion
                for k, o in enumerate(n.output):
                    renamer.rename(renamer.name(o), "%s_out%d" % (n.name, k))
                param = 0
                for i in n.input:
                    if renamer.has_initializer(renamer.name(i)):
                        renamer.rename(renamer.name(i), "%s_param%d" % (n.name, param))
                        param += 1
            for i, inp in enumerate(graph.input):
                renamer.rename(renamer.name(inp.name), "global_in" if i == 0 else "global_in_%d" % i)
            for i, outp in enumerate(graph.output):
                renamer.rename(renamer.name(outp.name), "global_out" if i == 0 else "global_out_%d" % i)
        except _NotAMapping:
            return _readable_after_unique(model)
        renamer.write()
        return (model, False)

    def _readable_after_unique(model):
        # qonnx's apply without its first line (already run on this model)
        graph = model.graph
        for n in graph.node:
            assert n.name != "", "Found empty node name"
            out_num = 0
            for o in n.output:
                model.rename_tensor(o, "%s_out%d" % (n.name, out_num))
                out_num += 1
            init_in_num = 0
            for i in n.input:
                if model.get_initializer(i) is not None:
                    model.rename_tensor(i, "%s_param%d" % (n.name, init_in_num))
                    init_in_num += 1
        for i, inp in enumerate(model.graph.input):
            iname = "global_in" if i == 0 else "global_in_%d" % i
            model.rename_tensor(inp.name, iname)
        for i, outp in enumerate(model.graph.output):
            oname = "global_out" if i == 0 else "global_out_%d" % i
            model.rename_tensor(outp.name, oname)
        return (model, False)

    apply.__doc__ = original.__doc__
    return apply


@contextlib.contextmanager
def fast_tensor_renames() -> Iterator[None]:
    """While entered, ``GiveUniqueTensorNames`` and ``GiveReadableTensorNames`` rename in one pass (the same
    names); qonnx's methods are restored on exit, also on error."""
    saved = vars(GiveUniqueTensorNames)["apply"], vars(GiveReadableTensorNames)["apply"]
    try:
        GiveUniqueTensorNames.apply = _unique_tensor_names(saved[0])
        GiveReadableTensorNames.apply = _readable_tensor_names(saved[1])
        yield
    finally:
        GiveUniqueTensorNames.apply, GiveReadableTensorNames.apply = saved
