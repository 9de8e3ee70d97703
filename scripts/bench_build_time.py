#!/usr/bin/env python
# SPDX-License-Identifier: BSD-3-Clause
"""Benchmark: the wall time of ``hwq build`` (FINN backend) against FINN's own estimate-only builder on the same
graph and folding, step by step.

For a trained and exported run (``hwq export``) and a board: (1) ``run_build`` without HLS code generation (what
an estimate-only FINN build does: its steps up to the estimate reports, plus hwq's two gates), (2) the same with
code generation (``hwq build``'s default), (3) FINN's ``build_dataflow_cfg`` with hwq's folding file, steps
``step_qonnx_to_finn`` .. ``step_generate_estimate_reports`` (``ESTIMATE_REPORTS`` only), on the graph after
hwq's input step. Each in this process, one after another; the seconds of each step from hwq's manifest and from
FINN's ``time_per_step.json``. Writes ``benchmarks/build_time.json``.

    OMP_NUM_THREADS=1 .venv/bin/python scripts/bench_build_time.py --run runs/mnist-lfc --board zcu104
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from byo_reference import finn_builder             # scripts/: FINN's estimate-only builder on a build's graph
from hwq._io import write_json


def hwq_build(run: str, board: str, out: Path, codegen: bool, samples: int) -> dict:
    from hwq.dataflow import BuildConfig, run_build

    started = time.perf_counter()
    manifest = run_build(run, BuildConfig(board=board, out_dir=str(out), codegen=codegen, verify_samples=samples),
                         progress=False)
    seconds = time.perf_counter() - started
    return {"seconds": round(seconds, 2), "codegen": codegen, "verify_samples": samples,
            "gate_executor": manifest["bit_exact"]["hw_graph_executor"],
            "steps": {s["name"]: s.get("seconds") for s in manifest["steps"]},
            "lut": manifest["estimates"]["total"]["LUT"], "max_cycles": manifest["estimates"]["total"]["max_cycles"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, help="an exported run directory (hwq export)")
    parser.add_argument("--board", default="zcu104")
    parser.add_argument("--verify-samples", dest="samples", type=int, default=100)
    parser.add_argument("--results", default="benchmarks/build_time.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        estimate_only = hwq_build(args.run, args.board, Path(tmp) / "hwq-estimate-only", False, args.samples)
        with_codegen = hwq_build(args.run, args.board, Path(tmp) / "hwq", True, args.samples)
        finn = finn_builder(Path(tmp) / "hwq", Path(tmp) / "finn", args.board)
    result = {"benchmark": "hwq build vs FINN's estimate-only builder (same graph, same folding)",
              "command": f"python scripts/bench_build_time.py --run {args.run} --board {args.board} "
                         f"--verify-samples {args.samples}",
              "run": args.run, "board": args.board, "hwq_estimate_only": estimate_only,
              "hwq_with_codegen": with_codegen,
              "finn_builder_estimate_only": finn,
              "hwq_estimate_only_minus_finn_s": round(estimate_only["seconds"] - finn["seconds"], 2),
              "machine": {"cpu_count": os.cpu_count(), "load_average": os.getloadavg()}}
    write_json(args.results, result)
    print(f"hwq build (no codegen) {estimate_only['seconds']} s (gate {estimate_only['steps']['verify_bit_exact']} s, "
          f"{estimate_only['gate_executor'].split(' (')[0]}), with codegen {with_codegen['seconds']} s; FINN's "
          f"estimate-only builder {finn['seconds']} s ({finn['status']}); LUT hwq {estimate_only['lut']:,} / FINN "
          f"{finn.get('lut', 0):,} -> {args.results}")


if __name__ == "__main__":
    main()
