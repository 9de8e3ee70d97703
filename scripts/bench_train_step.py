#!/usr/bin/env python
# SPDX-License-Identifier: BSD-3-Clause
"""Benchmark: one training step of hwq's loop against Brevitas' own bnn_pynq loop, same network, same process.

For TFC-w1a1 (MNIST shape) and CNV-w1a1 (CIFAR-10 shape), each with batch 100 on synthetic images, times:

* ``brevitas``: ``brevitas_examples.bnn_pynq`` 's model, forward, cross-entropy, backward, Adam, ``clip_weights``
  (what its trainer does per step);
* ``hwq``: hwq's model of the same layout and :func:`hwq.train.loop.train_step` (hooks collected once);
* ``hwq_walking``: the same step with the hooks and the latent clipping found by walking every module per step,
  as the loop did before (:func:`hwq.train.hooks.call_hooks`).

The three alternate step by step (so a load change on the machine hits all of them), the first ``--warmup`` steps
are not timed, and the median step time is reported with the ratios to ``brevitas``. Writes
``benchmarks/train_step.{json,md}``.

    OMP_NUM_THREADS=1 .venv/bin/python scripts/bench_train_step.py --steps 60 --threads 1
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from hwq._io import write_json
from hwq.models import ModelSpec, build_model
from hwq.train import TrainConfig
from hwq.train.hooks import ModelHooks, call_hooks
from hwq.train.loop import _Run, make_optimizer, train_step

#: name -> (Brevitas bnn_pynq config, hwq model, input shape)
NETWORKS = {"tfc": ("tfc_1w1a", "tfc", (1, 28, 28)), "cnv": ("cnv_1w1a", "cnv", (3, 32, 32))}


class WalkingHooks(ModelHooks):
    """The loop's hooks as they were: every module walked for each hook and for the clipping, every step."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__(model)
        self.model = model

    def __call__(self, hook: str, *args):
        return call_hooks(self.model, hook, *args)

    @torch.no_grad()
    def clip_latent_weights(self) -> None:
        for module in self.model.modules():
            clip = getattr(module, "latent_clip", None)
            if clip is not None:
                module.weight.clamp_(-clip, clip)


def brevitas_step(model, optimizer):
    def step(x, y):
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        model.clip_weights(-1, 1)
        return loss
    return step


def hwq_step(model, hooks_class, shape):
    config = TrainConfig(model="tfc", lr=0.01)
    run = _Run(config, torch.device("cpu"), None, None, model, make_optimizer(model, config), None, [], 0, {},
               hooks_class(model), None)
    return lambda x, y: train_step(run, x, y, 0.5)[0]


def bench(name: str, steps: int, warmup: int, batch: int) -> dict:
    from brevitas_examples.bnn_pynq.models import model_with_cfg

    cfg, hwq_name, shape = NETWORKS[name]
    torch.manual_seed(0)
    brevitas_model = model_with_cfg(cfg, pretrained=False)[0].train()
    steps_by_name = {"brevitas": brevitas_step(brevitas_model, torch.optim.Adam(brevitas_model.parameters(), 0.01))}
    for label, hooks_class in (("hwq", ModelHooks), ("hwq_walking", WalkingHooks)):
        model = build_model(ModelSpec(hwq_name, 1, 1, image_shape=shape)).train()
        steps_by_name[label] = hwq_step(model, hooks_class, shape)
    gen = torch.Generator().manual_seed(0)
    times = {label: [] for label in steps_by_name}
    for i in range(warmup + steps):
        x = torch.rand(batch, *shape, generator=gen)
        y = torch.randint(0, 10, (batch,), generator=gen)
        for label, step in steps_by_name.items():
            started = time.perf_counter()
            float(step(x, y).detach())
            if i >= warmup:
                times[label].append(time.perf_counter() - started)
    median = {label: statistics.median(t) for label, t in times.items()}
    return {"network": name, "median_step_ms": {k: round(v * 1e3, 3) for k, v in median.items()},
            "ratio_to_brevitas": {k: round(v / median["brevitas"], 3) for k, v in median.items()},
            "steps": steps, "batch": batch}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--networks", default="tfc,cnv")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--results", default="benchmarks/train_step")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = [bench(name, args.steps, args.warmup, args.batch) for name in args.networks.split(",")]
    result = {"rows": rows, "threads": args.threads, "machine": platform.machine(),
              "processor": platform.processor(), "torch": torch.__version__,
              "date": time.strftime("%Y-%m-%d")}
    write_json(Path(args.results + ".json"), result)
    lines = ["| network | Brevitas bnn_pynq step (ms) | hwq step (ms) | hwq / Brevitas | hwq, modules walked per step "
             "/ Brevitas |", "| --- | --- | --- | --- | --- |"]
    for row in rows:
        ms, ratio = row["median_step_ms"], row["ratio_to_brevitas"]
        lines.append(f"| {row['network']}-w1a1 | {ms['brevitas']} | {ms['hwq']} | {ratio['hwq']} | "
                     f"{ratio['hwq_walking']} |")
    table = "\n".join(lines)
    Path(args.results + ".md").write_text(
        f"Median of {args.steps} steps, batch {args.batch}, {args.threads} thread(s), {result['date']}; "
        f"`scripts/bench_train_step.py`.\n\n{table}\n")
    print(table)


if __name__ == "__main__":
    main()
