#!/usr/bin/env python
# SPDX-License-Identifier: BSD-3-Clause
"""Benchmark of ``hwq quantize`` (docs/mixed_precision.md): float runs, then round-to-nearest and Attention Round at
each bit-width from the same float weights, with the same scales and activation calibration; test top-1 and the
seconds each quantization took. A float run already under ``--runs`` is reused.

    OMP_NUM_THREADS=1 python scripts/bench_ptq.py --dataset digits --epochs 10 --seeds 0,1,2 --bits 2,3,4 \\
        --runs runs/bench-ptq --results benchmarks/ptq_digits_tfc
    OMP_NUM_THREADS=1 python scripts/bench_ptq.py --model mobilenet_tiny --float-option pad_value=0 --epochs 3 ...
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hwq.ptq import QuantizeConfig, run_quantize  # noqa: E402
from hwq.train import TrainConfig, run_train  # noqa: E402
from hwq.train.rundir import METRICS_FILE  # noqa: E402


def float_run(runs: Path, dataset: str, model: str, epochs: int, seed: int, options: dict) -> tuple[Path, float]:
    out = runs / f"{model}-float-{dataset}-s{seed}"
    metrics_path = out / METRICS_FILE
    if metrics_path.is_file() and json.loads(metrics_path.read_text()).get("complete"):
        return out, json.loads(metrics_path.read_text())["test_acc"]
    config = TrainConfig(model=model, dataset=dataset, quant="float", epochs=epochs, seed=seed, threads=1,
                         model_options=options)
    return out, run_train(config, out, progress=False, overwrite=out.exists())["test_acc"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--model", default="tfc")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--bits", default="2,4")
    parser.add_argument("--calibration", type=int, default=1024)
    parser.add_argument("--budget-bits", dest="budget_bits", type=float,
                        help="also a lossy-coding allocation at this average weight bits "
                             "(activations: the lowest --bits)")
    parser.add_argument("--float-option", dest="float_options", action="append", default=[], metavar="KEY=VALUE",
                        help="model option of the float runs, e.g. pad_value=0 for mobilenet_tiny (VALUE as YAML)")
    parser.add_argument("--runs", default="runs/bench-ptq")
    parser.add_argument("--results", default="benchmarks/ptq")
    args = parser.parse_args()
    runs = Path(args.runs)
    seeds = [int(s) for s in args.seeds.split(",")]
    options = {k: yaml.safe_load(v) for k, _, v in (item.partition("=") for item in args.float_options)}
    bits = [int(b) for b in args.bits.split(",")]
    rows: dict[str, list[dict]] = {}
    for seed in seeds:
        fp, fp_acc = float_run(runs, args.dataset, args.model, args.epochs, seed, options)
        rows.setdefault("float", []).append({"seed": seed, "test_acc": fp_acc, "seconds": None})
        cells = [(f"{m} W{b}A{b}", QuantizeConfig(method=m, wbits=b, abits=b, calibration=args.calibration))
                 for b in bits for m in ("nearest", "attention-round")]
        if args.budget_bits is not None:
            cells += [(f"{m} lossy-coding {args.budget_bits} bits A{min(bits)}",
                       QuantizeConfig(method=m, abits=min(bits), calibration=args.calibration,
                                      bit_allocation="lossy-coding", budget_bits=args.budget_bits))
                      for m in ("nearest", "attention-round")]
        for name, config in cells:
            out = runs / f"{fp.name}-{name.replace(' ', '-').lower()}"
            metrics = run_quantize(fp, config, out, overwrite=True)
            weight_bits = [layer["bits"] for layer in metrics["ptq"]["layers"] if layer["role"] == "weight"]
            rows.setdefault(name, []).append({"seed": seed, "test_acc": metrics["test_acc"], "bits": weight_bits,
                                              "seconds": metrics["ptq"]["seconds"]})
            print(f"seed {seed} {name}: {100 * metrics['test_acc']:.2f}% ({metrics['ptq']['seconds']:.1f} s, "
                  f"weight bits {weight_bits})", flush=True)
    lines = [f"{args.model} on {args.dataset}, float {args.epochs} epochs, seeds {args.seeds}, "
             f"{args.calibration} calibration images", "",
             "| run | test top-1 (mean over seeds) | min..max | seconds (mean) | weight bits |",
             "|---|---|---|---|---|"]
    for name, cell in rows.items():
        accs = [100 * r["test_acc"] for r in cell]
        secs = [r["seconds"] for r in cell if r["seconds"] is not None]
        lines.append(f"| {name} | {statistics.mean(accs):.2f} % | {min(accs):.2f}..{max(accs):.2f} | "
                     f"{statistics.mean(secs):.1f} | {cell[0].get('bits', '')} |" if secs else
                     f"| {name} | {statistics.mean(accs):.2f} % | {min(accs):.2f}..{max(accs):.2f} | | |")
    results = Path(args.results)
    results.parent.mkdir(parents=True, exist_ok=True)
    results.with_suffix(".json").write_text(json.dumps(rows, indent=2))
    results.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
