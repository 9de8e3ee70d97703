#!/usr/bin/env python
# SPDX-License-Identifier: BSD-3-Clause
"""Benchmark (issue 17): every training method of the reading list in one table, MQBench-style, deployed.

Every cell of a suite (a model on a dataset) is one method at one bit-width (W1A1, W2A2, W4A4, where the method's
quantizer family takes it), trained with the same epochs, batch, learning rate, training subset and seeds as every
other cell, with the method's own defaults (no row is tuned). Seed 0 of each cell is then exported (``hwq export``,
checked against PyTorch) and built for the Pynq-Z2 to FINN's estimates (``hwq build --stop-step estimate``, which
runs the layer-by-layer bit-exact gate first). A method this hwq does not have yet, or a bit-width its family does
not take, stays in the table, marked with the reason; a failed training, export or build is recorded with its
one-line error and does not stop the others.

Columns: final test top-1 (mean and spread over the seeds), the mean of the last epochs (averaged over seeds),
the time of a training step relative to ``uniform`` at the same bit-width (every method timed in one process,
interleaved: :func:`step_times`; the runs' own seconds per epoch are in the JSON), FINN's LUT / BRAM18 / fps at
100 MHz, the export check and the build check. Writes ``<results>.json`` (every run's per-epoch history),
``<results>.md`` and ``<results>.png`` (test top-1 against FINN's LUTs, one panel per suite). A rerun of the same
command trains only what is missing (a complete run of the same command is reused, as is its build).

    OMP_NUM_THREADS=1 python scripts/bench_methods.py --suites mnist_tfc --epochs 5 --seeds 0,1,2 --jobs 2 \\
        --runs runs/bench-methods --results benchmarks/methods_mnist_tfc          # the MNIST TFC table
    python scripts/bench_methods.py ... --collect     # train nothing: tabulate what is under --runs
    python scripts/bench_methods.py --results benchmarks/methods_mnist_tfc --from-json   # rewrite .md/.png
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import bench_bitat  # noqa: E402  (run, _machine)
import bench_bitat2  # noqa: E402  (estimate_record_of, last_error_line)

#: The reading list's methods and the existing ones, in the issue's order (the table's rows).
METHODS = ("uniform", "n2uq", "bitat", "lsq", "noise", "saq", "hero", "osc", "dirnet", "lqnet", "lns-madam", "adder",
           "ssql", "once")
BITS = ((1, 1), (2, 2), (4, 4))
#: Families that are uniform's sign quantizer at 1 bit (docs/methods.md says so for each): their W1A1 cell would
#: train the same network as uniform's, so the table says that instead of training it again.
UNIFORM_AT_1_BIT = ("lsq", "noise", "osc")


@dataclass(frozen=True)
class Suite:
    model: str
    dataset: str
    #: the methods this suite trains (the compact backbone: the methods that target one)
    methods: tuple[str, ...] = METHODS
    options: tuple[tuple[str, object], ...] = ()


SUITES = {
    "mnist_tfc": Suite("tfc", "mnist"),
    "cifar10_cnv": Suite("cnv", "cifar10"),
    "mnist_compact": Suite("mobilenet_tiny", "mnist", ("uniform", "osc", "dirnet", "bitat"), (("width", 0.5),)),
    # seconds, no data folder: what the test runs
    "digits_tfc": Suite("tfc", "digits"),
}


@dataclass(frozen=True)
class Cell:
    suite: str
    method: str
    wbits: int
    abits: int

    @property
    def name(self) -> str:
        return f"{self.method}-w{self.wbits}a{self.abits}"


def cells(args) -> list[Cell]:
    return [Cell(suite, method, w, a) for suite in args.suites for method in SUITES[suite].methods
            if method in args.methods for w, a in args.bits]


def unavailable(cell: Cell) -> str | None:
    """Why this hwq cannot train the cell (no such method, a bit-width its family does not take), or None."""
    from hwq import catalog
    from hwq.methods import METHODS as REGISTERED

    if cell.method not in REGISTERED:
        return "not in this hwq yet (issue 17 open)"
    if cell.wbits < REGISTERED[cell.method].min_wbits:
        return f"n/a: --method {cell.method} trains W{REGISTERED[cell.method].min_wbits} and more"
    family = table_quant(cell.method)
    if family in UNIFORM_AT_1_BIT and (cell.wbits, cell.abits) == (1, 1):
        return f"= uniform W1A1: --quant {family} is uniform's sign quantizer at 1 bit"
    if family in catalog.FAMILIES:
        _, wbits, abits = catalog.FAMILIES[family]
        if cell.wbits not in wbits or cell.abits not in abits:
            return f"n/a: --quant {family} takes W{','.join(map(str, wbits))} A{','.join(map(str, abits))}"
    return None


def method_quant(method: str) -> str:
    from hwq.methods import METHODS as REGISTERED

    return REGISTERED[method].quant


def method_trains_with_dropout(method: str) -> bool:
    from hwq.methods import METHODS as REGISTERED

    return REGISTERED[method].dropout


def table_quant(method: str) -> str:
    """The family a method trains in the table: its own, except that a method of the objective alone whose
    default is float (HERO) trains the deployable ``uniform`` family, as every other row."""
    from hwq.methods import METHODS as REGISTERED

    quant = method_quant(method)
    return "uniform" if quant == "float" and REGISTERED[method].any_quant else quant


def run_dir(args, cell: Cell, seed: int) -> Path:
    return Path(args.runs) / cell.suite / f"{cell.name}-s{seed}"


def train_command(args, cell: Cell, seed: int) -> list[str]:
    suite = SUITES[cell.suite]
    cmd = [sys.executable, "-m", "hwq", "train", "--model", suite.model, "--dataset", suite.dataset,
           "--method", cell.method, "--wbits", str(cell.wbits), "--abits", str(cell.abits),
           "--epochs", str(args.epochs), "--batch-size", str(args.batch_size), "--lr", str(args.lr),
           "--seed", str(seed), "--threads", "1", "--device", args.device, "--out", str(run_dir(args, cell, seed)),
           "--overwrite", "--no-progress"]
    if table_quant(cell.method) != method_quant(cell.method):
        cmd += ["--quant", table_quant(cell.method)]
    if not method_trains_with_dropout(cell.method):  # AdderNet: the method itself refuses dropout (its reason)
        cmd += ["--dropout", "0"]
    if args.data_dir:
        cmd += ["--data-dir", args.data_dir]
    if args.train_subset:
        cmd += ["--train-subset", str(args.train_subset)]
    if args.test_subset:
        cmd += ["--test-subset", str(args.test_subset)]
    for key, value in suite.options:
        cmd += ["--option", f"{key}={json.dumps(value)}"]
    return cmd


def trained(args, cell: Cell, seed: int) -> bool:
    """A complete run of exactly this command is there (so a rerun of the benchmark reuses it)."""
    run = run_dir(args, cell, seed)
    metrics, command = run / "metrics.json", run / "command.json"
    return (metrics.exists() and json.loads(metrics.read_text()).get("complete") and command.exists()
            and json.loads(command.read_text()) == train_command(args, cell, seed)[1:])


def deploy(args, cell: Cell, slots: threading.Semaphore) -> None:
    """Export seed 0 and build it to FINN's estimates, unless a build newer than its training is there."""
    run = run_dir(args, cell, 0)
    manifest = run / "build-pynq-z2" / "manifest.json"
    if manifest.exists() and manifest.stat().st_mtime > (run / "metrics.json").stat().st_mtime:
        return
    hwq = [sys.executable, "-m", "hwq"]
    steps = [([*hwq, "export", str(run), "--verify-samples", str(args.export_samples)], "bench-export.log"),
             ([*hwq, "build", str(run), "--board", "pynq-z2", "--stop-step", "estimate", "--verify-samples",
               str(args.build_samples), "--no-progress"], "bench-build.log")]
    for cmd, log in steps:
        try:
            bench_bitat.run(cmd, run / log, slots)
        except RuntimeError:
            return  # collect() reads the one-line error from the log or the failed manifest


