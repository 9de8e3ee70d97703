#!/usr/bin/env python
# SPDX-License-Identifier: BSD-3-Clause
"""Benchmark (issue 16): CIFAR-10, BiTAT's second design against plain and two-step binarization of the old
``mobilenet`` and the ``reactnet`` backbone, with FINN's estimates on the Pynq-Z2 for every binary row.

Rows (``ROWS``): full precision of both backbones (``--quant float``, hardtanh where the signs go, as
``bench_bitat.py``'s ``fp``), plain W1A1 of both, reactnet with ``--recipe two-step``, reactnet with ``--quant bitat``
(second design and its ablations, first design). Every row trains the same epochs, seed, batch and training subset;
every binary row starts from its backbone's full-precision weights (``--init-from``) and distils from them
(``--teacher``, weight 0.5), the rule of ``bench_bitat.py``. A row whose options this hwq does not declare yet (e.g.
``bitat_design`` before it is merged) is recorded as skipped with the config error; rerunning the same command
later trains only what is missing (a complete run with the same settings is reused, as is its build).

After training, each binary row is exported (``hwq export``) and built for the Pynq-Z2 up to FINN's estimates
(``hwq build --stop-step estimate``; the folding is the fastest that fits 80 % of the board); a failed export or
build is recorded in the row as its one-line error. Writes ``<results>.json`` (rows with their per-epoch
histories), ``<results>.md`` and ``<results>.png`` (test accuracy per epoch, ``bench_bitat.plot_history``).

    OMP_NUM_THREADS=1 python scripts/bench_bitat2.py --width 0.25 --train-subset 2000 --epochs 2 --batch-size 50 \
        --jobs 2 --runs runs/bench-bitat2 --results benchmarks/bitat2_cifar10_cpu     # the CPU-sized table
    python scripts/bench_bitat2.py ... --collect          # train nothing: tabulate what is under --runs
    python scripts/bench_bitat2.py --results benchmarks/bitat2_cifar10_cpu --from-json   # rewrite .md/.png
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import bench_bitat  # noqa: E402  (run, plot_history, _machine: the shared pieces)


@dataclass(frozen=True)
class Row:
    model: str
    quant: str = "uniform"
    options: dict = field(default_factory=dict)
    recipe: str = "plain"
    #: the full-precision row this one starts from and distils from (None: this is a full-precision row)
    fp: str | None = None
    #: train this row only with an hwq that does not declare this option (its run is tabulated either way)
    only_without: str | None = None


SECOND = {"bitat_design": "second"}
ROWS = {
    "fp_mobilenet": Row("mobilenet", "float", {"float_act": "hardtanh"}),
    "fp_reactnet": Row("reactnet", "float", {"float_act": "hardtanh"}),
    "plain_mobilenet": Row("mobilenet", fp="fp_mobilenet"),
    "plain_reactnet": Row("reactnet", fp="fp_reactnet"),
    "two_step_reactnet": Row("reactnet", recipe="two-step", fp="fp_reactnet"),
    "bitat2": Row("reactnet", "bitat", SECOND, fp="fp_reactnet"),
    "bitat2_no_transform": Row("reactnet", "bitat", {**SECOND, "bitat_transform": "none"}, fp="fp_reactnet"),
    "bitat2_no_importance": Row("reactnet", "bitat", {**SECOND, "bitat_importance": False}, fp="fp_reactnet"),
    "bitat2_no_aggregate": Row("reactnet", "bitat", {**SECOND, "bitat_aggregate": False}, fp="fp_reactnet"),
    "bitat2_no_progressive": Row("reactnet", "bitat", {**SECOND, "bitat_progressive": False}, fp="fp_reactnet"),
    "bitat2_no_freeze": Row("reactnet", "bitat", {**SECOND, "bitat_freeze": False}, fp="fp_reactnet"),
    "bitat2_sign_codes": Row("reactnet", "bitat", {**SECOND, "bitat_codes": "sign"}, fp="fp_reactnet"),
    "bitat1": Row("reactnet", "bitat", {"bitat_design": "first"}, fp="fp_reactnet"),
    # main before the second design (80dff01): plain --quant bitat is the first design; once bitat_design exists
    # the same command trains the second design, so it is trained only without that option.
    "bitat1_pre_merge": Row("reactnet", "bitat", fp="fp_reactnet", only_without="bitat_design"),
}
#: the gap is measured from this row (0) to a full-precision row (1): the issue's "old plain binary MobileNet"
GAP_FROM = "plain_mobilenet"
GAP_TO = ("fp_mobilenet", "fp_reactnet")


def row_options(args, row: Row) -> dict:
    return {"width": args.width, **row.options}


def config_error(args, row: Row) -> str | None:
    """The one-line ConfigError this hwq gives for the row's settings (an option not declared yet), or None."""
    from hwq.errors import ConfigError
    from hwq.train import TrainConfig

    try:
        TrainConfig(model=row.model, dataset="cifar10", quant=row.quant, recipe=row.recipe,
                    model_options=row_options(args, row))
    except ConfigError as error:
        return str(error).splitlines()[0].split("; known:")[0]  # the table cell: the option, not the whole list
    return None


