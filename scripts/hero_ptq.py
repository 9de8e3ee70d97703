#!/usr/bin/env python3
# SPDX-License-Identifier: BSD-3-Clause
"""HERO's post-training-quantization claim on a small case: a float model trained plainly and with ``--method hero``,
then its weights rounded per tensor to 8, 4 and 2 bits (:mod:`hwq.quant.ptq`), test accuracy of each.

    PYTHONPATH=. python scripts/hero_ptq.py --out /tmp/hero-ptq --epochs 10 --lr 0.01 \\
        --method-option rho=0.05 --method-option hero_lambda=1

Prints one line per run and bit-width (and a JSON summary with ``--json``). One seed on digits: a sign of the
effect, not a benchmark.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import yaml


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="folder for the two runs")
    parser.add_argument("--model", default="tfc")
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--bits", type=int, nargs="+", default=[8, 4, 2])
    parser.add_argument("--method-option", action="append", default=[], metavar="KEY=VALUE",
                        help="an option of the hero objective (rho, hero_lambda)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON too")
    args = parser.parse_args(argv)

    from hwq.data import load_dataset
    from hwq.quant.ptq import quantize_weights
    from hwq.train import TrainConfig, run_train
    from hwq.train.loop import evaluate, load_trained_model

    options = {k: yaml.safe_load(v) for k, v in (item.split("=", 1) for item in args.method_option)}
    dataset = load_dataset(args.dataset)
    results = {}
    for name, method, method_options in (("plain", None, {}), ("hero", "hero", options)):
        config = TrainConfig(model=args.model, dataset=args.dataset, method=method, quant="float",
                             epochs=args.epochs, lr=args.lr, seed=args.seed, threads=1, method_options=method_options)
        run = Path(args.out) / name
        metrics = run_train(config, run, overwrite=run.exists(), progress=False)
        model = load_trained_model(run)[0]
        row = {"float": metrics["test_acc"], "seconds_per_epoch": sum(h["seconds"] for h in metrics["history"])
               / len(metrics["history"])}
        for bits in args.bits:
            row[f"w{bits}"] = evaluate(quantize_weights(model, bits), dataset.test_x, dataset.test_y)
        results[name] = row
        print(f"{name:<6} " + " ".join(f"{k} {v:.4f}" for k, v in row.items()))
    if args.json:
        print(json.dumps(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
