# SPDX-License-Identifier: BSD-3-Clause
"""Simulate the open backend's Verilog of a FINN-folded CNV bit-exactly on CIFAR-10 test images (Icarus).

Reads the ``correct_datatypes`` graph of an existing FINN build (no FINN run), checks the NumPy reference against
finn's execution of the abstract HW graph (``verify_bit_exact``), generates the design, simulates ``--images``
test images (free-running, then with random back-pressure unless ``--no-back-pressure``) with Icarus or
Verilator and writes the measurements as JSON. Icarus is slow on a design this size.

    python scripts/sim_cnv_rtl.py runs/cnv-w1a1-cifar10/build-pynq-z2 --images 2 --out build-rtl-tmp/cnv
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np


def _step_file(build: Path, step: str) -> Path:
    found = sorted((build / "intermediate").glob(f"*_{step}.onnx"))
    if not found:
        raise SystemExit(f"{build / 'intermediate'}: no '{step}' model")
    return found[-1]


def main() -> None:
    from qonnx.core.modelwrapper import ModelWrapper

    from hwq.data import load_dataset
    from hwq.rtl.build import _finn_software
    from hwq.rtl.generate import generate_verilog
    from hwq.rtl.layers import layers_from_model, run_layers
    from hwq.rtl.simulate import simulate

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("build", type=Path, help="a FINN build folder holding intermediate/*_correct_datatypes.onnx")
    ap.add_argument("--images", type=int, default=2, help="test images (2 or more to measure cycles per image)")
    ap.add_argument("--out", type=Path, default=Path("build-rtl-tmp/cnv"))
    ap.add_argument("--simulator", default="icarus", help="icarus or verilator (compiles for minutes, runs faster)")
    ap.add_argument("--no-back-pressure", action="store_true", help="skip the second pass with random stalls")
    args = ap.parse_args()

    layers = layers_from_model(ModelWrapper(str(_step_file(args.build, "correct_datatypes"))))
    x = load_dataset("cifar10", None).test_x[:args.images].numpy().astype(np.int64)
    x = x.transpose(0, 2, 3, 1).reshape(len(x), -1)            # NCHW -> NHWC, the streamlined graph's layout
    expected = run_layers(layers, x)
    finn = _finn_software(_step_file(args.build, "verify_bit_exact"), x)
    if not np.array_equal(finn.reshape(expected.shape), expected):
        raise SystemExit("the NumPy reference differs from finn's execution of the HW graph")
    design = generate_verilog(layers, args.out / "rtl", top="cnv")
    started = time.perf_counter()
    bp = {} if args.no_back_pressure else {"p_gap": 0.2, "p_stall": 0.3}
    sim = simulate(design, x, expected, args.out / f"sim-{args.simulator}", simulator=args.simulator, **bp)
    report = {"images": len(x), "classes": expected.ravel().tolist(), "bit_exact": True,
              "folding_bound_cycles": design.cycles_bound, "layer_cycles": design.layer_cycles,
              "wall_seconds": round(time.perf_counter() - started, 1), **sim}
    (args.out / "report.json").write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