def declared(option: str) -> bool:
    """Whether this hwq declares a model or quantizer option of that name."""
    from hwq import options as declared_options

    return any(getattr(o, "name", None) == option for table in vars(declared_options).values()
               if isinstance(table, tuple) for o in table)


def train_command(args, name: str) -> list[str]:
    row = ROWS[name]
    cmd = [sys.executable, "-m", "hwq", "train", "--model", row.model, "--dataset", "cifar10", "--quant", row.quant,
           "--wbits", "1", "--abits", "1", "--epochs", str(args.epochs), "--batch-size", str(args.batch_size),
           "--seed", str(args.seed), "--threads", "1", "--device", "cpu", "--out", str(run_dir(args, name)),
           "--overwrite", "--no-progress"]
    if args.data_dir:
        cmd += ["--data-dir", args.data_dir]
    if args.train_subset:
        cmd += ["--train-subset", str(args.train_subset)]
    if row.fp is None:
        cmd += ["--lr", str(args.fp_lr)]
    else:
        fp = str(run_dir(args, row.fp))
        cmd += ["--lr", str(args.lr), "--init-from", fp, "--teacher", fp, "--distill-weight", str(args.distill_weight)]
    if row.recipe != "plain":
        cmd += ["--recipe", row.recipe]
    for key, value in row_options(args, row).items():
        cmd += ["--option", f"{key}={json.dumps(value)}"]
    return cmd


def run_dir(args, name: str) -> Path:
    return Path(args.runs) / name


def trained(args, name: str) -> bool:
    """A complete run of exactly this command is there (so a rerun of the benchmark reuses it)."""
    path = run_dir(args, name) / "metrics.json"
    command = run_dir(args, name) / "command.json"
    return (path.exists() and json.loads(path.read_text()).get("complete") and command.exists()
            and json.loads(command.read_text()) == train_command(args, name)[1:])


def estimate_commands(args, name: str) -> list[list[str]]:
    run = str(run_dir(args, name))
    hwq = [sys.executable, "-m", "hwq"]
    return [[*hwq, "export", run, "--verify-samples", str(args.export_samples)],
            [*hwq, "build", run, "--board", "pynq-z2", "--stop-step", "estimate", "--verify-samples",
             str(args.build_samples), "--no-progress"]]


def estimate_rows(args) -> list[str]:
    return [n for n in (args.estimate_rows or ",".join(ROWS)).split(",") if n]


def build_manifest(args, name: str) -> Path:
    return run_dir(args, name) / "build-pynq-z2" / "manifest.json"


def estimate(args, name: str, slots: threading.Semaphore) -> None:
    """Export and build to FINN's estimates, unless a build of this run's current model is there."""
    manifest = build_manifest(args, name)
    if manifest.exists() and json.loads(manifest.read_text()).get("status") in ("stopped", "done"):
        if manifest.stat().st_mtime > (run_dir(args, name) / "metrics.json").stat().st_mtime:
            return
    for cmd, log in zip(estimate_commands(args, name), ("export.log", "build.log")):
        try:
            bench_bitat.run(cmd, run_dir(args, name) / f"bench-{log}", slots)
        except RuntimeError:
            return  # collect() reads the error from the log / failed manifest


