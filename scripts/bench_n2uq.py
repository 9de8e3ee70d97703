#!/usr/bin/env python
# SPDX-License-Identifier: BSD-3-Clause
"""Benchmark: N2UQ against the uniform learned-scale quantizer, same model, data, epochs, seed and recipe.

Pairs (``uniform`` and ``n2uq``) at W2A2 and W3A3 for each suite: ``mnist`` (TFC and SFC on MNIST),
``cifar10`` (ResNet-20 on CIFAR-10, or ``--cifar-model cnv``) and ``smoke`` (TFC on digits, to check the script).
With ``--distill`` a full-precision teacher (``--quant float``) is trained first per model and both students
distil from it (the N2UQ paper's recipe; the baseline gets the same teacher, so only the quantizer differs).
Runs land in ``--runs/NAME`` and are reused when complete, so an interrupted benchmark resumes.
Writes ``--results`` (JSON) and the same path with ``.md`` (a markdown table).

    python scripts/bench_n2uq.py --suite smoke --epochs 1                     # seconds, on a CPU
    python scripts/bench_n2uq.py --suite mnist cifar10 --device cuda --jobs 4 --distill
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path

#: suite -> (dataset, models, default epochs, default batch size)
SUITES = {
    "smoke": ("digits", ("tfc",), 2, 100),
    "mnist": ("mnist", ("tfc", "sfc"), 40, 100),
    "cifar10": ("cifar10", ("resnet20",), 120, 128),
}
BITS = (2, 3)
FAMILIES = ("uniform", "n2uq")
#: The paper's claim (ImageNet ResNet-18 W2A2, ../shared/docs/ANCHORS.md): N2UQ 69.4 % vs LSQ 67.6 %.
PAPER_W2A2 = {"n2uq": 0.694, "uniform (LSQ)": 0.676}


@dataclass
class Job:
    name: str
    config: dict
    after: str | None = None  # the teacher job this one waits for
    export: bool = False
    result: dict = field(default_factory=dict)


def plan(args: argparse.Namespace) -> list[Job]:
    """Every training run of the benchmark, teachers first."""
    jobs: list[Job] = []
    for suite in args.suite:
        dataset, models, epochs, batch = SUITES[suite]
        if suite == "cifar10":
            models = (args.cifar_model,)
        for model in models:
            common = dict(model=model, dataset=dataset, epochs=args.epochs or epochs,
                          batch_size=args.batch_size or batch, lr=args.lr, seed=args.seed, device=args.device,
                          data_dir=args.data_dir, weight_decay=0.0)
            teacher = None
            if args.distill:
                teacher = f"{model}-{dataset}-float"
                jobs.append(Job(teacher, dict(common, quant="float", wbits=32, abits=32)))
            for bits in BITS:
                for family in FAMILIES:
                    config = dict(common, quant=family, wbits=bits, abits=bits)
                    if family == "n2uq":  # the measured tables used per-class classifier scales (docs/n2uq.md)
                        config["model_options"] = {"n2uq_classifier_per_channel": True}
                    if teacher:
                        config["teacher"] = str(Path(args.runs) / teacher)
                    jobs.append(Job(f"{model}-{dataset}-w{bits}a{bits}-{family}", config, teacher, args.export))
    return jobs


def run_job(job: Job, runs: str, threads: int) -> dict:
    """Train (or reuse) one run in this process; optionally export and verify it."""
    import torch

    from hwq._io import read_json
    from hwq.train import TrainConfig, run_train

    torch.set_num_threads(threads)
    out = Path(runs) / job.name
    metrics_file = out / "metrics.json"
    started = time.perf_counter()
    metrics = read_json(metrics_file) if metrics_file.is_file() else {}
    reused = bool(metrics.get("complete")) and metrics.get("config", {}).get("epochs") == job.config["epochs"]
    if not reused:
        metrics = run_train(TrainConfig.from_dict(job.config), out, overwrite=True, progress=False)
    result = {"name": job.name, "run": str(out), "test_acc": metrics["test_acc"], "epochs": metrics["epochs"],
              "train_seconds": metrics["seconds"], "reused": reused, "device": metrics["device"],
              **{k: job.config[k] for k in ("model", "dataset", "quant", "wbits", "abits")}}
    if job.export:
        from hwq.export import run_export

        verification = run_export(out)["verification"]
        result["export"] = {k: verification[k] for k in ("passed", "argmax_match", "max_abs_diff", "n")}
    result["seconds"] = round(time.perf_counter() - started, 1)
    return result


def run_all(jobs: list[Job], args: argparse.Namespace) -> list[dict]:
    threads = max(1, (os.cpu_count() or 1) // args.jobs)
    results: dict[str, dict] = {}
    # Teachers first (students read them), then the students; each phase runs ``--jobs`` at a time.
    for phase in ([j for j in jobs if j.config["quant"] == "float"], [j for j in jobs if j.config["quant"] != "float"]):
        if not phase:
            continue
        if args.jobs == 1:
            done = [run_job(job, args.runs, threads) for job in phase]
        else:
            with ProcessPoolExecutor(args.jobs, mp_context=get_context("spawn")) as pool:
                done = list(pool.map(run_job, phase, [args.runs] * len(phase), [threads] * len(phase)))
        for result in done:
            results[result["name"]] = result
            print(f"{result['name']}: {100 * result['test_acc']:.2f}% ({result['seconds']} s"
                  f"{', reused' if result['reused'] else ''})", flush=True)
    return [results[job.name] for job in jobs]


def table(results: list[dict]) -> str:
    """Markdown: one row per (model, dataset, bits) with both families side by side."""
    by_key = {(r["model"], r["dataset"], r["wbits"], r["quant"]): r for r in results}
    teachers = {(r["model"], r["dataset"]): r for r in results if r["quant"] == "float"}
    lines = ["| model | data | bits | uniform top-1 % | N2UQ top-1 % | N2UQ - uniform | FP teacher % | epochs "
             "| export verified |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for (model, dataset, bits, quant), uni in by_key.items():
        if quant != "uniform" or (model, dataset, bits, "n2uq") not in by_key:
            continue
        n2 = by_key[(model, dataset, bits, "n2uq")]
        teacher = teachers.get((model, dataset))
        teacher_acc = f"{100 * teacher['test_acc']:.2f}" if teacher else "-"
        exported = [r.get("export", {}).get("passed") for r in (uni, n2)]
        lines.append(
            f"| {model} | {dataset} | W{bits}A{bits} | {100 * uni['test_acc']:.2f} | {100 * n2['test_acc']:.2f} "
            f"| {100 * (n2['test_acc'] - uni['test_acc']):+.2f} | "
            f"{teacher_acc} | {n2['epochs']} | "
            f"{'yes' if all(exported) else 'not run' if None in exported else 'FAILED'} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", nargs="+", choices=sorted(SUITES), default=["mnist", "cifar10"])
    parser.add_argument("--cifar-model", default="resnet20", choices=["resnet20", "cnv"])
    parser.add_argument("--epochs", type=int, help="override every suite's default epochs")
    parser.add_argument("--batch-size", type=int, help="override every suite's default batch size")
    parser.add_argument("--lr", type=float, default=2e-3, help="Adam learning rate for both families (default 2e-3)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"])
    parser.add_argument("--jobs", type=int, default=1, help="trainings in parallel processes")
    parser.add_argument("--distill", action="store_true", help="distil both students from a float teacher")
    parser.add_argument("--export", action="store_true", help="export and verify every student (needs qonnx)")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--runs", default="runs/bench-n2uq")
    parser.add_argument("--results", default="benchmarks/n2uq.json")
    args = parser.parse_args(argv)
    if args.jobs < 1:
        parser.error("--jobs must be >= 1")

    started = time.perf_counter()
    jobs = plan(args)
    results = run_all(jobs, args)
    import torch

    from hwq._io import write_atomic, write_json

    report = {
        "benchmark": "N2UQ vs uniform learned-scale quantization (same model, data, epochs, seed, recipe)",
        "command": "python scripts/bench_n2uq.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "paper_imagenet_resnet18_w2a2": PAPER_W2A2,
        "results": results,
        "seconds": round(time.perf_counter() - started, 1),
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(), "torch": torch.__version__,
                    "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None},
    }
    write_json(args.results, report)
    markdown = f"Command: `{report['command']}`\n\n" + table(results)
    write_atomic(Path(args.results).with_suffix(".md"), lambda p: p.write_text(markdown))
    print(markdown)
    print(json.dumps({"results": args.results, "seconds": report["seconds"]}))


if __name__ == "__main__":
    main()