def train_all(args) -> None:
    from hwq.data import load_dataset

    for suite in args.suites:  # decode/cache once, before parallel processes race to do it
        load_dataset(SUITES[suite].dataset, args.data_dir)
    slots = threading.Semaphore(max(1, args.jobs))

    def one(cell: Cell) -> None:
        if unavailable(cell):
            return
        for seed in args.seeds:
            with slots:
                if trained(args, cell, seed):
                    continue
                cmd = train_command(args, cell, seed)
                log = Path(args.runs) / cell.suite / f"{cell.name}-s{seed}.log"
                try:
                    bench_bitat.run(cmd, log, threading.Semaphore())
                except RuntimeError as error:
                    print(error, file=sys.stderr, flush=True)
                    if seed == 0:
                        return
                    continue
                (run_dir(args, cell, seed) / "command.json").write_text(json.dumps(cmd[1:]) + "\n")
            print(f"trained {cell.suite} {cell.name} seed {seed}", flush=True)
        if args.deploy and trained(args, cell, 0):
            deploy(args, cell, slots)

    todo = cells(args)
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        for job in [pool.submit(one, cell) for cell in todo]:
            job.result()


# --- step time, every method in one process -------------------------------------------------------------------
PROGRESS_POINTS = (0.1, 0.5, 0.9)