def last_error_line(log: Path) -> str:
    lines = [line.strip() for line in log.read_text(errors="replace").splitlines() if line.strip()]
    errors = [line for line in lines if "Error" in line or "error:" in line]
    return (errors or lines or ["(empty log)"])[-1][:400]


def estimate_record(args, name: str) -> dict | None:
    return estimate_record_of(run_dir(args, name))


def estimate_record_of(run: Path) -> dict | None:
    """LUT, BRAM18, DSP and fps from the Pynq-Z2 build's manifest under ``run``, or the one-line error of the
    export or build (read from ``bench-export.log`` / ``bench-build.log``); None when neither ran."""
    manifest = run / "build-pynq-z2" / "manifest.json"
    if manifest.exists():
        results = json.loads(manifest.read_text()).get("results", {})
        return {k: results.get(k) for k in ("lut", "bram", "dsp", "fps", "latency_us", "clock_mhz")} | {
            "kind": results.get("kind"), "bit_exact": results.get("bit_exact")}
    failed = run / "build-pynq-z2.failed" / "manifest.json"
    for stage, log in (("export", run / "bench-export.log"), ("build", run / "bench-build.log")):
        if not log.exists():
            return None
        if stage == "build" and failed.exists():
            return {"error": f"build: {json.loads(failed.read_text()).get('error')}"}
        if "error:" in log.read_text(errors="replace"):  # the CLI's one-line message, "hwq export: error: ..."
            return {"error": f"{stage}: {last_error_line(log).split('error: ', 1)[-1]}"}
    if any(run.glob("build-pynq-z2.partial-*")):
        return {"error": "build still running when tabulated"}
    return None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default=",".join(ROWS), help="comma-separated row names (default: all)")
    parser.add_argument("--epochs", type=int, default=3, help="epochs of every row")
    parser.add_argument("--lr", type=float, default=2e-3, help="Adam lr of the binary rows (fine-tuning)")
    parser.add_argument("--fp-lr", dest="fp_lr", type=float, default=5e-3)
    parser.add_argument("--distill-weight", dest="distill_weight", type=float, default=0.5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", dest="batch_size", type=int, default=200, help="bench_bitat's CIFAR-10 batch")
    parser.add_argument("--width", type=float, default=0.25)
    parser.add_argument("--train-subset", dest="train_subset", type=int, default=None)
    parser.add_argument("--jobs", type=int, default=1, help="training processes at a time")
    parser.add_argument("--build-jobs", dest="build_jobs", type=int, default=1, help="exports/builds at a time")
    parser.add_argument("--no-estimates", dest="estimates", action="store_false")
    parser.add_argument("--estimate-rows", dest="estimate_rows", default=None,
                        help="export and build only these binary rows (default: every binary row)")
    parser.add_argument("--export-samples", dest="export_samples", type=int, default=20)
    parser.add_argument("--build-samples", dest="build_samples", type=int, default=5)
    parser.add_argument("--last", type=int, default=2, help="the table also averages the last N epochs")
    parser.add_argument("--data-dir", dest="data_dir", default=None)
    parser.add_argument("--runs", default="runs/bench-bitat2")
    parser.add_argument("--results", default="benchmarks/bitat2_cifar10")
    parser.add_argument("--limit-note", dest="note", default="", help="free text stored with the results")
    parser.add_argument("--collect", action="store_true", help="train nothing: tabulate the runs under --runs")
    parser.add_argument("--update", action="store_true",
                        help="put these rows into <results>.json (same settings), keeping its other rows")
    parser.add_argument("--from-json", dest="from_json", action="store_true",
                        help="train nothing: rewrite <results>.md and <results>.png from <results>.json")
    args = parser.parse_args(argv)
    out = Path(args.results)
    if args.from_json:
        write_results(json.loads(out.with_suffix(".json").read_text()), out)
        return
    names = [n for n in args.rows.split(",") if n]
    unknown = [n for n in names if n not in ROWS]
    if unknown:
        parser.error(f"--rows: unknown row(s) {', '.join(unknown)}; the rows: {', '.join(ROWS)}")
    started = time.perf_counter()
    if not args.collect:
        train_all(args, names)
    results = collect(args, names, None if args.collect else round(time.perf_counter() - started, 1))
    if args.update:
        results = bench_bitat.update_table(out, results, SAME_SETTINGS)
        add_gaps(results["rows"])
    write_results(results, out)


#: What must be the same for an update's rows to stand in the table they join.
SAME_SETTINGS = ("epochs", "lr", "fp_lr", "distill_weight", "seed", "batch_size", "width", "train_subset", "last")


def train_all(args, names: list[str]) -> None:
    """Full-precision rows first; each binary row once its fp row is trained; its estimate after it."""
    from hwq.data import load_dataset

    load_dataset("cifar10", args.data_dir)  # decode/cache once, before parallel processes race to do it
    slots, build_slots = threading.Semaphore(max(1, args.jobs)), threading.Semaphore(max(1, args.build_jobs))
    fp_done = {n: threading.Event() for n in ROWS if ROWS[n].fp is None}

    def one(name: str) -> None:
        row = ROWS[name]
        try:
            if config_error(args, row) is not None or (row.only_without and declared(row.only_without)
                                                       and not trained(args, name)):
                return
            if row.fp is not None:
                fp_done[row.fp].wait()
                if not trained(args, row.fp):
                    return
            with slots:  # checked again once a slot is free: another invocation may have trained it meanwhile
                if not trained(args, name):
                    cmd = train_command(args, name)
                    try:
                        bench_bitat.run(cmd, Path(args.runs) / f"{name}.log", threading.Semaphore())
                    except RuntimeError as error:
                        print(error, file=sys.stderr, flush=True)
                        return
                    (run_dir(args, name) / "command.json").write_text(json.dumps(cmd[1:]) + "\n")
            print(f"trained {name}", flush=True)
            if row.fp is not None and args.estimates and name in estimate_rows(args):
                estimate(args, name, build_slots)
        finally:
            if name in fp_done:
                fp_done[name].set()

    for fp in fp_done:  # an fp row not asked for is still needed by the binary rows, when it is there
        if fp not in names:
            fp_done[fp].set()
    order = sorted(names, key=lambda n: ROWS[n].fp is not None)  # fp rows take the first slots
    with ThreadPoolExecutor(max_workers=len(order)) as pool:
        for job in [pool.submit(one, name) for name in order]:
            job.result()


def collect(args, names: list[str], wall_seconds: float | None) -> dict:
    """The results from the runs' metrics.json (written after every epoch) and their builds' manifests."""
    rows = {}
    for name in names:
        row = ROWS[name]
        record = {"model": row.model, "quant": row.quant, "recipe": row.recipe, "options": row.options,
                  "starts_from": row.fp}
        metrics_path = run_dir(args, name) / "metrics.json"
        error = config_error(args, row)
        if error is not None:
            rows[name] = {**record, "status": "skipped", "reason": error}
            continue
        if not metrics_path.exists() and row.only_without and declared(row.only_without):
            rows[name] = {**record, "status": "skipped",
                          "reason": f"trains only with an hwq without the option {row.only_without}"}
            continue
        if not metrics_path.exists():
            log = Path(args.runs) / f"{name}.log"
            if log.exists() and "Error" in log.read_text(errors="replace"):
                reason = last_error_line(log)
            else:
                reason = "training, no epoch done yet" if (run_dir(args, name) / "train.log").exists() else "not run"
            rows[name] = {**record, "status": "missing", "reason": reason}
            continue
        metrics = json.loads(metrics_path.read_text())
        history = metrics["history"]
        accs = [h["test_acc"] for h in history]
        rows[name] = {**record, "status": "complete" if len(history) == args.epochs else "unfinished",
                      "test_acc": accs[-1] if accs else None,
                      "mean_last": statistics.fmean(accs[-args.last:]) if accs else None,
                      "epochs": len(history), "epochs_planned": args.epochs,
                      "seconds": round(sum(h["seconds"] for h in history), 1),
                      "n_train": metrics.get("dataset", {}).get("n_train"),
                      "n_test": metrics.get("dataset", {}).get("n_test"),
                      "history_test_acc": accs, "history": history}
        if row.fp is not None:
            rows[name]["estimate"] = estimate_record(args, name)
    add_gaps(rows)
    return {"benchmark": "issue 16: CIFAR-10, BiTAT second design vs plain and two-step binarization",
            "note": args.note, "command": " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
            "args": vars(args), "wall_seconds": wall_seconds, "machine": bench_bitat._machine("cpu"),
            "last": args.last, "rows": rows}


def add_gaps(rows: dict) -> None:
    """gap recovered = (acc - plain mobilenet) / (fp - plain mobilenet), for each full-precision reference."""
    def acc(name: str) -> float | None:
        row = rows.get(name, {})
        return row.get("test_acc") if row.get("status") == "complete" else None

    low = acc(GAP_FROM)
    for row in rows.values():
        for fp in GAP_TO:
            high = acc(fp)
            ok = row.get("status") == "complete" and None not in (low, high) and high != low
            row[f"gap_vs_{fp}"] = round((row["test_acc"] - low) / (high - low), 3) if ok else None


def write_results(results: dict, out: Path) -> None:
    bench_bitat.write_outputs(results, out, markdown, lambda r, p: bench_bitat.plot_history(plot_view(r), p))


def plot_view(results: dict) -> dict:
    """The results in bench_bitat's suite layout, so its per-epoch plot draws them (trained rows only)."""
    args = results["args"]
    rows = {name: row for name, row in results["rows"].items() if row.get("history_test_acc")}
    return {"suites": {"cifar10": {"model": "mobilenet / reactnet", "dataset": "cifar10", "rows": rows,
                                   "options": {"width": args["width"]}, "train_subset": args["train_subset"]}}}


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}"


