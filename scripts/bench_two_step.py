#!/usr/bin/env python
# SPDX-License-Identifier: BSD-3-Clause
"""Benchmark: the two-step binary recipe (``--recipe two-step``) against plain binarization, same model, data,
total epochs and seeds.

Rows: full precision (``--quant float``, also the teacher), plain W1A1 (cosine, weight scale 1), plain W1A1 with the
mean-|w| weight scale, two-step without a teacher, two-step distilling from the full-precision run. Runs land in
``--runs/NAME`` and are reused when complete. Writes ``--results`` (JSON) and the same path with ``.md``.

    python scripts/bench_two_step.py --dataset digits --epochs 20 --seeds 0 1 2
    python scripts/bench_two_step.py --dataset mnist --epochs 10 --seeds 0
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hwq.train import TrainConfig, run_train  # noqa: E402

#: row -> the TrainConfig settings that make it (a teacher row name in "teacher" is replaced by its run folder).
ROWS = {
    "float (teacher)": dict(quant="float"),
    "plain W1A1": dict(),
    "plain W1A1, mean-|w| scale": dict(model_options={"weight_scale": "mean_abs"}),
    "two-step W1A1": dict(recipe="two-step"),
    "two-step W1A1 + KL teacher": dict(recipe="two-step", teacher="float (teacher)"),
}
#: The last epochs averaged besides the final one (a digits epoch is noisy).
LAST = 3


def slug(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-").replace("--", "-")


def run_row(args: argparse.Namespace, name: str, seed: int) -> dict:
    settings = dict(ROWS[name])
    out = Path(args.runs) / f"{args.dataset}-{args.model}-{slug(name)}-s{seed}"
    if "teacher" in settings:
        settings["teacher"] = str(Path(args.runs) / f"{args.dataset}-{args.model}-{slug(settings['teacher'])}-s{seed}")
    config = TrainConfig(model=args.model, dataset=args.dataset, epochs=args.epochs, seed=seed, lr=args.lr,
                         threads=args.threads, data_dir=args.data_dir, train_subset=args.train_subset, **settings)
    metrics_path = out / "metrics.json"
    if metrics_path.exists() and json.loads(metrics_path.read_text()).get("complete"):
        metrics = json.loads(metrics_path.read_text())
    else:
        metrics = run_train(config, out, overwrite=out.exists(), progress=False)
    accs = [h["test_acc"] for h in metrics["history"]]
    return {"row": name, "seed": seed, "run": str(out), "test_acc": metrics["test_acc"],
            f"mean_last_{LAST}": statistics.fmean(accs[-LAST:]), "seconds": metrics["seconds"],
            "recipe": metrics.get("recipe"), "config": metrics["config"]}


def table(results: list[dict], args: argparse.Namespace) -> str:
    lines = [f"{args.model.upper()} on {args.dataset}, {args.epochs} epochs, lr {args.lr}, seeds "
             f"{' '.join(map(str, args.seeds))} (mean ± spread over seeds)", "",
             f"| row | final test acc (%) | mean of last {LAST} epochs (%) |", "|---|---|---|"]
    for name in ROWS:
        rows = [r for r in results if r["row"] == name]
        final = [100 * r["test_acc"] for r in rows]
        last = [100 * r[f"mean_last_{LAST}"] for r in rows]

        def cell(v: list[float]) -> str:
            return f"{statistics.fmean(v):.2f}" + (f" ± {statistics.pstdev(v):.2f}" if len(v) > 1 else "")

        shown = name.replace("|", "&#124;")  # a pipe would end the markdown cell
        lines.append(f"| {shown} | {cell(final)} | {cell(last)} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="digits")
    p.add_argument("--model", default="tfc")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--lr", type=float, default=0.02)
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--data-dir", dest="data_dir")
    p.add_argument("--train-subset", dest="train_subset", type=int)
    p.add_argument("--runs", default="runs/bench-two-step")
    p.add_argument("--results", default=None, help="JSON path (default: benchmarks/two_step_DATASET.json)")
    args = p.parse_args(argv)
    results_path = Path(args.results or f"benchmarks/two_step_{args.dataset}.json")
    started, results = time.time(), []
    for seed in args.seeds:
        for name in ROWS:  # the teacher row first
            results.append(run_row(args, name, seed))
            print(f"{name} seed {seed}: {100 * results[-1]['test_acc']:.2f} %", flush=True)
    record = {"command": " ".join(sys.argv), "machine": platform.platform(), "seconds": round(time.time() - started),
              "args": vars(args), "results": results}
    results_path.write_text(json.dumps(record, indent=2) + "\n")
    results_path.with_suffix(".md").write_text(table(results, args))
    print(table(results, args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
