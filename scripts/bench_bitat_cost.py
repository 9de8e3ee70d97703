#!/usr/bin/env python
# SPDX-License-Identifier: BSD-3-Clause
"""Benchmark: what BiTAT's training-time state costs on the CIFAR-10 MobileNet, next to plain binarization.

Per configuration: the mean time of a training step (forward, task loss + BiTAT's penalty, backward, Adam, the
after-step hook) on random 32x32 images, and the time of the epoch start that switches every layer to binary
(eigendecompositions of every layer's input correlation). ``--uncapped`` adds BiTAT with
``bitat_max_eigen_dim`` raised above the classifier's 8192 inputs (docs/bitat.md, decision 11): minutes on a CPU.

    python scripts/bench_bitat_cost.py --uncapped          # writes benchmarks/bitat_cost.json
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch


def measure(quant: str, options: dict, batch: int, steps: int, device: str) -> dict:
    from hwq.models import ModelSpec, build_model
    from hwq.train.loop import call_hooks

    torch.manual_seed(0)
    net = build_model(ModelSpec("mobilenet", 1, 1, quant=quant, image_shape=(3, 32, 32),
                                options={"width": 0.5, **options})).to(device).train()
    optimizer = torch.optim.Adam(net.parameters(), 1e-3)
    x = torch.rand(batch, 3, 32, 32, device=device)
    y = torch.randint(0, 10, (batch,), device=device)

    def step() -> None:
        loss = torch.nn.functional.cross_entropy(net(x), y)
        for extra in call_hooks(net, "hwq_extra_loss"):
            loss = loss + extra
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        call_hooks(net, "hwq_after_step")

    def timed(fn) -> float:
        if device == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - started

    step()  # input statistics for the switch, and warm-up
    switch = timed(lambda: call_hooks(net, "hwq_on_epoch_start", 9, 10))  # the last epoch: every layer binary
    step()
    per_step = [timed(step) for _ in range(steps)]
    return {"quant": quant, "options": options, "switch_seconds": round(switch, 3),
            "step_seconds": round(sum(per_step) / len(per_step), 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--uncapped", action="store_true", help="also BiTAT with the classifier's eigenbasis")
    parser.add_argument("--out", default="benchmarks/bitat_cost.json")
    args = parser.parse_args()

    configs = [("uniform", {}), ("bitat", {}), ("bitat", {"bitat_transform": "none"})]
    if args.uncapped:
        configs.append(("bitat", {"bitat_max_eigen_dim": 10_000}))
    rows = [measure(quant, options, args.batch, args.steps, args.device) for quant, options in configs]
    plain = rows[0]["step_seconds"]
    for row in rows:
        row["step_vs_plain"] = round(row["step_seconds"] / plain, 2)
        print(f"{row['quant']:8s} {json.dumps(row['options']):36s} step {row['step_seconds']:.4f} s "
              f"({row['step_vs_plain']:.2f}x plain)  switch {row['switch_seconds']:.2f} s")

    from hwq._io import write_atomic

    result = {"benchmark": "BiTAT training cost, CIFAR-10 mobilenet w0.5", "args": vars(args), "rows": rows,
              "machine": {"device": args.device, "cpu": platform.processor() or platform.machine(),
                          "threads": torch.get_num_threads(), "torch": torch.__version__}}
    write_atomic(Path(args.out), lambda p: p.write_text(json.dumps(result, indent=2) + "\n"))


if __name__ == "__main__":
    main()
