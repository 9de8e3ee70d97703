# SPDX-License-Identifier: BSD-3-Clause
"""A sweep file (``sweeps/NAME.yaml``): a base flow recipe, a grid of settings and extra points.

Every point is a flow recipe (:mod:`hwq.flow`: train, export, build, measure) with its own run directory,
``<out_dir>/points/<point id>``. A setting is named by its place in the recipe (``train.method``,
``build.board``, ``export.verify_samples``) or by one of the shorthands below::

    name: digits-smoke
    base:                                 # the recipe's sections, shared by every point
      train: {model: tfc, dataset: digits, epochs: 10, threads: 1}
      build: {board: pynq-z2}
    grid:                                 # every combination of these values
      bits: [1, 2]                        # W = A bits; [W, A] for a pair
      train.method: [uniform, n2uq]
    points:                               # more points: the base with these settings
      - {bits: 2, train.precision: {features.2: 1, features.14: 4}, budget: {lut: 20000}}

Shorthands: ``bits`` (``train.wbits`` / ``train.abits``), ``board`` (``build.board``), ``backend``
(``build.backend``), ``budget`` (``{lut: N}``: ``build.max_lut``, the fastest folding within N LUTs of FINN's
estimate; ``{fps: F}``: ``build.target_fps``; ``"lut=N"`` / ``"fps=F"`` as strings too; ``null``: the board alone).

Every point's recipe is checked as ``hwq run`` checks one before anything runs; an error names the sweep file and
the point.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hwq._io import read_yaml_mapping
from hwq.cost.budget import parse_budget as hardware_budget
from hwq.errors import ConfigError

#: The recipe sections a dotted setting may name.
SECTIONS = ("train", "export", "build", "measure")
SHORTHANDS = ("bits", "board", "backend", "budget")
BUDGET_KINDS = {"lut": "max_lut", "fps": "target_fps"}


@dataclass(frozen=True)
class Point:
    """One point of a sweep: its id, its own settings (as the sweep file gave them) and its recipe."""

    id: str
    settings: dict[str, Any]
    recipe: dict[str, Any]

    @property
    def budget(self) -> dict[str, float] | None:
        return parse_budget(self.settings.get("budget"), f"point {self.id}: budget")


@dataclass
class SweepSpec:
    """A parsed sweep file."""

    name: str
    out_dir: str
    base: dict[str, Any]
    grid: dict[str, list] = field(default_factory=dict)
    extra: list[dict[str, Any]] = field(default_factory=list)
    source: str = "sweep"
    #: The points, made and checked once (:meth:`points`).
    _points: list[Point] | None = field(default=None, init=False, repr=False, compare=False)

    @classmethod
    def from_yaml(cls, path: str | Path) -> "SweepSpec":
        path = Path(path)
        data = read_yaml_mapping(path, "sweep")
        known = {"name", "out_dir", "base", "grid", "points"}
        unknown = sorted(map(str, set(data) - known))
        if unknown:
            raise ConfigError(f"{path}: unknown field(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        if "base" not in data or not isinstance(data["base"], dict) or "train" not in data["base"]:
            raise ConfigError(f"{path}: base: expected a mapping of recipe sections with at least 'train'")
        bad = sorted(map(str, set(data["base"]) - set(SECTIONS)))
        if bad:
            raise ConfigError(f"{path}: base: unknown section(s) {', '.join(bad)}; known: {', '.join(SECTIONS)}")
        name = data.get("name", path.stem)
        if not (isinstance(name, str) and re.fullmatch(r"[A-Za-z0-9_.-]+", name)):
            raise ConfigError(f"{path}: name: expected letters, digits, '.', '_' or '-', got {name!r}")
        grid = data.get("grid") or {}
        if not isinstance(grid, dict) or any(not isinstance(v, list) or not v for v in grid.values()):
            raise ConfigError(f"{path}: grid: expected a mapping of setting -> non-empty list of values")
        extra = data.get("points") or []
        if not isinstance(extra, list) or any(not isinstance(p, dict) for p in extra):
            raise ConfigError(f"{path}: points: expected a list of mappings of setting -> value")
        if not grid and not extra:
            raise ConfigError(f"{path}: no points: give a grid, points, or both")
        out_dir = data.get("out_dir", f"runs/sweeps/{name}")
        if not (isinstance(out_dir, str) and out_dir):
            raise ConfigError(f"{path}: out_dir: expected a folder, got {out_dir!r}")
        spec = cls(name=name, out_dir=out_dir, base=data["base"], grid=grid, extra=extra, source=str(path))
        spec.points()  # every point's settings and recipe checked now
        return spec

    def points(self) -> list[Point]:
        """The grid's combinations (in the file's order, the last setting varying fastest), then the extra
        points; each with its recipe, checked (once: a recipe check builds every stage's settings)."""
        if self._points is None:
            self._points = self._make_points()
        return self._points

    def _make_points(self) -> list[Point]:
        keys = list(self.grid)
        combos = [dict(zip(keys, values)) for values in itertools.product(*self.grid.values())] if keys else []
        points, seen = [], {}
        for where, settings in [(f"grid point {i + 1}", c) for i, c in enumerate(combos)] + \
                [(f"points[{i}]", p) for i, p in enumerate(self.extra)]:
            recipe = self.recipe(settings, f"{self.source}: {where}")
            point_id = _point_id(settings, recipe)
            if point_id in seen:
                raise ConfigError(f"{self.source}: {where} is the same point as {seen[point_id]} ({point_id})")
            seen[point_id] = where
            points.append(Point(point_id, settings, recipe))
        for point in points:
            _check_recipe(point, Path(self.out_dir), self.source)
        return points

    def recipe(self, settings: dict[str, Any], where: str) -> dict[str, Any]:
        """The base recipe with ``settings`` applied (no run_dir yet)."""
        recipe = copy.deepcopy({k: v for k, v in self.base.items() if v is not None})
        for key, value in settings.items():
            for path, v in _expand(str(key), value, where):
                section, _, name = path.partition(".")
                if section not in SECTIONS or not name:
                    raise ConfigError(f"{where}: {key}: expected one of {', '.join(SHORTHANDS)} or "
                                      f"SECTION.FIELD with SECTION one of {', '.join(SECTIONS)}")
                target = recipe.setdefault(section, {})
                if not isinstance(target, dict):
                    raise ConfigError(f"{where}: {key}: base section '{section}' is not a mapping")
                target[name] = v
        return recipe


def parse_budget(value: Any, where: str) -> dict[str, float] | None:
    """``{lut: N}``, ``{fps: F}``, ``"lut=N"`` or None as ``{"lut": N}`` / ``{"fps": F}`` / None: ``--budget``'s
    keys and checks (:func:`hwq.cost.budget.parse_budget`), of which a point's build honours one, lut
    (``build.max_lut``) or fps (``build.target_fps``)."""
    if value is None:
        return None
    expected = ConfigError(f"{where}: expected {{lut: N}} or {{fps: F}} (or 'lut=N' / 'fps=F') with a positive "
                           f"number, got {value!r}")
    numbers = isinstance(value, dict) and all(isinstance(v, int | float) and not isinstance(v, bool)
                                              for v in value.values())
    if not (numbers or isinstance(value, str)):
        raise expected
    try:
        budget = hardware_budget(value if isinstance(value, str) else ",".join(f"{k}={v!r}" for k, v in value.items()))
    except ConfigError:
        raise expected from None
    if len(budget) != 1 or next(iter(budget)) not in BUDGET_KINDS:
        raise expected
    (kind, number), = budget.items()
    return {kind: int(number) if kind == "lut" else float(number)}


def _expand(key: str, value: Any, where: str) -> list[tuple[str, Any]]:
    """A setting as ``(section.field, value)`` pairs (the shorthands become their fields)."""
    if key == "bits":
        pair = [value, value] if isinstance(value, int) and not isinstance(value, bool) else value
        if not (isinstance(pair, list) and len(pair) == 2 and all(isinstance(b, int) and not isinstance(b, bool)
                                                                 for b in pair)):
            raise ConfigError(f"{where}: bits: expected an integer (W = A) or [W, A], got {value!r}")
        return [("train.wbits", pair[0]), ("train.abits", pair[1])]
    if key == "board":
        return [("build.board", value)]
    if key == "backend":
        return [("build.backend", value)]
    if key == "budget":
        budget = parse_budget(value, f"{where}: budget")
        return [] if budget is None else [(f"build.{BUDGET_KINDS[k]}", v) for k, v in budget.items()]
    return [(key, value)]


def _slug(value: Any) -> str:
    if isinstance(value, dict):
        return "mixed" if value and all(not isinstance(v, dict) for v in value.values()) else "map"
    if isinstance(value, list):
        return "x".join(map(_slug, value))
    text = re.sub(r"[^A-Za-z0-9.-]+", "_", str(value)).strip("_")
    return text[:24] or "none"


#: Settings whose value alone names them in a point id (``tfc-n2uq-w2a2-pynq-z2-...``).
BARE_VALUES = ("train.model", "train.method", "train.quant", "board", "backend", "build.board", "build.backend")


def _point_id(settings: dict[str, Any], recipe: dict[str, Any]) -> str:
    """A readable, stable id: the point's own values, then a hash of its whole recipe (so two points never share a
    folder, and a point whose recipe changes gets a new one)."""
    parts = []
    for key, value in settings.items():
        if key == "bits":
            (_, w), (_, a) = _expand("bits", value, "bits")
            parts.append(f"w{w}a{a}")
        elif key == "budget":
            parts += [f"{kind}{number:g}" for kind, number in (parse_budget(value, "budget") or {}).items()]
        elif key in BARE_VALUES:
            parts.append(_slug(value))
        else:
            parts.append(f"{key.rpartition('.')[2]}-{_slug(value)}")
    digest = hashlib.sha256(json.dumps(recipe, sort_keys=True, default=str).encode()).hexdigest()[:8]
    return "-".join(parts + [digest])


def _check_recipe(point: Point, out_dir: Path, source: str) -> None:
    """The point's recipe as ``hwq run`` checks it (every stage's settings), errors naming the point."""
    from hwq.flow import Recipe

    recipe = Recipe(name=point.id, run_dir=str(out_dir / "points" / point.id), train=point.recipe["train"],
                    export=point.recipe.get("export") or {}, build=point.recipe.get("build"),
                    measure=point.recipe.get("measure"))
    recipe.validate(Path(f"{source}: point {point.id}"))
