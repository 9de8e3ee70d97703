# SPDX-License-Identifier: BSD-3-Clause
"""The calibrated cost model: LUTs of the open backend's synthesis, predicted from terms of FINN's estimate.

FINN's estimate is a Xilinx 6-input-LUT figure for HLS layers; the open backend's Verilog, synthesised by Yosys
and placed by nextpnr, counts other cells (ECP5 TRELLIS_COMB, iCE40 ICESTORM_LC; ``synth_xilinx``'s LUT1..6
before Vivado's packing) and builds other things from LUTs (weight and threshold memories, multipliers that know
+-1 weights). Per target (an open board's FPGA family, or ``xilinx`` for ``synth_xilinx``), a least-squares fit
of the relative errors, without intercept, of the synthesised LUTs of a few builds on some of these terms:

- ``product``: the multiplier bits, sum over MVAUs of PE * SIMD * weight bits * input bits (+-1 weights: 1 bit);
- ``fixed``: FINN's fixed LUTs (300 per MVAU, the sliding windows);
- ``memory``: FINN's LUTs for weight and threshold memories held in LUTs (``ram_style=distributed``);
- ``datapath`` (= ``xnor`` + ``integer``): FINN's multiplier, adder-tree and accumulator LUTs, XNOR-popcount layers
  apart from integer ones; ``total``: FINN's whole LUT estimate.

:data:`MODELS` lists the fits tried; a target takes the one with the smallest leave-one-out error (each build
predicted by the fit of the others) among those it has enough builds for, else one scale on ``total``.
The builds, the fit, its error and the leave-one-out error live in ``hwq/cost/calibration.json``; :func:`fit`
remakes it from the builds listed there (``python -m hwq.cost.calibration``; ``scripts/calibrate_cost_model.py``
synthesises new ones), each build's terms from the cost model itself.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from hwq.errors import ConfigError

CALIBRATION_FILE = Path(__file__).with_name("calibration.json")
#: The fits tried. A target with more builds than a fit's coefficients plus one takes the fit whose leave-one-out
#: error is smallest; otherwise one scale on FINN's total (``total``, the last).
MODELS = (("product", "fixed"), ("product", "fixed", "memory"), ("datapath", "fixed"), ("xnor", "integer", "fixed"),
          ("total",))
#: FINN's fixed LUTs per HLS MVAU (``c0`` of ``MVAU_hls.lut_estimation``).
MVAU_FIXED_LUT = 300


def features(units, costs: list[dict[str, int]], folding) -> dict[str, float]:
    """The terms of a design's FINN LUT estimate the fits use (see the module docstring)."""
    from hwq.cost import finn_formulas as f

    terms = {"xnor": 0.0, "integer": 0.0, "fixed": 0.0, "memory": 0.0, "product": 0.0}
    for unit, c in zip(units, costs):
        if unit.layer.kind == "mvau":
            m = unit.formula
            # FINN's DSP-based MVAU_rtl has no LUT estimate; the open backend builds it from LUTs like the others
            lut = c["lut"] if not m.rtl else f.mvau_lut(replace(m, rtl=False), folding[unit.name]["PE"],
                                                        folding[unit.name]["SIMD"])
            terms["xnor" if m.w == 1 and m.a == 1 else "integer"] += lut - MVAU_FIXED_LUT
            terms["fixed"] += MVAU_FIXED_LUT
            pe, simd = folding[unit.name]["PE"], folding[unit.name]["SIMD"]
            terms["memory"] += f.mvau_distributed_memory_lut(m, pe, simd)
            terms["product"] += pe * simd * (1 if m.bipolar_weights else m.w) * m.a
        else:
            terms["fixed"] += c["lut"]
    terms["datapath"] = terms["xnor"] + terms["integer"]
    terms["total"] = terms["datapath"] + terms["fixed"]
    return terms


@dataclass(frozen=True)
class Calibration:
    """One target's fit: LUT_synth ~ sum(coefficient * feature)."""

    target: str
    coefficients: dict[str, float]
    fit: dict[str, Any]

    def predict(self, units, costs: list[dict[str, int]], folding) -> int:
        terms = features(units, costs, folding)
        return int(round(sum(value * terms[name] for name, value in self.coefficients.items())))

    def describe(self) -> dict[str, Any]:
        return {"target": self.target, "coefficients": self.coefficients, **self.fit}


def target_of(board) -> str:
    """The synthesis a board's calibration is for: its open FPGA family, else ``xilinx`` (``synth_xilinx``)."""
    return board.fpga.get("family", "xilinx") if board.shell == "open" else "xilinx"


