# SPDX-License-Identifier: BSD-3-Clause
"""The calibrated cost model: LUTs of the open backend's synthesis, predicted from FINN's analytical terms.

FINN's estimate is a Xilinx 6-input-LUT figure for HLS layers; the open backend's Verilog, synthesised by Yosys
and placed by nextpnr, counts other cells (ECP5 TRELLIS_COMB, iCE40 ICESTORM_LC; ``synth_xilinx``'s LUT1..6
before Vivado's packing). Per target (an open board's FPGA family, or ``xilinx`` for ``synth_xilinx``), a least-
squares fit (of relative errors) without intercept of the synthesised LUTs of a few builds on two of the model's terms:

    LUT_synth ~ a * datapath + b * fixed

``datapath``: the MVAUs' multiplier, adder-tree and accumulator LUTs (FINN's ``1.1 * P * (...)``); ``fixed``: the
rest (300 per MVAU, the sliding windows). A target with a single build gets one scale on FINN's total.
The builds, the coefficients and the fit error live in ``hwq/cost/calibration.json``; :func:`fit` remakes it from
the builds listed there (``python -m hwq.cost.calibration``), each build's FINN terms from the cost model itself.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hwq.errors import ConfigError

CALIBRATION_FILE = Path(__file__).with_name("calibration.json")
FEATURES = ("datapath", "fixed")
#: FINN's fixed LUTs per HLS MVAU (``c0`` of ``MVAU_hls.lut_estimation``).
MVAU_FIXED_LUT = 300


def features(units, costs: list[dict[str, int]]) -> dict[str, float]:
    """The two terms of a design's FINN LUT estimate (see the module docstring)."""
    datapath = fixed = 0.0
    for unit, c in zip(units, costs):
        if unit.layer.kind == "mvau" and c["lut"]:
            datapath += c["lut"] - MVAU_FIXED_LUT
            fixed += MVAU_FIXED_LUT
        else:
            fixed += c["lut"]
    return {"datapath": datapath, "fixed": fixed}


@dataclass(frozen=True)
class Calibration:
    """One target's fit: LUT_synth ~ sum(coefficient * feature)."""

    target: str
    coefficients: dict[str, float]
    fit: dict[str, Any]

    def predict(self, units, costs: list[dict[str, int]]) -> int:
        terms = features(units, costs)
        if set(self.coefficients) == {"scale"}:
            return int(round(self.coefficients["scale"] * sum(terms.values())))
        return int(round(sum(self.coefficients[k] * terms[k] for k in FEATURES)))

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
    return features(units, costs), sum(c["lut"] for c in costs)


def _relative_lstsq(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Least squares of the relative errors (each build's row divided by its LUTs): a small design counts as
    much as a large one."""
    return np.linalg.lstsq(x / y[:, None], np.ones_like(y), rcond=None)[0]


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
        if len(rows) >= 2:
            x = np.array([[t[k] for k in FEATURES] for _, t in rows])
            coef = _relative_lstsq(x, y)
            coefficients = {k: round(float(c), 4) for k, c in zip(FEATURES, coef)}
            predicted = x @ np.array([coefficients[k] for k in FEATURES])
            loo = []
            if len(rows) >= 3:
                for i in range(len(rows)):
                    keep = [j for j in range(len(rows)) if j != i]
                    c = _relative_lstsq(x[keep], y[keep])
                    loo.append(float(abs(x[i] @ c - y[i]) / y[i]))
        else:
            total = np.array([sum(t.values()) for _, t in rows])
            coefficients = {"scale": round(float(y[0] / total[0]), 4)}
            predicted, loo = coefficients["scale"] * total, []
        errors = [float(abs(p - t) / t) for p, t in zip(predicted, y)]
        targets[target] = {
            "coefficients": coefficients, "builds": len(rows),
            "fit_error_max_pct": round(100 * max(errors), 1),
            "fit_error_mean_pct": round(100 * float(np.mean(errors)), 1),
            "loo_error_max_pct": round(100 * max(loo), 1) if loo else None,
            "note": "exact by construction: as many builds as coefficients" if len(rows) <= len(coefficients) else "",
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
