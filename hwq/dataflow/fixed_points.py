# SPDX-License-Identifier: BSD-3-Clause
"""Skip the tidy-up transformations that are known to leave a graph as it is (streamlining time, docs/dataflow.md).

finn-plus's ``Streamline`` and qonnx's ``ComposedTransformation`` (behind finn-plus's ``StreamlinePlus``) follow
every one of their transformations with the same tidy-up: ``ModelWrapper.cleanup()`` (also run by every
``ModelWrapper.transform``), ``RemoveIdentityOps``, ``GiveUniqueNodeNames``, ``GiveReadableTensorNames``,
``InferShapes``, ``InferDataTypes`` (and ``InferDataLayouts``). Most transformations change nothing (StreamlinePlus
repeats its whole list until none does), so almost every tidy-up runs on a graph that is already tidy and returns
it unchanged; on ReActNet's graphs that was most of the build's time.

:func:`skipping_known_fixed_points` remembers, by the serialized graph, each graph that one of these tidy-ups
returned byte for byte unchanged (with the same ``ModelWrapper`` settings), and on that same graph again returns
a copy of it (or, for ``cleanup()``, which works in place, leaves it) without running the tidy-up. The result is
the graph the tidy-up would have returned, exactly: these transformations are deterministic functions of the graph
and keep no state. Any other call (another transformation, ``make_deepcopy=False``, a graph not seen unchanged)
runs as before. Whatever wraps ``ModelWrapper.transform`` when it is entered (hwq's provenance tracking) is part
of what is skipped, so it is part of "unchanged" too.

>>> with tracking_user_nodes(), skipping_known_fixed_points() as memo:   # doctest: +SKIP
...     model = model.transform(Streamline())
>>> sum(memo.skipped.values()), sum(memo.ran.values())                   # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
from collections import Counter
from dataclasses import dataclass, field
from typing import Iterator

from qonnx.core.modelwrapper import ModelWrapper

#: The tidy-up transformations (qonnx/finn class names) whose calls may be skipped: stateless, deterministic.
TIDY_UPS = ("RemoveIdentityOps", "GiveUniqueNodeNames", "GiveReadableTensorNames", "InferShapes",
            "InferDataTypes", "InferDataLayouts")
_TIDY_UP_MODULES = ("qonnx.transformation.", "finn.transformation.")


@dataclass
class FixedPoints:
    """The graphs known to come back unchanged, and how many calls of each tidy-up (class name, or ``cleanup``)
    were skipped or ran (``ran`` counts only the calls that could have been skipped)."""

    known: set = field(default_factory=set)
    skipped: Counter = field(default_factory=Counter)
    ran: Counter = field(default_factory=Counter)


def _settings(model: ModelWrapper) -> tuple:
    return tuple(sorted((k, repr(v)) for k, v in vars(model).items() if k != "_model_proto"))


def _fingerprint(model: ModelWrapper) -> tuple:
    return hashlib.sha256(model.model.SerializeToString()).digest(), _settings(model)


def _is_tidy_up(transformation) -> bool:
    cls = type(transformation)
    return cls.__name__ in TIDY_UPS and cls.__module__.startswith(_TIDY_UP_MODULES)


@contextlib.contextmanager
def skipping_known_fixed_points() -> Iterator[FixedPoints]:
    """While entered, a tidy-up (:data:`TIDY_UPS` with ``make_deepcopy`` on, and ``ModelWrapper.cleanup``) on a
    graph it has already returned unchanged is not run again; yields the :class:`FixedPoints` (counts).
    ``ModelWrapper.transform`` and ``ModelWrapper.cleanup`` are restored on exit, also on error."""
    original_transform, original_cleanup = ModelWrapper.transform, ModelWrapper.cleanup
    memo = FixedPoints()

    def transform(self, transformation, *args, **kwargs):
        if args or not kwargs.get("make_deepcopy", True) or not _is_tidy_up(transformation):
            return original_transform(self, transformation, *args, **kwargs)
        name = type(transformation).__name__
        key = (type(transformation).__qualname__, type(transformation).__module__,
               repr(sorted(vars(transformation).items())), repr(sorted(kwargs.items())), _fingerprint(self))
        if key in memo.known:
            memo.skipped[name] += 1
            return copy.deepcopy(self)
        memo.ran[name] += 1
        result = original_transform(self, transformation, **kwargs)
        if isinstance(result, ModelWrapper) and _fingerprint(result) == key[-1]:
            memo.known.add(key)
        return result

    def cleanup(self):
        key = ("cleanup", _fingerprint(self))
        if key in memo.known:
            memo.skipped["cleanup"] += 1
            return self
        memo.ran["cleanup"] += 1
        result = original_cleanup(self)
        if result is self and _fingerprint(self) == key[-1]:
            memo.known.add(key)
        return result

    transform.__doc__, cleanup.__doc__ = original_transform.__doc__, original_cleanup.__doc__
    ModelWrapper.transform, ModelWrapper.cleanup = transform, cleanup
    try:
        yield memo
    finally:
        ModelWrapper.transform, ModelWrapper.cleanup = original_transform, original_cleanup
