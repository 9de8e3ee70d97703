# SPDX-License-Identifier: BSD-3-Clause
"""Simulate the open backend's Verilog of a FINN-folded CNV bit-exactly on CIFAR-10 test images (Icarus).

Composes the open backend's public steps (``hwq.rtl.steps``) on an existing FINN build (no FINN run): from its
``correct_datatypes`` checkpoint, ``read_layers``, ``check_reference`` (the NumPy reference against finn's
execution of the abstract HW graph, the build's ``create_dataflow_partition`` checkpoint), ``generate_verilog``
and ``simulate`` (``--images`` test images free-running, then with random back-pressure unless
``--no-back-pressure``, on Icarus or Verilator). Writes the steps' manifest as ``report.json`` under ``--out``.
Icarus is slow on a design this size.

    python scripts/sim_cnv_rtl.py runs/cnv-w1a1-cifar10/build-pynq-z2 --images 2 --out build-rtl-tmp/cnv
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def main() -> None:
    from qonnx.core.modelwrapper import ModelWrapper

    from hwq._io import write_json
    from hwq.data import load_dataset
    from hwq.dataflow.driver import run_steps, step_checkpoints
    from hwq.dataflow.progress import StepProgress
    from hwq.rtl.config import OpenBuildConfig
    from hwq.rtl.steps import OpenBuildContext, open_steps, steps_named

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("build", type=Path, help="a FINN build folder (its manifest names the step checkpoints)")
    ap.add_argument("--images", type=int, default=2, help="test images (2 or more to measure cycles per image)")
    ap.add_argument("--out", type=Path, default=Path("build-rtl-tmp/cnv"))
    ap.add_argument("--simulator", default="icarus", help="icarus or verilator (compiles for minutes, runs faster)")
    ap.add_argument("--no-back-pressure", action="store_true", help="no random input gaps and output stalls")
    args = ap.parse_args()

    bp = {"p_gap": 0.0, "p_stall": 0.0} if args.no_back_pressure else {}
    config = OpenBuildConfig(simulator=args.simulator, synthesise=False, verify_samples=args.images, **bp)
    checkpoints = step_checkpoints(args.build)
    images = load_dataset("cifar10", None).test_x[:args.images].numpy()
    ctx = OpenBuildContext.for_steps(args.out, config, images, checkpoints)
    report = {"build": str(args.build), "steps": [], "source": {"dataset": "cifar10"}}
    model = ModelWrapper(str(checkpoints["correct_datatypes"]))
    with StepProgress("cnv (open backend)") as shown:
        run_steps(steps_named(open_steps(config), "read_layers", "simulate"), model, ctx, report, progress=shown,
                  save=False)
    write_json(args.out / "report.json", report)
    print(json.dumps({k: report[k] for k in ("layers", "simulation")}, indent=1))


if __name__ == "__main__":
    main()