def step_times(args, suite_name: str, todo: list[Cell], steps: int = 8, warmup: int = 2) -> dict[str, float]:
    """Milliseconds of one training step (``hwq.train.loop.train_step`` on one batch of ``--batch-size``) of each
    cell's model, all in this process on one thread, interleaved step by step, so that every ratio to uniform
    shares the machine's load (the runs' seconds per epoch do not: they ran at different times). A method whose
    cost changes over the training (SSQL's pretraining, BiTAT's phases) is timed at progress 0.1, 0.5 and 0.9 and
    the three medians averaged."""
    import torch

    from hwq.data import Dataset, load_dataset
    from hwq.train import TrainConfig
    from hwq.train.hooks import ModelHooks
    from hwq.train.loop import _Run, attach_teacher, build_model, make_optimizer, model_spec_for, train_step

    suite = SUITES[suite_name]
    dataset = load_dataset(suite.dataset, args.data_dir)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    runs = {}
    for cell in todo:
        config = TrainConfig(model=suite.model, dataset=suite.dataset, method=cell.method,
                             quant=table_quant(cell.method), wbits=cell.wbits, abits=cell.abits, lr=args.lr,
                             batch_size=args.batch_size, threads=1, model_options=dict(suite.options),
                             dropout=0.2 if method_trains_with_dropout(cell.method) else 0.0)
        torch.manual_seed(0)
        model = build_model(model_spec_for(config, dataset)).train()
        attach_teacher(model, None)
        runs[cell.name] = _Run(config, torch.device("cpu"), dataset, None, model, make_optimizer(model, config),
                               None, [], 0, {}, ModelHooks(model), None)
    images = Dataset.to_float(dataset.train_x[:args.batch_size])
    labels = dataset.train_y[:args.batch_size]
    times = {(name, p): [] for name in runs for p in PROGRESS_POINTS}
    try:
        for i in range(warmup + steps):
            for p in PROGRESS_POINTS:
                for name, run in runs.items():
                    started = time.perf_counter()
                    float(train_step(run, images, labels, p)[0].detach())
                    if i >= warmup:
                        times[name, p].append(time.perf_counter() - started)
    finally:
        torch.set_num_threads(before)
    return {name: 1e3 * statistics.fmean(statistics.median(times[name, p]) for p in PROGRESS_POINTS)
            for name in runs}


