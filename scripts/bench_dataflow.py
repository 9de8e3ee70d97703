# SPDX-License-Identifier: BSD-3-Clause
"""Benchmark of the build stage: FINN's *estimates* for TFC/SFC/LFC-w1a1 (MNIST shapes) and CNV-w1a1 (CIFAR-10
shapes), folded for Pynq-Z2 and ZCU104, next to published measured figures (../shared/docs/ANCHORS.md).

The models are untrained (random weights, random BatchNorm statistics): estimates depend on the topology and the
folding, not on the weight values. Every build still passes both gates on real test images. Without a training
run there is no ``export.json``, so the builds run with ``force=True`` (recorded in each manifest).

The folding is the default, the fastest one FINN's SetFolding reaches that fits 80% of the board; the
``pow2_*`` fields give what the earlier search over powers of two found (the best power-of-two cycle target
that fits), for comparison.

    .venv/bin/python scripts/bench_dataflow.py                   # writes benchmarks/dataflow.{json,md}
    .venv/bin/python scripts/bench_dataflow.py --models tfc --boards pynq-z2
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

from hwq._io import write_atomic, write_json
from hwq.boards import load_board
from hwq.dataflow import BuildConfig, estimates, run_build
from hwq.dataflow.driver import step_checkpoint
from hwq.dataflow.errors import FoldingError
from hwq.dataflow.finn_compat import finn_session
from hwq.export import export_qonnx_model
from hwq.manifest import estimate_totals
from hwq.models import ModelSpec, build_model

SHAPES = {"tfc": ((1, 28, 28), "mnist"), "sfc": ((1, 28, 28), "mnist"), "lfc": ((1, 28, 28), "mnist"),
          "cnv": ((3, 32, 32), "cifar10")}
#: Published figures (measured on boards, not estimates), from ANCHORS.md.
PUBLISHED = {
    "tfc": "837,019 img/s (finn-examples, PYNQ board, 100 MHz); 1.09 M img/s AUP-ZU3",
    "lfc": "356,633 img/s (BNN-PYNQ, PYNQ board)",
    "sfc": "12.3 M img/s, 0.31 us (FINN paper, ZC706)",
    "cnv": "3,020 img/s (finn-examples, PYNQ board); 661.5 inf/s (MLPerf Tiny v0.7, PYNQ-Z2 100 MHz)",
}


def make_run(name: str, root: Path) -> Path:
    """An untrained w1a1 model exported as a run directory (random BN statistics avoid exact threshold ties)."""
    shape, dataset = SHAPES[name]
    torch.manual_seed(0)
    model = build_model(ModelSpec(name, 1, 1, image_shape=shape)).eval()
    for module in model.modules():
        if isinstance(module, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
            module.running_mean.uniform_(-3.3, 3.3)
            module.running_var.uniform_(0.5, 2.0)
    run = root / f"{name}-w1a1"
    run.mkdir(parents=True)
    export_qonnx_model(model, run / "model.onnx")
    write_json(run / "metrics.json", {"config": {"dataset": dataset}, "model_spec": {"name": name}})
    return run


def best_power_of_two(build_dir: Path, board_name: str) -> dict:
    """What the search over powers of two (before the lattice search) chose: the smallest 2**k cycle target whose
    SetFolding fits 80% of the board, on the build's specialised graph."""
    from qonnx.core.modelwrapper import ModelWrapper

    board = load_board(board_name)
    model = ModelWrapper(str(step_checkpoint(build_dir, "specialize_layers")))
    with finn_session(build_dir / "scratch-pow2"):
        for k in range(31):
            folded = estimates.fold_to_cycles(model, board, 2 ** k)
            if estimates.fits(folded.summary, 0.8):
                return {"pow2_max_cycles": folded.max_cycles, "pow2_fps": round(folded.fps)}
    return {}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(SHAPES))
    parser.add_argument("--boards", nargs="+", default=["pynq-z2", "zcu104"])
    parser.add_argument("--out", default="benchmarks/dataflow")
    args = parser.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            run = make_run(name, Path(tmp))
            for board in args.boards:
                t0 = time.perf_counter()
                config = BuildConfig(board=board, verify_samples=2, codegen=False, out_dir=str(run / f"b-{board}"),
                                     force=True)
                try:
                    m = run_build(run, config, progress=False)
                except FoldingError:  # recorded, not hidden: the table says it does not fit
                    failed = json.loads((run / f"b-{board}.failed" / "manifest.json").read_text())
                    rows.append({"model": f"{name.upper()}-w1a1", "board": board, "error": failed["error"],
                                 "published": PUBLISHED[name]})
                    continue
                t = estimate_totals(m)
                rows.append({"model": f"{name.upper()}-w1a1", "board": board, "clock_mhz": t["clock_mhz"],
                             "max_cycles": t["max_cycles"], "est_fps": round(t["estimated_fps"]),
                             "est_latency_us": round(t["estimated_latency_us"], 2), "LUT": t["LUT"],
                             "BRAM18": t["BRAM_18K"], "DSP": t["DSP"],
                             "utilisation": {k: round(v, 3) for k, v in m["estimates"]["utilisation"].items()},
                             "bit_exact_images": m["bit_exact"]["n"], "published": PUBLISHED[name],
                             "setfolding_runs": m["folding"]["search"]["setfolding_runs"],
                             "build_seconds": round(time.perf_counter() - t0, 1),
                             **best_power_of_two(run / f"b-{board}", board)})
                print(json.dumps(rows[-1]), file=sys.stderr)
    out = Path(args.out)
    write_json(out.with_suffix(".json"), {"kind": "FINN analytical estimates (finn-plus 1.6.1), untrained weights, "
                                          "fastest folding SetFolding reaches within 80% of each board resource; "
                                          "pow2_*: the best power-of-two cycle target (the earlier search)",
                                          "rows": rows})
    lines = ["| model | board | cycles | est. FPS | est. latency (us) | LUT | BRAM18 | DSP | "
             "powers of two (before): cycles, FPS | published (measured) |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    lines += [f"| {r['model']} | {r['board']} | {r['max_cycles']:,} | {r['est_fps']:,} | {r['est_latency_us']} | "
              f"{r['LUT']:,} | {r['BRAM18']} | {r['DSP']} | {r['pow2_max_cycles']:,}, {r['pow2_fps']:,} | "
              f"{r['published']} |" if "error" not in r else
              f"| {r['model']} | {r['board']} | does not fit (estimate): {r['error']} | | | | | | | {r['published']} |"
              for r in rows]
    write_atomic(out.with_suffix(".md"), lambda p: p.write_text("\n".join(lines) + "\n"))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