def _estimate_cells(row: dict) -> list[str]:
    est = row.get("estimate")
    if row.get("starts_from") is None:
        return ["n/a (float)", "", ""]
    if not est:
        return ["-"] * 3
    if "error" in est:
        return [est["error"].replace("|", "&#124;"), "", ""]
    fps = "-" if est.get("fps") is None else f"{est['fps']:,.0f}"
    return [f"{est.get('lut'):,}" if est.get("lut") is not None else "-", f"{est.get('bram')}", fps]


def markdown(results: dict) -> str:
    args, last = results["args"], results["last"]
    wall = f"{results['wall_seconds']} s wall" if results["wall_seconds"] is not None else "tabulated from the runs"
    lines = [f"Command: `{results['command']}` ({results['machine']['device_name']}, {wall})", ""]
    if results.get("note"):
        lines += [results["note"], ""]
    lines += bench_bitat.update_lines(results, str)
    subset = f"{args['train_subset']} class-balanced training images" if args["train_subset"] else "all 50,000"
    lines += [f"### CIFAR-10 (JPEG copy), width {args['width']}, {subset}, {args['epochs']} epochs, seed "
              f"{args['seed']}, whole 10,000-image test set", "",
              f"| row | model | training | final top-1 % | mean of the last {last} epochs % "
              "| gap recovered (plain mobilenet = 0, fp mobilenet = 1) | gap recovered (fp reactnet = 1) "
              "| epochs | seconds | LUT | BRAM18 | fps (Pynq-Z2, 100 MHz) |",
              "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, row in results["rows"].items():
        options = ", ".join(f"{k}={v}" for k, v in row["options"].items() if k != "float_act")
        training = row["quant"] + (f", {row['recipe']}" if row["recipe"] != "plain" else "") + \
            (f" ({options})" if options else "")
        if row["status"] in ("skipped", "missing"):
            reason = row["reason"].replace("|", "&#124;")
            lines.append(f"| {name} | {row['model']} | {training} | {row['status']}: {reason} "
                         "| | | | | | | | |")
            continue
        gaps = ["-" if row[f"gap_vs_{fp}"] is None else f"{row[f'gap_vs_{fp}']:.2f}" for fp in GAP_TO]
        epochs = f"{row['epochs']}" if row["status"] == "complete" else \
            f"{row['epochs']}/{row['epochs_planned']} (unfinished)"
        lines.append(f"| {name} | {row['model']} | {training} | {_pct(row['test_acc'])} | {_pct(row['mean_last'])} "
                     f"| {' | '.join(gaps)} | {epochs} | {row['seconds']} | {' | '.join(_estimate_cells(row))} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
