# SPDX-License-Identifier: BSD-3-Clause
"""A hardware layer with its bits: the FINN datatypes hwq's quantizers give it, and its cost at a folding.

The datatypes (what FINN's conversion and ``minimize_bit_width`` give hwq's uniform-family layers):

- weights: ``b`` bits -> INTb on a narrow grid (``|w| <= 2^(b-1) - 1``); 1 bit -> BIPOLAR, which FINN's
  ``minimize_bit_width`` stores as INT2 (the smallest type holding -1..1) unless the layer is XNOR-popcount;
- inputs: the pixels are UINT8; an activation of ``b > 1`` bits is INTb, of 1 bit BIPOLAR, and a 1-bit weight
  layer on a 1-bit activation is an XNOR-popcount layer (BINARY x BINARY);
- the accumulator: the worst case of those ranges, ``MW * max|w| * max|x|`` (FINN derives it from the trained
  weights, which can only make it narrower; the LUT estimate moves by about one LUT per bit per PE); an XNOR
  layer's is the popcount's ``0..MW`` (hwq's ``ClampPopcountThresholds``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping

from hwq.cost import finn_formulas as f
from hwq.cost.layers import MVAU, PIXEL_BITS, POOL, WINDOW, HwLayer


@dataclass(frozen=True)
class Unit:
    """One layer, its bits resolved: ``formula`` is the :mod:`finn_formulas` description of the layer."""

    layer: HwLayer
    formula: object  # f.Mvau | f.Window | None (pool, label_select)
    bits: int        # the bits of the values it takes in (a label select: its input accumulator)

    @property
    def name(self) -> str:
        return self.layer.name


def _input(layer: HwLayer, bits: Mapping[str, int]) -> tuple[int, bool]:
    """(bits, signed) of the values a layer takes in."""
    if layer.input is None:
        return PIXEL_BITS, False
    b = bits[layer.input]
    return b, True  # INTb, or BIPOLAR at 1 bit (signed)


def mvau(layer: HwLayer, bits: Mapping[str, int], block: str) -> f.Mvau:
    """The MVAU ``layer`` is at these bits (datatypes as in the module docstring)."""
    w = bits[layer.weight]
    a, a_signed = _input(layer, bits)
    out = bits[layer.output] if layer.output is not None else None
    xnor = w == 1 and a == 1
    if xnor:
        a_signed = False  # BINARY x BINARY: the popcount 0..MW
        acc = max(1, math.ceil(math.log2(layer.mw + 1)))
    else:
        w_max = 1 if w == 1 else 2 ** (w - 1) - 1
        w = max(w, 2)  # +-1 weights off the XNOR path are INT2 to FINN (MinimizeWeightBitWidth)
        x_max = 2 ** a - 1 if not a_signed else (1 if a == 1 else 2 ** (a - 1))
        acc = math.ceil(math.log2(layer.mw * w_max * x_max + 1)) + 1
    rtl = f.rtl_mvau_possible(w, a, a_signed, acc, out is not None, block)
    return f.Mvau(layer.mw, layer.mh, w, a, a_signed, acc, out, layer.vectors, rtl,
                  bipolar_weights=bits[layer.weight] == 1)


def resolve(layers: tuple[HwLayer, ...], bits: Mapping[str, int], block: str) -> list[Unit]:
    """Every layer of a model with its formula at ``bits`` (quantizer name -> bits)."""
    units: list[Unit] = []
    accumulators: dict[str, int] = {}
    for layer in layers:
        unit = resolve_one(layer, bits, block, accumulators)
        if layer.kind == MVAU:
            accumulators[layer.name] = unit.formula.acc
        units.append(unit)
    return units


def resolve_one(layer: HwLayer, bits: Mapping[str, int], block: str, accumulators: Mapping[str, int] = {}) -> Unit:
    """One layer with its formula; a label select's input bits are its MVAU's accumulator (0 when not given)."""
    if layer.kind == MVAU:
        m = mvau(layer, bits, block)
        return Unit(layer, m, m.a)
    if layer.kind == WINDOW:
        b, _ = _input(layer, bits)
        return Unit(layer, f.Window(layer.channels, layer.ifm, layer.ofm, layer.kernel, layer.stride, b,
                                    depthwise=layer.depthwise), b)
    if layer.kind == POOL:
        return Unit(layer, None, _input(layer, bits)[0])
    return Unit(layer, None, accumulators.get(layer.input, 0))


def cycles(unit: Unit, fold: Mapping[str, int]) -> int:
    """The layer's cycles per image at ``fold`` (``PE``, ``SIMD``, ``parallel_window``)."""
    layer, kind = unit.layer, unit.layer.kind
    if kind == MVAU:
        return f.mvau_cycles(unit.formula, fold["PE"], fold["SIMD"])
    if kind == WINDOW:
        return f.window_cycles(unit.formula, fold["SIMD"], bool(fold.get("parallel_window", 0)))
    if kind == POOL:
        return f.pool_cycles(layer.channels, layer.kernel, layer.ofm, fold["PE"])
    return f.label_select_cycles(layer.labels, fold["PE"])


def cost(unit: Unit, fold: Mapping[str, int], block: str) -> dict[str, int]:
    """``{"cycles", "lut", "bram18", "dsp"}`` of the layer at ``fold``, FINN's formulas."""
    kind = unit.layer.kind
    lut = bram = dsp = 0
    if kind == MVAU:
        pe, simd = fold["PE"], fold["SIMD"]
        lut = f.mvau_lut(unit.formula, pe, simd)
        bram = f.mvau_bram18(unit.formula, pe, simd)
        dsp = f.mvau_dsp(unit.formula, pe, simd, block)
    elif kind == WINDOW:
        lut = f.window_lut(unit.formula, fold["SIMD"], bool(fold.get("parallel_window", 0)))
    return {"cycles": cycles(unit, fold), "lut": lut, "bram18": bram, "dsp": dsp}
