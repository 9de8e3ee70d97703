# SPDX-License-Identifier: BSD-3-Clause
"""Cost queries: per layer and in total, LUT / BRAM18 / DSP / cycles of a model at per-layer bits and a folding.

A query restates FINN's analytical estimates in Python (:mod:`hwq.cost.finn_formulas`) and FINN's ``SetFolding``
(:mod:`hwq.cost.folding`) on the layers :mod:`hwq.cost.layers` finds in the PyTorch model, so it needs no export
and no FINN build: describing a model takes a tenth of a second (one forward pass, cached), a query on a described
model about a millisecond (``benchmarks/cost_model.md``).

>>> layers = describe_model("tfc", "mnist", wbits=2, abits=2)                         # doctest: +SKIP
>>> cost = model_cost(layers, {"features.2": 1}, board="pynq-z2", target_fps=1e6)     # doctest: +SKIP
>>> cost["total"]["lut"], cost["total"]["fps"], cost["layers"][0]["PE"]                # doctest: +SKIP
(14839, 1020408.16..., 16)
"""

from __future__ import annotations

import difflib
import functools
from typing import Any, Mapping

from hwq.boards import Board, load_board
from hwq.catalog import DATASET_SHAPES
from hwq.checks import check_int, check_number
from hwq.cost import finn_formulas as f
from hwq.cost.folding import FULLY_FOLDED_TARGET, Folding, fastest_fitting, set_folding
from hwq.cost.layers import MVAU, ModelLayers, HwLayer, describe
from hwq.cost.units import Unit, cost, resolve, resolve_one
from hwq.errors import ConfigError

#: The board whose FPGA part an open-backend board's costs use: the open backend folds with FINN's estimate for
#: it (``hwq.rtl.config.OpenBuildConfig.fold_board``).
OPEN_FOLD_BOARD = "pynq-z2"
#: Board resource fields, as FINN's estimate keys name them.
RESOURCES = {"lut": "LUT", "bram18": "BRAM_18K", "dsp": "DSP"}
MAX_BITS = 8


@functools.lru_cache(maxsize=64)
def describe_model(model: str, dataset: str = "mnist", wbits: int = 2, abits: int = 2, quant: str = "uniform"
                   ) -> ModelLayers:
    """The hardware layers of ``model`` built for ``dataset`` at ``wbits``/``abits`` (cached: one forward pass)."""
    from hwq.models import ModelSpec

    if dataset not in DATASET_SHAPES:
        raise ConfigError(f"dataset: unknown '{dataset}'; known: {', '.join(DATASET_SHAPES)}")
    shape, classes = DATASET_SHAPES[dataset]
    return describe(ModelSpec(model, wbits, abits, quant=quant, image_shape=shape, num_classes=classes))


@functools.lru_cache(maxsize=64)
def _board(name: str) -> tuple[Board, str]:
    board = load_board(name)
    part = load_board(OPEN_FOLD_BOARD).part if board.shell == "open" else board.part
    return board, part


def _fold_board(board: Board, calibrated: bool) -> Board:
    """The board whose clock and resources the folding is chosen for: an open board's build folds as FINN does for
    :data:`OPEN_FOLD_BOARD` (``hwq build --backend open``); a calibrated query fits the open board itself."""
    return _board(OPEN_FOLD_BOARD)[0] if board.shell == "open" and not calibrated else board


