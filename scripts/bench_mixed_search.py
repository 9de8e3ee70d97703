#!/usr/bin/env python
# SPDX-License-Identifier: BSD-3-Clause
"""Benchmark of the bit-width searches (docs/mixed_precision.md, "Searching bit-widths under a budget"): budgets as
fractions of uniform W{base}A{abits}'s LUTs at a target fps on a board (the cost model, as ``hwq cost``); per budget,
``--method bmpq`` and ``--method saq-gen`` against the widest uniform precision within the same budget (plain
and, for saq-gen, with SAQ's objective too) and against uniform training at the map bmpq chose (``--precision``
from the start: the map without the search), same epochs and seeds. Runs already under ``--runs`` are reused.

    OMP_NUM_THREADS=1 python scripts/bench_mixed_search.py --epochs 10 --seeds 0,1,2 --fractions 0.25,0.5,1,1.5,2 \\
        --runs runs/bench-mixed --results benchmarks/mixed_search_digits_tfc
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hwq.cost import cost_under_budget, describe_model, parse_budget  # noqa: E402
from hwq.cost.layers import MVAU  # noqa: E402
from hwq.errors import ConfigError  # noqa: E402
from hwq.train import TrainConfig, run_train  # noqa: E402
from hwq.train.rundir import METRICS_FILE  # noqa: E402


def uniform_map(layers, wbits: int) -> dict[str, int]:
    return {layer.weight: wbits for layer in layers.layers if layer.kind == MVAU}


def trained(runs: Path, name: str, config: TrainConfig) -> dict:
    out = runs / name
    path = out / METRICS_FILE
    if path.is_file() and json.loads(path.read_text()).get("complete"):
        return json.loads(path.read_text())
    return run_train(config, out, progress=False, overwrite=out.exists())


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="tfc")
    p.add_argument("--dataset", default="digits")
    p.add_argument("--board", default="pynq-z2")
    p.add_argument("--fps", type=float, default=1e6)
    p.add_argument("--base-wbits", type=int, default=2, help="the uniform precision the budgets are fractions of")
    p.add_argument("--abits", type=int, default=2)
    p.add_argument("--fractions", default="0.25,0.5,1,1.5,2")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--runs", type=Path, default=Path("runs/bench-mixed"))
    p.add_argument("--results", type=Path, default=Path("benchmarks/mixed_search_digits_tfc"))
    args = p.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    layers = describe_model(args.model, args.dataset, args.base_wbits, args.abits)
    speed = parse_budget(f"fps={args.fps}")
    lut_of = {w: cost_under_budget(layers, uniform_map(layers, w), args.board, speed)["total"]["lut"]
              for w in range(1, 9)}
    base_lut = lut_of[args.base_wbits]
    common = dict(model=args.model, dataset=args.dataset, abits=args.abits, epochs=args.epochs, threads=1)
    rows, started = [], time.perf_counter()
    for fraction in [float(f) for f in args.fractions.split(",")]:
        budget_text = f"lut={round(fraction * base_lut)},fps={args.fps:g}"
        budget = parse_budget(budget_text)
        fitting = [w for w in range(1, 9) if lut_of[w] <= budget["lut"]]
        row = {"fraction": fraction, "budget": budget_text, "uniform_bits": max(fitting) if fitting else None}
        if not fitting:
            try:
                TrainConfig(method="bmpq", budget=budget_text, board=args.board, wbits=args.base_wbits, **common)
                from hwq.mixed.allocate import allocate, searched_layers
                allocate(layers, {n: {b: float(8 - b) for b in (1, 2, 4, 8)} for n in searched_layers(layers)},
                         args.board, budget)
            except ConfigError as err:
                row["infeasible"] = str(err)
            rows.append(row)
            continue
        entries = {"uniform": ("uniform", row["uniform_bits"]), "saq": ("saq", row["uniform_bits"]),
                   "bmpq": ("bmpq", None), "saq-gen": ("saq-gen", None), "bmpq-map": ("uniform", "bmpq")}
        for label, (method, wbits) in entries.items():
            accs, maps, luts, seconds = [], [], [], []
            for seed in seeds:
                if wbits == "bmpq":  # the map bmpq chose for this seed, trained with it from the start
                    chosen = json.loads((args.runs / f"bmpq-{budget_text.replace(',', '-')}-s{seed}" / METRICS_FILE)
                                        .read_text())["model_spec"]["precision"]
                    name = "uniform-map-" + "-".join(str(chosen[n]) for n in uniform_map(layers, 1)) + f"-s{seed}"
                    config = TrainConfig(method=method, wbits=args.base_wbits, seed=seed, precision=chosen, **common)
                elif wbits is not None:
                    name = f"{method}-w{wbits}a{args.abits}-s{seed}"
                    config = TrainConfig(method=method, wbits=wbits, seed=seed, **common)
                else:
                    name = f"{method}-{budget_text.replace(',', '-')}-s{seed}"
                    config = TrainConfig(method=method, wbits=args.base_wbits, seed=seed, budget=budget_text,
                                         board=args.board, **common)
                metrics = trained(args.runs, name, config)
                precision = metrics["model_spec"]["precision"] or uniform_map(layers, wbits)
                cost = cost_under_budget(layers, precision, args.board, budget)
                assert cost["within_budget"], (name, cost["over_budget"])
                accs.append(100 * metrics["test_acc"])
                maps.append("/".join(str(precision[n]) for n in uniform_map(layers, 1)))
                luts.append(cost["total"]["lut"])
                seconds.append(metrics["seconds"])
            row[label] = {"acc": accs, "acc_mean": statistics.mean(accs), "maps": maps, "lut": luts,
                          "seconds_mean": statistics.mean(seconds)}
        rows.append(row)
    record = {"model": args.model, "dataset": args.dataset, "board": args.board, "fps": args.fps,
              "abits": args.abits, "epochs": args.epochs, "seeds": seeds, "base": f"W{args.base_wbits}A{args.abits}",
              "base_lut": base_lut, "uniform_lut": lut_of, "rows": rows,
              "seconds": round(time.perf_counter() - started, 1)}
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.with_suffix(".json").write_text(json.dumps(record, indent=2))
    args.results.with_suffix(".md").write_text(markdown(record))
    print(markdown(record))
    return 0


def markdown(record: dict) -> str:
    lines = [f"{record['dataset']} {record['model']}, A{record['abits']}, {record['board']} at "
             f"{record['fps']:,.0f} fps, {record['epochs']} epochs, seeds {record['seeds']}; budgets are fractions "
             f"of uniform {record['base']}'s {record['base_lut']:,} LUT (hwq cost model). Test top-1 mean "
             "(min..max); the maps are W bits of the 4 layers per seed; the LUTs are the cost model's.", "",
             "| budget | method | weights | LUT | top-1 mean | min..max | s/run |", "|---|---|---|---|---|---|---|"]
    for row in record["rows"]:
        head = f"{100 * row['fraction']:.0f} % ({row['budget']})"
        if "infeasible" in row:
            lines.append(f"| {head} | all | nothing fits: `{row['infeasible']}` | | | | |")
            continue
        for label in ("uniform", "saq", "bmpq", "bmpq-map", "saq-gen"):
            r = row[label]
            name = f"{label} W{row['uniform_bits']}" if label in ("uniform", "saq") else \
                "uniform at bmpq's map" if label == "bmpq-map" else label
            lines.append(f"| {head} | {name} | {', '.join(sorted(set(r['maps'])))} | "
                         f"{'/'.join(f'{v:,}' for v in sorted(set(r['lut'])))} | {r['acc_mean']:.2f} % | "
                         f"{min(r['acc']):.2f}..{max(r['acc']):.2f} | {r['seconds_mean']:.1f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
