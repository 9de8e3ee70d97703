# SPDX-License-Identifier: BSD-3-Clause
"""Settings from YAML or JSON into a config dataclass: unknown keys and wrong types are one-line errors.

Each stage's config dataclass checks its own ranges in ``__post_init__``; this module checks what YAML can get
wrong before that: a key that is not a field (a typo), a value of the wrong type (``windows: five``, a string
where a list is expected, ``true`` where a number is).

>>> from dataclasses import dataclass
>>> @dataclass
... class Example:
...     windows: int = 5
>>> config_from_mapping(Example, {"windows": 3}, "recipe measure").windows
3
>>> config_from_mapping(Example, {"windows": "five"}, "recipe measure")
Traceback (most recent call last):
hwq.errors.ConfigError: recipe measure: windows: expected an integer, got 'five'
"""

from __future__ import annotations

import dataclasses
import enum
import types
import typing
from typing import Any

from hwq.errors import ConfigError


def config_from_mapping(cls: type, data: Any, where: str, **fixed: Any):
    """``cls(**data, **fixed)`` after checking ``data``'s keys and value types against ``cls``'s fields."""
    check_mapping(cls, data, where, skip=tuple(fixed))
    try:
        return cls(**data, **fixed)
    except TypeError as err:  # e.g. a required field missing
        raise ConfigError(f"{where}: {err}") from None


def check_mapping(cls: type, data: Any, where: str, skip: tuple[str, ...] = ()) -> None:
    """Raise a ConfigError naming ``where`` and the key when ``data`` is not a mapping of ``cls``'s fields."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping of settings, got {data!r}")
    hints = typing.get_type_hints(cls)
    known = [f.name for f in dataclasses.fields(cls) if f.init and f.name not in skip]
    unknown = sorted(str(k) for k in data if k not in known)
    if unknown:
        raise ConfigError(f"{where}: unknown field(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    for key, value in data.items():
        hint = hints[key]
        if not matches(value, hint):
            raise ConfigError(f"{where}: {key}: expected {describe(hint)}, got {value!r}")


def matches(value: Any, hint: Any) -> bool:
    """Whether a YAML value can stand for a field annotated ``hint`` (an int passes for a float; a bool for
    neither; an Enum field takes one of its values)."""
    if hint is Any:
        return True
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(matches(value, a) for a in args)
    if hint is type(None):
        return value is None
    if origin in (list, tuple):
        return isinstance(value, (list, tuple)) and all(matches(v, args[0]) for v in value) if args else \
            isinstance(value, (list, tuple))
    if origin is dict or hint is dict:
        return isinstance(value, dict)
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return isinstance(value, hint) or value in {e.value for e in hint}
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if isinstance(hint, type):
        return isinstance(value, hint)
    return True


def describe(hint: Any) -> str:
    """``hint`` in words, for an error message."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        named = [describe(a) for a in args if a is not type(None)]
        return " or ".join(named) + (" or null" if type(None) in args else "")
    if origin in (list, tuple):
        return f"a list of {describe(args[0]).removeprefix('a ').removeprefix('an ')}s" if args else "a list"
    if origin is dict or hint is dict:
        return "a mapping"
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return "one of " + ", ".join(str(e.value) for e in hint)
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(hint, str(hint))
