# SPDX-License-Identifier: BSD-3-Clause
"""Simulation speed of Icarus and Verilator on the same generated accelerator: cycles per second of wall time.

Reads the folded graph of a FINN build (the checkpoint of its ``correct_datatypes`` step), generates the Verilog,
streams ``--images`` random images through it free-running on each simulator with the same cocotb bench, checks
every output against the NumPy reference and records the compile seconds, the run seconds and the simulated cycles
per second of the bench's own wall time (without the simulator's startup). Adds (or replaces) the run in
benchmarks/simulators.json.

    .venv/bin/python scripts/bench_simulators.py runs/tfc-digits/build-pynq-z2 --images 2000
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from qonnx.core.modelwrapper import ModelWrapper

from hwq.dataflow.driver import step_checkpoint
from hwq.rtl.generate import generate_verilog
from hwq.rtl.layers import layers_from_model, run_layers
from hwq.rtl.simulate import SIMULATORS, simulate, simulator_version

OUT = Path(__file__).resolve().parents[1] / "benchmarks"


def bench(finn_build: Path, images: int, work: Path, simulators) -> list[dict]:
    layers = layers_from_model(ModelWrapper(str(step_checkpoint(finn_build, "correct_datatypes"))))
    design = generate_verilog(layers, work / "rtl", top="accel")
    x = np.random.default_rng(0).integers(layers.in_type.lo, layers.in_type.hi + 1, (images, layers.in_elems))
    want = run_layers(layers, x)
    rows = []
    for sim in simulators:
        r = simulate(design, x, want, work / sim, simulator=sim)     # free-running: no gaps, no stalls
        rows.append({"simulator": sim, "version": simulator_version(sim), "images": images,
                     "cycles_per_image": r["cycles_per_image"], "cycles_simulated": r["cycles_simulated"],
                     "build_seconds": r["build_seconds"], "run_seconds": r["sim_seconds"],
                     "bench_seconds": r["bench_seconds"], "cycles_per_second": r["cycles_per_second"]})
        print(json.dumps(rows[-1]))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("finn_build", type=Path, help="a FINN build folder (its manifest names the step checkpoints)")
    ap.add_argument("--images", type=int, default=2000)
    ap.add_argument("--work", type=Path, default=Path("build-rtl-tmp/bench-simulators"))
    ap.add_argument("--simulators", nargs="+", default=list(SIMULATORS), choices=SIMULATORS)
    args = ap.parse_args()
    rows = bench(args.finn_build, args.images, args.work, args.simulators)
    command = f"scripts/bench_simulators.py {args.finn_build} --images {args.images}"
    path = OUT / "simulators.json"
    runs = [r for r in (json.loads(path.read_text()) if path.is_file() else []) if r["command"] != command]
    path.write_text(json.dumps(runs + [{"design": str(args.finn_build), "command": command, "rows": rows}],
                               indent=2) + "\n")


if __name__ == "__main__":
    main()
