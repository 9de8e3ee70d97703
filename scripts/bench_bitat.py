#!/usr/bin/env python
# SPDX-License-Identifier: BSD-3-Clause
"""Benchmark: BiTAT W1A1 vs full precision vs plain binarization (sign + STE), with BiTAT's ablations.

Suites: ``cifar10`` (the compact ``mobilenet`` backbone) and ``mnist`` (TFC). Per suite, a full-precision model
(hardtanh activations, what ``sign`` approximates) is trained first; every binary run then starts from its weights
(``--init-from``) and distils from it, with the same epochs, learning rate and seed; ``plain_scratch`` (random
init) shows what the initialisation alone contributes. Runs are separate ``hwq train`` processes, ``--jobs`` at a
time (several small runs share one GPU well). Writes ``<results>.json``, ``<results>.md`` and ``<results>.png``
(test accuracy per epoch).

    python scripts/bench_bitat.py --device cuda --jobs 8                    # both suites, default epochs
    python scripts/bench_bitat.py --device cpu --suites mnist --epochs 1 --fp-epochs 1 --limit-note tiny
    OMP_NUM_THREADS=1 python scripts/bench_bitat.py --device cpu --suites cifar10 --width 0.25 \
        --train-subset 10000 --epochs 8 --fp-epochs 8 --jobs 2 --runs runs/bench-bitat-cpu \
        --results benchmarks/bitat_cifar10_cpu                            # the CPU-sized CIFAR-10 table
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

#: name -> (quant family, model options, starts from the full-precision weights)
METHODS = {
    "plain": ("uniform", {}, True),
    "plain_scratch": ("uniform", {}, False),
    "bitat": ("bitat", {}, True),
    "bitat_no_transform": ("bitat", {"bitat_transform": "none"}, True),
    "bitat_no_importance": ("bitat", {"bitat_importance": False}, True),
    "bitat_no_progressive": ("bitat", {"bitat_progressive": False}, True),
    "bitat_importance_codes": ("bitat", {"bitat_codes": "importance"}, True),
    "bitat_no_penalty": ("bitat", {"bitat_penalty": 0}, True),
}
SUITES = {
    # model, dataset, model options, batch size: CIFAR-10 uses 200 so a small backbone keeps a GPU busy.
    "cifar10": ("mobilenet", "cifar10", {"width": 0.5}, 200),
    "mnist": ("tfc", "mnist", {}, 100),
    # Smoke tests on the bundled 8x8 digits (no data folder, seconds on a CPU).
    "digits": ("tfc", "digits", {}, 100),
    "digits_mobilenet": ("mobilenet_tiny", "digits", {"width": 0.5}, 100),
}


#: The table also averages the last epochs' test accuracies: a binary network's accuracy can move by points from
#: one epoch to the next, and for BiTAT's default schedule (final quarter all binary) the last 3 of 8+ epochs are
#: all binary.
LAST = 3


def suite_options(args, suite: str) -> dict:
    """The model options every run of ``suite`` shares (the suite's, with ``--width`` applied)."""
    options = dict(SUITES[suite][2])
    if args.width is not None:
        options["width"] = args.width
    return options


def train_command(args, suite: str, method: str, out: Path, fp_run: Path | None) -> list[str]:
    model, dataset, _, batch = SUITES[suite]
    options = suite_options(args, suite)
    cmd = [sys.executable, "-m", "hwq", "train", "--model", model, "--dataset", dataset, "--wbits", "1",
           "--abits", "1", "--batch-size", str(batch), "--seed", str(args.seed), "--device", args.device,
           "--out", str(out), "--overwrite", "--no-progress"]
    if args.data_dir:
        cmd += ["--data-dir", args.data_dir]
    if args.train_subset:
        cmd += ["--train-subset", str(args.train_subset)]
    if method == "fp":
        cmd += ["--quant", "float", "--epochs", str(args.fp_epochs), "--lr", str(args.fp_lr)]
        options = {**options, "float_act": "hardtanh"}
    else:
        quant, extra, from_fp = METHODS[method]
        cmd += ["--quant", quant, "--epochs", str(args.epochs), "--lr", str(args.lr)]
        options = {**options, **extra}
        if from_fp:
            cmd += ["--init-from", str(fp_run)]
        if args.distill:
            cmd += ["--teacher", str(fp_run), "--distill-weight", str(args.distill_weight)]
    for key, value in options.items():
        cmd += ["--option", f"{key}={json.dumps(value)}"]
    return cmd


def run(cmd: list[str], log: Path, slots: threading.Semaphore) -> float:
    log.parent.mkdir(parents=True, exist_ok=True)
    with slots, log.open("w") as out:
        started = time.perf_counter()
        done = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT)
    if done.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed (exit {done.returncode}); see {log}")
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", help="cpu, cuda or auto")
    parser.add_argument("--suites", default="cifar10,mnist")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--epochs", type=int, default=12, help="epochs of every binary run")
    parser.add_argument("--fp-epochs", dest="fp_epochs", type=int, default=12)
    parser.add_argument("--lr", type=float, default=2e-3, help="Adam lr of the binary runs (fine-tuning)")
    parser.add_argument("--fp-lr", dest="fp_lr", type=float, default=5e-3)
    parser.add_argument("--no-distill", dest="distill", action="store_false")
    parser.add_argument("--distill-weight", dest="distill_weight", type=float, default=0.5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--jobs", type=int, default=1, help="training processes at a time")
    parser.add_argument("--export", action="store_true", help="also export + verify the BiTAT runs (CPU, slow)")
    parser.add_argument("--data-dir", dest="data_dir", default=None)
    parser.add_argument("--train-subset", dest="train_subset", type=int, default=None,
                        help="train every run on this many images (class-balanced); CPU-sized runs")
    parser.add_argument("--width", type=float, default=None, help="width multiplier instead of the suite's")
    parser.add_argument("--runs", default="runs/bench-bitat")
    parser.add_argument("--results", default="benchmarks/bitat")
    parser.add_argument("--limit-note", dest="note", default="", help="free text stored with the results")
    parser.add_argument("--collect", action="store_true",
                        help="train nothing: tabulate the runs already under --runs (finished or not)")
    parser.add_argument("--from-json", dest="from_json", action="store_true",
                        help="train nothing: rewrite <results>.md and <results>.png from <results>.json")
    args = parser.parse_args()
    if args.from_json:
        write_results(json.loads(Path(args.results).with_suffix(".json").read_text()), Path(args.results))
        return
    suites = [s for s in args.suites.split(",") if s]
    methods = [m for m in args.methods.split(",") if m]
    runs = Path(args.runs)
    if args.collect:
        write_results(collect(args, suites, methods, runs, {}, None), Path(args.results))
        return

    from hwq.data import load_dataset
    for suite in suites:  # decode/cache the data once, before parallel processes race to do it
        load_dataset(SUITES[suite][1], args.data_dir)

    started = time.perf_counter()
    seconds: dict[str, float] = {}
    slots = threading.Semaphore(max(1, args.jobs))  # at most --jobs training processes at any time

    def pipeline(suite: str, pool: ThreadPoolExecutor) -> None:
        fp_run = runs / suite / "fp"
        seconds[f"{suite}/fp"] = run(train_command(args, suite, "fp", fp_run, None), runs / suite / "fp.log", slots)
        jobs = {m: pool.submit(run, train_command(args, suite, m, runs / suite / m, fp_run),
                               runs / suite / f"{m}.log", slots) for m in methods}
        for method, job in jobs.items():
            seconds[f"{suite}/{method}"] = job.result()

    # One thread per suite and per run (threads only wait; the semaphore bounds the processes).
    with ThreadPoolExecutor(max_workers=len(suites) * (len(methods) + 1)) as pool:
        for done in [pool.submit(pipeline, suite, pool) for suite in suites]:
            done.result()

    results = collect(args, suites, methods, runs, seconds, round(time.perf_counter() - started, 1))
    write_results(results, Path(args.results))


def collect(args, suites: list[str], methods: list[str], runs: Path, seconds: dict[str, float],
            wall_seconds: float | None) -> dict:
    """The results table from the runs' ``metrics.json`` (written after every epoch), so a benchmark cut short
    still reports what it measured: an unfinished run is marked ``complete: false`` with its epoch count."""
    results = {"benchmark": "BiTAT W1A1 vs full precision vs plain binarization", "note": args.note,
               "command": " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]), "args": vars(args),
               "wall_seconds": wall_seconds, "suites": {}, "machine": _machine(args.device)}
    for suite in suites:
        rows = {}
        for method in ["fp", *methods]:
            path = runs / suite / method / "metrics.json"
            if not path.exists():
                continue
            metrics = json.loads(path.read_text())
            planned = args.fp_epochs if method == "fp" else args.epochs
            history = metrics["history"]
            rows[method] = {"test_acc": metrics["test_acc"], "epochs": len(history), "epochs_planned": planned,
                            "complete": len(history) == planned,
                            "seconds": round(seconds.get(f"{suite}/{method}",
                                                         sum(h["seconds"] for h in history)), 1),
                            "history_test_acc": [h["test_acc"] for h in history]}
            if args.export and method.startswith("bitat") and rows[method]["complete"]:
                from hwq.export import run_export
                rows[method]["export"] = run_export(runs / suite / method)["verification"]
        fp, plain = rows.get("fp", {}).get("test_acc"), rows.get("plain", {}).get("test_acc")
        for row in rows.values():  # the claim: BiTAT recovers most of the gap between plain and full precision
            row["gap_recovered"] = (None if fp is None or plain is None or fp == plain
                                    else round((row["test_acc"] - plain) / (fp - plain), 3))
        results["suites"][suite] = {"model": SUITES[suite][0], "dataset": SUITES[suite][1], "rows": rows,
                                    "options": suite_options(args, suite), "train_subset": args.train_subset}
    return results


def write_results(results: dict, out: Path) -> None:
    write_outputs(results, out, markdown, plot_history)


def write_outputs(results: dict, out: Path, table_of, plot) -> None:
    """``<out>.json`` (the results), ``<out>.md`` (``table_of(results)``, also printed) and ``<out>.png``
    (``plot(results, path)``), each written atomically: the benchmark scripts' shared output."""
    from hwq._io import write_atomic

    out.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(out.with_suffix(".json"), lambda p: p.write_text(json.dumps(results, indent=2) + "\n"))
    table = table_of(results)
    write_atomic(out.with_suffix(".md"), lambda p: p.write_text(table))
    write_atomic(out.with_suffix(".png"), lambda p: plot(results, p))
    print(table)


def update_table(out: Path, results: dict, same_settings: tuple[str, ...], key=None) -> dict:
    """The table ``<out>.json`` with ``results``' rows in place of its rows of the same key (others kept) and
    ``results``' command and note appended to its ``updates``: a rerun of some rows stands in the table only when
    the settings in ``same_settings`` are the table's, else a one-line error (the rows would not be comparable).
    Rows are a mapping (by name) or a list (``key(row)`` names a row)."""
    table = json.loads(out.with_suffix(".json").read_text())
    differ = [k for k in same_settings if table["args"].get(k) != results["args"].get(k)]
    if differ:
        pairs = ", ".join(f"{k} {table['args'].get(k)!r} vs {results['args'].get(k)!r}" for k in differ)
        raise SystemExit(f"--update {out.with_suffix('.json')}: settings differ from the table's ({pairs})")
    if isinstance(table["rows"], dict):
        names = list(results["rows"])
        table["rows"].update(results["rows"])
    else:
        new = {key(r): r for r in results["rows"]}
        names = [list(k) for k in new]
        table["rows"] = [new.pop(key(r), r) for r in table["rows"]] + list(new.values())
    table.setdefault("updates", []).append({"command": results["command"], "note": results["note"],
                                            "rows": names, "wall_seconds": results["wall_seconds"]})
    return table


def update_lines(results: dict, row_name) -> list[str]:
    """The markdown lines that list a table's updates (``row_name(entry)`` writes one updated row's name)."""
    lines = []
    for change in results.get("updates", []):
        rows = ", ".join(row_name(r) for r in change["rows"])
        lines += [f"Update (rows {rows}): `{change['command']}`. {change['note']}".rstrip(), ""]
    return lines


def suite_title(data: dict) -> str:
    """``mobilenet (width 0.25) on cifar10, 10000 training images``: what a suite's runs trained."""
    options = ", ".join(f"{k} {v}" for k, v in data.get("options", {}).items())
    subset = f", {data['train_subset']} training images" if data.get("train_subset") else ""
    return f"{data['model']}{f' ({options})' if options else ''} on {data['dataset']}{subset}"


def plot_history(results: dict, path: Path) -> None:
    """Test accuracy after every epoch, one panel per suite: where a progressive run loses accuracy, and how much
    a final number moves from epoch to epoch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    suites = results["suites"]
    fig, axes = plt.subplots(1, max(1, len(suites)), figsize=(5.5 * max(1, len(suites)), 3.6), squeeze=False)
    for ax, (suite, data) in zip(axes[0], suites.items()):
        for method, row in data["rows"].items():
            history = [100 * acc for acc in row["history_test_acc"]]
            style = {"ls": "--", "color": "black"} if method == "fp" else {"marker": "o", "ms": 3}
            ax.plot(range(1, len(history) + 1), history, label=method, lw=1, **style)
        ax.set_title(suite_title(data), fontsize=9)
        ax.set_xlabel("epoch")
        ax.set_ylabel("test top-1 %")
        ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=100, format="png")
    plt.close(fig)


def markdown(results: dict) -> str:
    if results["wall_seconds"] is not None:
        wall = f"{results['wall_seconds']} s wall"
    else:  # --collect: the runs may have been resumed or run by hand; only say "cut short" when they were
        rows = [row for data in results["suites"].values() for row in data["rows"].values()]
        wall = "cut short" if not all(row["complete"] for row in rows) else "tabulated from the runs"
    lines = [f"Command: `{results['command']}` ({results['machine']['device_name']}, {wall})", ""]
    if results.get("note"):
        lines += [results["note"], ""]
    for suite, data in results["suites"].items():
        lines += [f"### {suite_title(data)}", "",
                  f"| method | test top-1 % | mean of the last {LAST} epochs | gap recovered (plain = 0, fp = 1) "
                  "| epochs | seconds |",
                  "| --- | --- | --- | --- | --- | --- |"]
        for method, row in data["rows"].items():
            # An unfinished BiTAT run may not be binary yet: its gap would compare a partly float network.
            gap = "-" if row["gap_recovered"] is None or not row["complete"] else f"{row['gap_recovered']:.2f}"
            epochs = f"{row['epochs']}" if row["complete"] else f"{row['epochs']}/{row['epochs_planned']} (unfinished)"
            last = row["history_test_acc"][-LAST:]
            lines.append(f"| {method} | {100 * row['test_acc']:.2f} | {100 * sum(last) / len(last):.2f} | {gap} "
                         f"| {epochs} | {row['seconds']} |")
        lines.append("")
    return "\n".join(lines)


def _machine(device: str) -> dict:
    import torch

    name = torch.cuda.get_device_name(0) if device != "cpu" and torch.cuda.is_available() else platform.processor()
    return {"device": device, "device_name": name or "cpu", "cpu_count": os.cpu_count(), "torch": torch.__version__,
            "python": platform.python_version()}


if __name__ == "__main__":
    main()