# --- the table -------------------------------------------------------------------------------------------------
def seed_record(args, cell: Cell, seed: int) -> dict:
    run = run_dir(args, cell, seed)
    metrics_path = run / "metrics.json"
    if not metrics_path.exists():
        log = Path(args.runs) / cell.suite / f"{cell.name}-s{seed}.log"
        error = bench_bitat2.last_error_line(log) if log.exists() and "rror" in log.read_text(errors="replace") \
            else None
        return {"seed": seed, "status": "failed" if error else "missing", "error": error}
    metrics = json.loads(metrics_path.read_text())
    history = metrics.get("history", [])
    accs = [h["test_acc"] for h in history]
    return {"seed": seed, "status": "complete" if metrics.get("complete") and len(history) == args.epochs
            else "unfinished", "test_acc": accs[-1] if accs else None,
            "mean_last": statistics.fmean(accs[-args.last:]) if accs else None,
            "seconds_per_epoch": statistics.fmean(h["seconds"] for h in history) if history else None,
            "epochs": len(history), "n_train": metrics.get("dataset", {}).get("n_train"),
            "history": history}


def export_check(run: Path) -> bool | None:
    path = run / "export.json"
    if not path.exists():
        return None
    return bool(json.loads(path.read_text()).get("verification", {}).get("passed"))


def cell_record(args, cell: Cell) -> dict:
    record = {"suite": cell.suite, "method": cell.method, "wbits": cell.wbits, "abits": cell.abits}
    reason = unavailable(cell)
    if reason:
        return {**record, "status": "unavailable", "reason": reason}
    seeds = [seed_record(args, cell, seed) for seed in args.seeds]
    done = [s for s in seeds if s["status"] == "complete"]
    record.update(seeds=seeds, seeds_complete=len(done), status="complete" if len(done) == len(seeds) else
                  ("partial" if done else next((s["status"] for s in seeds if s["status"] == "failed"), "missing")))
    if done:
        finals = [s["test_acc"] for s in done]
        record.update(test_acc_mean=statistics.fmean(finals),
                      test_acc_std=statistics.stdev(finals) if len(finals) > 1 else 0.0,
                      mean_last=statistics.fmean(s["mean_last"] for s in done),
                      seconds_per_epoch=statistics.fmean(s["seconds_per_epoch"] for s in done))
    else:
        record["reason"] = next((s["error"] for s in seeds if s.get("error")), "not trained")
    run = run_dir(args, cell, 0)
    record["export_passed"] = export_check(run)
    record["estimate"] = bench_bitat2.estimate_record_of(run)
    return record


def add_relative_time(rows: list[dict], key: str, out: str) -> None:
    """``row[out]`` = ``row[key]`` / uniform's at the same bit-width in the same suite."""
    base = {(r["suite"], r["wbits"], r["abits"]): r.get(key) for r in rows if r["method"] == "uniform"}
    for row in rows:
        ref = base.get((row["suite"], row["wbits"], row["abits"]))
        own = row.get(key)
        row[out] = round(own / ref, 2) if own and ref else None


def collect(args, wall_seconds: float | None) -> dict:
    todo = cells(args)
    rows = [cell_record(args, cell) for cell in todo]
    if args.timing:
        for suite in args.suites:
            timed = [c for c in todo if c.suite == suite and not unavailable(c)]
            for cell, ms in zip(timed, step_times(args, suite, timed).values()):
                next(r for r in rows if r["suite"] == suite and r["method"] == cell.method
                     and r["wbits"] == cell.wbits)["step_ms"] = round(ms, 3)
    add_relative_time(rows, "seconds_per_epoch", "time_vs_uniform")
    add_relative_time(rows, "step_ms", "step_vs_uniform")
    return {"benchmark": "issue 17: the reading list's QAT methods, deployed (FINN, Pynq-Z2)",
            "note": args.note, "command": " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
            "args": {k: v for k, v in vars(args).items()}, "wall_seconds": wall_seconds,
            "machine": bench_bitat._machine(args.device), "rows": rows}


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}"


def _cell(text: object) -> str:
    return str(text).replace("|", "&#124;")


