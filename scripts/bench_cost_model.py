# SPDX-License-Identifier: BSD-3-Clause
"""The cost model (hwq.cost) against FINN's estimates of built models, and its query time against a FINN build's.
Writes benchmarks/cost_model.{json,md}.

For each point (model, bits, board, folding) the model is exported untrained and built by hwq's FINN build up to
its estimate step (hwq.cost.reference); the cost model answers the same question from the PyTorch model. Reported:
the LUT error of the total and the largest per-layer error, whether cycles, BRAM18 and the folding agree, the query
time and the build's. The calibrated model's error against synthesised builds comes from hwq/cost/calibration.json
(scripts/calibrate_cost_model.py synthesises builds for it).

    OMP_NUM_THREADS=1 .venv/bin/python scripts/bench_cost_model.py      # about 5 minutes on 2 shared cores
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from hwq._io import write_json
from hwq.cost import describe_model, model_cost
from hwq.cost.calibration import CALIBRATION_FILE
from hwq.cost.reference import finn_reference

OUT = Path(__file__).resolve().parents[1] / "benchmarks"
TFC_MIXED_A = {"features.2": 1, "features.4": 4, "features.6": 4, "features.8": 1, "features.14": 4}
TFC_MIXED_B = {"features.2": 4, "features.6": 2, "features.10": 1, "features.12": 1, "features.14": 2}
CNV_MIXED = {"conv_features.1": 2, "conv_features.3": 2, "conv_features.4": 4, "conv_features.6": 1,
             "conv_features.11": 2, "conv_features.13": 4, "conv_features.15": 4, "linear_features.0": 2,
             "linear_features.8": 4}
#: (model, dataset, wbits, abits, precision map name, board, target fps or None for the fastest fitting folding)
POINTS = [
    ("tfc", "mnist", 1, 1, None, "pynq-z2", None),
    ("tfc", "mnist", 2, 2, None, "pynq-z2", None),
    ("tfc", "mnist", 4, 4, None, "pynq-z2", None),
    ("tfc", "mnist", 2, 2, "TFC_MIXED_A", "pynq-z2", None),
    ("tfc", "mnist", 2, 2, "TFC_MIXED_B", "pynq-z2", None),
    ("tfc", "mnist", 1, 1, None, "pynq-z2", 1e5),
    ("tfc", "mnist", 4, 4, None, "zcu104", 1e6),
    ("tfc", "mnist", 2, 2, "TFC_MIXED_A", "zcu104", 1e5),
    ("cnv", "cifar10", 1, 1, None, "pynq-z2", None),
    ("cnv", "cifar10", 2, 2, None, "pynq-z2", None),
    ("cnv", "cifar10", 4, 4, None, "zcu104", 1000),
    ("cnv", "cifar10", 1, 1, "CNV_MIXED", "zcu104", None),
]
MAPS = {"TFC_MIXED_A": TFC_MIXED_A, "TFC_MIXED_B": TFC_MIXED_B, "CNV_MIXED": CNV_MIXED}
QUERY_REPEATS = 20


def compare(point: tuple, work: Path) -> dict:
    model, dataset, wbits, abits, map_name, board, fps = point
    precision = MAPS.get(map_name, {})
    finn = finn_reference(work, model, dataset, wbits, abits, precision, board, fps)
    started = time.perf_counter()
    layers = describe_model.__wrapped__(model, dataset, wbits, abits)  # uncached: the first query's cost
    describe_s = time.perf_counter() - started
    cost = model_cost(layers, precision, board=board, target_fps=fps)
    started = time.perf_counter()
    for _ in range(QUERY_REPEATS):
        model_cost(layers, precision, board=board, target_fps=fps)
    query_ms = 1000 * (time.perf_counter() - started) / QUERY_REPEATS
    layer_errors, same_folding = [], True
    for ours, theirs in zip(cost["layers"], finn["layers"], strict=True):
        if theirs["LUT"]:
            layer_errors.append(100 * (ours["lut"] - theirs["LUT"]) / theirs["LUT"])
        same_folding &= all(ours.get(a) == v for a, v in theirs["folding"].items() if a in ("PE", "SIMD"))
    total, ftotal = cost["total"], finn["total"]
    return {
        "model": model, "dataset": dataset, "bits": f"W{wbits}A{abits}" + (f" + {map_name}" if map_name else ""),
        "precision": precision, "board": board, "folding": f"target {fps:g} fps" if fps else "fastest fitting",
        "finn_lut": ftotal["LUT"], "model_lut": total["lut"],
        "lut_error_pct": round(100 * (total["lut"] - ftotal["LUT"]) / ftotal["LUT"], 2),
        "max_layer_lut_error_pct": round(max(layer_errors, key=abs), 2),
        "finn_bram18": ftotal["BRAM_18K"], "model_bram18": total["bram18"], "finn_dsp": ftotal["DSP"],
        "model_dsp": total["dsp"], "finn_max_cycles": ftotal["max_cycles"], "model_max_cycles": total["max_cycles"],
        "same_folding": same_folding, "finn_build_s": round(finn["seconds"], 1), "describe_s": round(describe_s, 3),
        "query_ms": round(query_ms, 2),
    }


def recorded_rows() -> list[dict]:
    """The cost model against the FINN estimates recorded in benchmarks/dataflow.json (no build needed)."""
    rows = []
    for r in json.loads((OUT / "dataflow.json").read_text())["rows"]:
        name, bits = r["model"].split("-")
        model = name.lower()
        dataset = "cifar10" if model == "cnv" else "mnist"
        cost = model_cost(describe_model(model, dataset, int(bits[1]), int(bits[3])), board=r["board"])
        total = cost["total"]
        row = {"model": r["model"], "board": r["board"]}
        if "error" in r:
            row.update(finn="no folding fits", model_says=cost["folding_mode"])
        else:
            row.update(finn_lut=r["LUT"], model_lut=total["lut"],
                       lut_error_pct=round(100 * (total["lut"] - r["LUT"]) / r["LUT"], 2),
                       finn_bram18=r["BRAM18"], model_bram18=total["bram18"], finn_max_cycles=r["max_cycles"],
                       model_max_cycles=total["max_cycles"])
        rows.append(row)
    return rows


def markdown(rows: list[dict], calibration: dict, recorded: list[dict]) -> str:
    lines = ["<!-- SPDX-License-Identifier: BSD-3-Clause -->",
             "Measured by scripts/bench_cost_model.py: hwq's cost model (hwq.cost) against FINN's estimate of the "
             "same model built by hwq's FINN build (untrained, random BatchNorm statistics) up to its estimate step.",
             "", "| model | bits | board | folding | FINN LUT | model LUT | error | worst layer | BRAM18 FINN / model "
             "| DSP FINN / model | max cycles FINN / model | same PE/SIMD | FINN build (s) | describe (s) "
             "| query (ms) |",
             "| --- | --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: |"]
    for r in rows:
        lines.append(f"| {r['model']} ({r['dataset']}) | {r['bits']} | {r['board']} | {r['folding']} | "
                     f"{r['finn_lut']:,} | {r['model_lut']:,} | {r['lut_error_pct']:+.2f} % | "
                     f"{r['max_layer_lut_error_pct']:+.2f} % | {r['finn_bram18']} / {r['model_bram18']} | "
                     f"{r['finn_dsp']} / {r['model_dsp']} | {r['finn_max_cycles']:,} / {r['model_max_cycles']:,} | "
                     f"{'yes' if r['same_folding'] else 'no'} | {r['finn_build_s']} | {r['describe_s']} | "
                     f"{r['query_ms']} |")
    lines += ["", "Against the FINN estimates recorded in benchmarks/dataflow.json (fastest fitting folding, 80 % of "
              "the board):", "", "| model | board | FINN LUT / model | error | BRAM18 FINN / model | "
              "max cycles FINN / model |", "| --- | --- | ---: | ---: | ---: | ---: |"]
    for r in recorded:
        if "finn_lut" not in r:
            lines.append(f"| {r['model']} | {r['board']} | {r['finn']}; model: {r['model_says']} | | | |")
            continue
        lines.append(f"| {r['model']} | {r['board']} | {r['finn_lut']:,} / {r['model_lut']:,} | "
                     f"{r['lut_error_pct']:+.2f} % | {r['finn_bram18']} / {r['model_bram18']} | "
                     f"{r['finn_max_cycles']:,} / {r['model_max_cycles']:,} |")
    lines += ["", "Calibrated model (hwq/cost/calibration.json: LUT_synth ~ sum of coefficient * term, least squares "
              "of relative errors; the terms in hwq/cost/calibration.py):", "",
              "| target | builds | coefficients | fit error max / mean | leave-one-out max | residuals |",
              "| --- | ---: | --- | ---: | ---: | --- |"]
    for target, entry in calibration["targets"].items():
        coef = ", ".join(f"{k} {v}" for k, v in entry["coefficients"].items())
        loo = f"{entry['loo_error_max_pct']} %" if entry["loo_error_max_pct"] is not None else "n/a"
        residuals = ", ".join(f"{x:+.1f} %" for x in entry["residuals_pct"])
        lines.append(f"| {target} | {entry['builds']} | {coef} | {entry['fit_error_max_pct']} % / "
                     f"{entry['fit_error_mean_pct']} % | {loo} | {residuals}"
                     f"{' (' + entry['note'] + ')' if entry['note'] else ''} |")
    lines += ["", "| target | build | FINN LUT | synthesised LUT |", "| --- | --- | ---: | ---: |"]
    for p in calibration["points"]:
        lines.append(f"| {p['target']} | {p['model']} W{p['wbits']}A{p['abits']} {p['dataset']} on {p['board']}: "
                     f"{p['source']} | {p['finn_lut']:,} | {p['synth_lut']:,} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", type=int, nargs="*", help="indices of POINTS to run (default: all)")
    parser.add_argument("--render", action="store_true", help="no builds: rewrite the files from the rows in "
                                                              "benchmarks/cost_model.json and the current calibration")
    args = parser.parse_args()
    if args.render:
        rows = json.loads((OUT / "cost_model.json").read_text())["rows"]
    else:
        chosen = [POINTS[i] for i in args.only] if args.only else POINTS
        rows = []
        with tempfile.TemporaryDirectory() as tmp:
            for i, point in enumerate(chosen):
                rows.append(compare(point, Path(tmp) / f"point{i}"))
                print(json.dumps(rows[-1]), flush=True)
    calibration = json.loads(CALIBRATION_FILE.read_text())
    recorded = recorded_rows()
    summary = {"max_abs_lut_error_pct": max(abs(r["lut_error_pct"]) for r in rows),
               "max_abs_layer_lut_error_pct": max(abs(r["max_layer_lut_error_pct"]) for r in rows),
               "all_same_folding": all(r["same_folding"] for r in rows),
               "all_same_bram_cycles_dsp": all(r["finn_bram18"] == r["model_bram18"] and r["finn_dsp"] == r["model_dsp"]
                                               and r["finn_max_cycles"] == r["model_max_cycles"] for r in rows)}
    write_json(OUT / "cost_model.json", {"kind": "hwq cost model vs FINN's estimate (finn-plus 1.6.1) of the "
                                         "built model", "summary": summary, "rows": rows,
                                         "recorded": recorded, "calibration": calibration["targets"]})
    text = markdown(rows, calibration, recorded) + "\nSummary: " + json.dumps(summary) + "\n"
    (OUT / "cost_model.md").write_text(text)
    print(summary)


if __name__ == "__main__":
    main()
