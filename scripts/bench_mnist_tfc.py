#!/usr/bin/env python
# SPDX-License-Identifier: BSD-3-Clause
"""Benchmark: TFC-w1a1 trained on full MNIST on the CPU, exported and verified.

Brevitas' bnn_pynq reports 93.17 % test accuracy for this network (../shared/docs/ANCHORS.md).
Writes ``benchmarks/mnist_tfc_w1a1.json`` and prints one summary line.

    .venv/bin/python scripts/bench_mnist_tfc.py --epochs 60
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import torch

from hwq._io import write_json
from hwq.export import run_export
from hwq.train import TrainConfig, run_train

PUBLISHED_ACC = 0.9317


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--lr", type=float, default=0.02)
    parser.add_argument("--dropout", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--out", default="runs/bench-mnist-tfc-w1a1")
    parser.add_argument("--results", default="benchmarks/mnist_tfc_w1a1.json")
    args = parser.parse_args()

    config = TrainConfig(model="tfc", dataset="mnist", wbits=1, abits=1, epochs=args.epochs, lr=args.lr,
                         dropout=args.dropout, seed=args.seed, data_dir=args.data_dir, device="cpu")
    started = time.perf_counter()
    metrics = run_train(config, args.out, overwrite=True)
    train_seconds = time.perf_counter() - started
    export = run_export(args.out)
    result = {
        "benchmark": "TFC-w1a1 on MNIST, CPU",
        "command": f"python scripts/bench_mnist_tfc.py --epochs {args.epochs} --lr {args.lr} "
                   f"--dropout {args.dropout} --seed {args.seed}",
        "test_acc": metrics["test_acc"],
        "published_acc": PUBLISHED_ACC,
        "beats_published": metrics["test_acc"] >= PUBLISHED_ACC,
        "epochs": metrics["epochs"],
        "train_seconds": round(train_seconds, 1),
        "seconds_per_epoch": round(train_seconds / max(1, args.epochs), 2),
        "export_verification": export["verification"],
        "machine": {"cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                    "platform": platform.platform(), "torch": torch.__version__},
        "config": config.to_dict(),
    }
    write_json(args.results, result)
    print(f"TFC-w1a1 MNIST: test accuracy {100 * result['test_acc']:.2f}% (published {100 * PUBLISHED_ACC:.2f}%) "
          f"after {args.epochs} epochs in {train_seconds / 60:.1f} min on CPU; export verified "
          f"{100 * export['verification']['argmax_match']:.1f}% argmax match -> {args.results}")


if __name__ == "__main__":
    main()