def build_cells(row: dict) -> list[str]:
    est = row.get("estimate")
    if not est:
        return ["-", "-", "-", "-"]
    if "error" in est:
        return [_cell(est["error"]), "", "", "failed"]
    fps = "-" if est.get("fps") is None else f"{est['fps']:,.0f}"
    lut = "-" if est.get("lut") is None else f"{est['lut']:,}"
    return [lut, f"{est.get('bram')}", fps, "bit-exact" if est.get("bit_exact") else "not bit-exact"]


def markdown(results: dict) -> str:
    args = results["args"]
    wall = f"{results['wall_seconds']} s wall" if results["wall_seconds"] is not None else "tabulated from the runs"
    lines = [f"Command: `{results['command']}` ({results['machine']['device_name']}, {wall})", ""]
    if results.get("note"):
        lines += [results["note"], ""]
    lines += bench_bitat.update_lines(results, lambda row: f"{row[1]} W{row[2]}A{row[3]}")
    seeds = ",".join(map(str, args["seeds"]))
    for suite in args["suites"]:
        spec = SUITES[suite]
        subset = f"{args['train_subset']} class-balanced training images" if args["train_subset"] else \
            "the whole training set"
        test = f"the same {args['test_subset']} class-balanced test images for every row" \
            if args.get("test_subset") else "the whole test set"
        lines += [f"### {spec.model} on {spec.dataset}: {subset}, {args['epochs']} epochs, batch "
                  f"{args['batch_size']}, lr {args['lr']}, seeds {seeds}, {test}", "",
                  f"| method | bits | final top-1 % (mean ± std over seeds) | mean of the last "
                  f"{min(args['last'], args['epochs'])} epochs % "
                  "| step time vs uniform | LUT | BRAM18 | fps (Pynq-Z2, 100 MHz) | build check | export check |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        for row in (r for r in results["rows"] if r["suite"] == suite):
            bits = f"W{row['wbits']}A{row['abits']}"
            if row["status"] == "unavailable" or "test_acc_mean" not in row:
                lines.append(f"| {row['method']} | {bits} | {row['status']}: {_cell(row.get('reason'))} "
                             "| | | | | | | |")
                continue
            acc = f"{_pct(row['test_acc_mean'])} ± {100 * row['test_acc_std']:.2f}"
            if row["status"] != "complete":
                acc += f" ({row['seeds_complete']} of {len(row['seeds'])} seeds)"
            vs = "-" if row.get("step_vs_uniform") is None else f"{row['step_vs_uniform']:.2f}x"
            export = {True: "passed", False: "failed", None: "-"}[row["export_passed"]]
            lines.append(f"| {row['method']} | {bits} | {acc} | {_pct(row['mean_last'])} | {vs} | "
                         f"{' | '.join(build_cells(row))} | {export} |")
        lines.append("")
    return "\n".join(lines)


def plot(results: dict, path: Path) -> None:
    """Test top-1 against FINN's LUT estimate, one panel per suite, one marker per method, labelled by bits."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    suites = results["args"]["suites"]
    fig, axes = plt.subplots(1, len(suites), figsize=(6 * len(suites), 4.2), squeeze=False)
    for ax, suite in zip(axes[0], suites):
        for method in METHODS:
            points = [(r["estimate"]["lut"], 100 * r["test_acc_mean"], f"W{r['wbits']}A{r['abits']}")
                      for r in results["rows"] if r["suite"] == suite and r["method"] == method
                      and "test_acc_mean" in r and (r.get("estimate") or {}).get("lut")]
            if not points:
                continue
            xs, ys, labels = zip(*points)
            ax.scatter(xs, ys, label=method, s=18)
            for x, y, label in points:
                ax.annotate(label, (x, y), fontsize=6, xytext=(2, 2), textcoords="offset points")
        spec = SUITES[suite]
        ax.set_title(f"{spec.model} on {spec.dataset}", fontsize=9)
        ax.set_xscale("log")
        ax.set_xlabel("LUT (FINN estimate, Pynq-Z2)")
        ax.set_ylabel("test top-1 %")
        ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=100, format="png")
    plt.close(fig)


def write_results(results: dict, out: Path) -> None:
    bench_bitat.write_outputs(results, out, markdown, plot)


def _names(text: str, known, what: str, parser) -> list[str]:
    names = [n for n in text.split(",") if n]
    unknown = [n for n in names if n not in known]
    if unknown:
        parser.error(f"--{what}: unknown {', '.join(unknown)}; known: {', '.join(known)}")
    return names


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suites", default="mnist_tfc", help=f"comma-separated, of {', '.join(SUITES)}")
    parser.add_argument("--methods", default=",".join(METHODS), help="comma-separated (default: all)")
    parser.add_argument("--bits", default="1,2,4", help="W=A bit-widths, comma-separated (default: 1,2,4)")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (default: 0,1,2)")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", dest="batch_size", type=int, default=100)
    parser.add_argument("--lr", type=float, default=0.02, help="hwq train's default, for every row")
    parser.add_argument("--train-subset", dest="train_subset", type=int, default=None)
    parser.add_argument("--test-subset", dest="test_subset", type=int, default=None,
                        help="score every row on the same class-balanced test images (CPU-sized CIFAR-10)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--jobs", type=int, default=1, help="processes at a time (training, export, build)")
    parser.add_argument("--no-deploy", dest="deploy", action="store_false", help="no export and FINN estimate")
    parser.add_argument("--no-timing", dest="timing", action="store_false",
                        help="no step-time column (it times every cell's step in this process)")
    parser.add_argument("--export-samples", dest="export_samples", type=int, default=20)
    parser.add_argument("--build-samples", dest="build_samples", type=int, default=5)
    parser.add_argument("--last", type=int, default=3, help="the table also averages the last N epochs")
    parser.add_argument("--data-dir", dest="data_dir", default=None)
    parser.add_argument("--runs", default="runs/bench-methods")
    parser.add_argument("--results", default="benchmarks/methods")
    parser.add_argument("--note", default="", help="free text stored with the results")
    parser.add_argument("--collect", action="store_true", help="train nothing: tabulate the runs under --runs")
    parser.add_argument("--update", action="store_true",
                        help="replace these cells' rows in <results>.json (same settings), keeping the others")
    parser.add_argument("--from-json", dest="from_json", action="store_true",
                        help="train nothing: rewrite <results>.md and <results>.png from <results>.json")
    args = parser.parse_args(argv)
    out = Path(args.results)
    if args.from_json:
        write_results(json.loads(out.with_suffix(".json").read_text()), out)
        return
    args.suites = _names(args.suites, SUITES, "suites", parser)
    args.methods = _names(args.methods, METHODS, "methods", parser)
    args.bits = [(int(b), int(b)) for b in args.bits.split(",") if b]
    args.seeds = [int(s) for s in args.seeds.split(",") if s]
    started = time.perf_counter()
    if not args.collect:
        train_all(args)
    results = collect(args, None if args.collect else round(time.perf_counter() - started, 1))
    write_results(update(out, results) if args.update else results, out)


#: What must be the same for an update's rows to stand in the table they replace rows of.
SAME_SETTINGS = ("epochs", "batch_size", "lr", "train_subset", "test_subset", "seeds", "device", "deploy",
                 "export_samples", "build_samples", "last")


def update(out: Path, results: dict) -> dict:
    """``<out>.json`` with these cells' rows replaced (:func:`bench_bitat.update_table`), relative times redone."""
    table = bench_bitat.update_table(out, results, SAME_SETTINGS,
                                     key=lambda r: (r["suite"], r["method"], r["wbits"], r["abits"]))
    add_relative_time(table["rows"], "seconds_per_epoch", "time_vs_uniform")
    add_relative_time(table["rows"], "step_ms", "step_vs_uniform")
    return table


if __name__ == "__main__":
    main()