def layer_bits(layers: ModelLayers, precision: Mapping[str, int] | None = None) -> dict[str, int]:
    """Each quantizer's bits: the model's, with ``precision``'s (a name -> bits map, as ``--precision`` takes)."""
    bits = dict(layers.bits)
    for name, value in (precision or {}).items():
        first = layers.aliases.get(name, name)
        if first not in bits:
            known = list(bits) + list(layers.aliases)
            close = difflib.get_close_matches(str(name), known, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise ConfigError(f"precision.{name}: not a quantized layer of model '{layers.model}'{hint}; its "
                              f"quantized layers are {', '.join(bits)} ('hwq layers' lists them)")
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_BITS:
            raise ConfigError(f"precision.{name}: expected an integer number of bits 1..{MAX_BITS}, got {value!r}")
        bits[first] = value
    return bits


def layer_cost(layer: HwLayer, bits: Mapping[str, int], pe: int = 1, simd: int = 1, parallel_window: int = 0,
               part: str = "xc7z020clg400-1", *, wbits: int | None = None, abits: int | None = None,
               out_bits: int | None = None) -> dict[str, int]:
    """One layer's ``{"cycles", "lut", "bram18", "dsp"}`` at ``bits`` (quantizer name -> bits, e.g. the described
    model's ``bits``) and PE/SIMD; ``wbits`` / ``abits`` / ``out_bits`` override its weights', its input's and its
    output's bits. A label select's input (an accumulator) does not change its cost.

    >>> tfc = describe_model("tfc", "digits", 2, 2)                                     # doctest: +SKIP
    >>> layer_cost(tfc.layers[1], tfc.bits, pe=16, simd=16)                              # doctest: +SKIP
    {'cycles': 16, 'lut': 3767, 'bram18': 15, 'dsp': 0}
    >>> layer_cost(tfc.layers[1], tfc.bits, pe=16, simd=16, wbits=4)["lut"]             # doctest: +SKIP
    5456
    """
    bits = dict(bits)
    for name, value in ((layer.weight, wbits), (layer.input, abits), (layer.output, out_bits)):
        if value is not None and name is not None:
            bits[name] = value
    block = f.dsp_block(part)
    unit = resolve_one(layer, bits, block)
    return cost(unit, {"PE": pe, "SIMD": simd, "parallel_window": parallel_window}, block)


def model_cost(
    layers: ModelLayers | str, precision: Mapping[str, int] | None = None, *, board: str = "pynq-z2",
    target_fps: float | None = None, target_cycles: int | None = None, folding: Folding | None = None,
    fit_fraction: float = 0.8, calibrated: bool = False, dataset: str = "mnist", wbits: int = 2, abits: int = 2,
) -> dict[str, Any]:
    """The cost of a model (described, or a model name built for ``dataset`` at ``wbits``/``abits``) with
    ``precision``'s bits, per layer and in total, on ``board``.

    The folding is ``folding`` (layer name -> PE/SIMD; a layer left out gets 1) if given, else FINN's SetFolding
    for ``target_cycles`` or for ``target_fps`` at the board clock, else the fastest folding whose cost fits
    ``fit_fraction`` of the board (hwq's build default). For an open board, as ``hwq build --backend open`` does,
    the folding is chosen for :data:`OPEN_FOLD_BOARD` (its clock, its resources) and the costs use its FPGA part.
    ``calibrated`` adds the LUTs predicted for the board's synthesis (:mod:`hwq.cost.calibration`); the folding
    is then chosen for the board itself, fitting those LUTs into its resources.
    """
    check_number("fit_fraction", fit_fraction, 0, 1, above=True)
    if target_fps is not None:
        check_number("target_fps", target_fps, 0, above=True)
    if target_cycles is not None:
        check_int("target_cycles", target_cycles, 1)
    if isinstance(layers, str):
        layers = describe_model(layers, dataset, wbits, abits)
    target_board, part = _board(board)
    the_board = _fold_board(target_board, calibrated)
    block = f.dsp_block(part)
    units = resolve(layers.layers, layer_bits(layers, precision), block)
    calibration = None
    if calibrated:
        from hwq.cost.calibration import calibration_for

        calibration = calibration_for(target_board)
    mode = "file" if folding is not None else "target_cycles" if target_cycles is not None else \
        "target_fps" if target_fps is not None else "fastest_fitting"
    trials = 1
    if folding is not None:
        folding = _check_folding(units, folding)
    elif target_cycles is not None or target_fps is not None:
        cycles = target_cycles if target_cycles is not None else max(1, int(the_board.clock_mhz * 1e6 // target_fps))
        folding = set_folding(units, cycles)
    else:
        def fits(candidate: Folding) -> bool:
            return _totals(units, candidate, block, the_board, fit_fraction, calibration)["fits"]

        folding, trials = fastest_fitting(units, fits)
        if folding is None:
            folding = set_folding(units, FULLY_FOLDED_TARGET)
            mode = "fully_folded (nothing fits)"
    rows = []
    for unit in units:
        fold = folding[unit.name]
        row = {"name": unit.name, "kind": unit.layer.kind, **_bits_row(unit), **fold,
               **cost(unit, fold, block)}
        if unit.layer.kind == MVAU and unit.formula.rtl:
            row["impl"] = "rtl"
        rows.append(row)
    total = _totals(units, folding, block, the_board, fit_fraction, calibration)
    result = {"model": layers.model, "board": target_board.name, "fold_board": the_board.name, "part": part,
              "folding_mode": mode,
              "search_trials": trials, "layers": rows, "total": total,
              "kind": "hwq cost model: FINN's analytical estimates (finn-plus 1.6.1 formulas)"}
    if calibration is not None:
        result["calibration"] = calibration.describe()
    return result


def _bits_row(unit: Unit) -> dict[str, Any]:
    m = unit.formula
    if unit.layer.kind == MVAU:
        return {"wbits": m.w, "in_bits": m.a, "out_bits": m.out, "acc_bits": m.acc, "MW": m.mw, "MH": m.mh}
    return {"in_bits": unit.bits}


def _totals(units: list[Unit], folding: Folding, block: str, board: Board, fit_fraction: float,
            calibration) -> dict[str, Any]:
    costs = [cost(unit, folding[unit.name], block) for unit in units]
    total = {key: sum(c[key] for c in costs) for key in RESOURCES}
    worst = max(range(len(units)), key=lambda i: costs[i]["cycles"])
    slowest = costs[worst]["cycles"]
    total.update({"max_cycles": slowest, "bottleneck": units[worst].name,
                  "critical_path_cycles": sum(c["cycles"] for c in costs), "clock_mhz": board.clock_mhz,
                  "fps": board.clock_mhz * 1e6 / slowest,
                  "latency_us": sum(c["cycles"] for c in costs) * board.clock_period_ns / 1000.0})
    if calibration is not None:
        total["lut_calibrated"] = calibration.predict(units, costs, folding)
    lut = total.get("lut_calibrated", total["lut"])
    usage = {"lut": lut / board.resources.lut, "bram18": _share(total["bram18"], board.resources.bram18),
             "dsp": _share(total["dsp"], board.resources.dsp)}
    total["utilisation"] = usage
    total["fits"] = all(u <= fit_fraction for u in usage.values())
    return total


def _share(need: int, have: int) -> float:
    return need / have if have else (0.0 if need == 0 else float("inf"))


def _check_folding(units: list[Unit], folding: Folding) -> Folding:
    """A given folding, each layer's PE/SIMD checked against its dimensions (one line naming the layer)."""
    names = [unit.name for unit in units]
    for name in folding:
        if name not in names:
            raise ConfigError(f"folding: '{name}' is not a layer of the cost model; its layers: {', '.join(names)}")
    checked: Folding = {}
    for unit in units:
        fold = dict(folding.get(unit.name, {}))
        layer = unit.layer
        dims = {"mvau": {"PE": layer.mh, "SIMD": layer.mw}, "window": {"SIMD": layer.channels},
                "pool": {"PE": layer.channels}, "label_select": {"PE": layer.labels}}[layer.kind]
        for attr, dim in dims.items():
            value = int(fold.setdefault(attr, 1))
            if value < 1 or dim % value:
                raise ConfigError(f"folding: {unit.name}: {attr}={value} does not divide {dim}")
        if layer.kind == "pool":
            checked.setdefault(f"{unit.name}.window", {})["SIMD"] = fold["PE"]
        checked[unit.name] = {**checked.get(unit.name, {}), **fold}
    for unit in units:
        if unit.layer.kind == "window":
            checked[unit.name].setdefault("parallel_window", 0)
    return checked