def calibration_for(board) -> Calibration:
    """The fit for ``board``'s target; a target without one is a one-line ConfigError naming those with one."""
    data = json.loads(CALIBRATION_FILE.read_text())
    target = target_of(board)
    fits = data["targets"]
    if target not in fits:
        raise ConfigError(f"--calibrated: no calibration for {board.name} ({target}); calibrated targets: "
                          f"{', '.join(fits)} ({CALIBRATION_FILE.name})")
    entry = fits[target]
    return Calibration(target, entry["coefficients"], {k: v for k, v in entry.items() if k != "coefficients"})


def _design_features(point: dict[str, Any]) -> tuple[dict[str, float], int]:
    """A calibration build's FINN terms and FINN LUT total, from the cost model at its model, bits and folding."""
    from hwq.cost.model import _board, describe_model, layer_bits
    from hwq.cost.finn_formulas import dsp_block
    from hwq.cost.folding import set_folding
    from hwq.cost.units import cost, resolve

    layers = describe_model(point["model"], point["dataset"], point["wbits"], point["abits"])
    _, part = _board(point["board"])
    block = dsp_block(part)
    units = resolve(layers.layers, layer_bits(layers, point.get("precision")), block)
    if "folding" in point:
        from hwq.cost.model import _check_folding

        folding = _check_folding(units, point["folding"])
    else:
        folding = set_folding(units, point["target_cycles"])
    costs = [cost(u, folding[u.name], block) for u in units]
    return features(units, costs, folding), sum(c["lut"] for c in costs)


def _relative_lstsq(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Least squares of the relative errors (each build's row divided by its LUTs): a small design counts as
    much as a large one."""
    return np.linalg.lstsq(x / y[:, None], np.ones_like(y), rcond=None)[0]


def _leave_one_out(x: np.ndarray, y: np.ndarray) -> list[float]:
    """Each build's relative error when predicted by the fit of the others."""
    errors = []
    for i in range(len(y)):
        keep = [j for j in range(len(y)) if j != i]
        errors.append(float(abs(x[i] @ _relative_lstsq(x[keep], y[keep]) - y[i]) / y[i]))
    return errors


def fit(points: list[dict[str, Any]]) -> dict[str, Any]:
    """Least-squares coefficients per target, the fit error on the builds and, with 3 or more builds, the
    leave-one-out error (each build predicted by the fit of the others)."""
    targets: dict[str, Any] = {}
    by_target: dict[str, list] = {}
    for point in points:
        terms, finn_lut = _design_features(point)
        point["finn_lut"] = finn_lut
        by_target.setdefault(point["target"], []).append((point, terms))
    for target, rows in by_target.items():
        y = np.array([p["synth_lut"] for p, _ in rows], dtype=float)
        candidates = [(_leave_one_out(np.array([[t[k] for k in m] for _, t in rows]), y), m) for m in MODELS
                      if len(rows) > len(m) + 1]
        loo, names = min(candidates, key=lambda c: max(c[0])) if candidates else ([], MODELS[-1])
        x = np.array([[t[k] for k in names] for _, t in rows])
        coefficients = {k: round(float(c), 4) for k, c in zip(names, _relative_lstsq(x, y))}
        predicted = x @ np.array([coefficients[k] for k in names])
        errors = [float(abs(p - t) / t) for p, t in zip(predicted, y)]
        targets[target] = {
            "coefficients": coefficients, "builds": len(rows),
            "fit_error_max_pct": round(100 * max(errors), 1),
            "fit_error_mean_pct": round(100 * float(np.mean(errors)), 1),
            "loo_error_max_pct": round(100 * max(loo), 1) if loo else None,
            "features": list(names),
            "note": "exact by construction: as many builds as coefficients" if len(rows) <= len(names) else "",
            "residuals_pct": [round(100 * float((p - t) / t), 1) for p, t in zip(predicted, y)],
        }
    return {"targets": targets, "points": points}


def main() -> None:
    """Refit ``calibration.json`` from the builds it lists."""
    data = json.loads(CALIBRATION_FILE.read_text())
    points = [{k: v for k, v in p.items() if k != "finn_lut"} for p in data["points"]]
    result = fit(points)
    result = {"about": data.get("about", ""), **result}
    CALIBRATION_FILE.write_text(json.dumps(result, indent=1) + "\n")
    for target, entry in result["targets"].items():
        print(target, entry)


if __name__ == "__main__":
    main()
