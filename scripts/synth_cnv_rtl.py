# SPDX-License-Identifier: BSD-3-Clause
"""Place and route the open backend's Verilog of a FINN-folded network for an open board (no simulation).

Composes the open backend's public steps (``hwq.rtl.steps``) on an existing FINN build: from its
``correct_datatypes`` checkpoint, ``read_layers``, ``generate_verilog``, ``synthesise`` (Yosys) and
``place_and_route`` (nextpnr, packer) for the board; writes ``result.json`` (resources, Fmax, FPS at Fmax, the
steps' seconds) under ``--out``. For designs too slow to simulate in ``hwq build --backend open`` (CNV:
``scripts/sim_cnv_rtl.py`` checks it bit-exactly instead); ``measured`` uses the folding bound as the cycles per
image.

    python scripts/synth_cnv_rtl.py runs/cnv-w1a1-cifar10/build-pynq-z2 --board ulx3s-85f --out build-rtl-tmp/cnv-85f
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def main() -> None:
    from qonnx.core.modelwrapper import ModelWrapper

    from hwq._io import write_json
    from hwq.dataflow.driver import Step, run_steps, step_checkpoints
    from hwq.dataflow.progress import StepProgress
    from hwq.rtl.config import OpenBuildConfig
    from hwq.rtl.steps import OpenBuildContext, open_steps, step_generate_verilog, step_read_layers

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("build", type=Path, help="a FINN build folder (its manifest names the step checkpoints)")
    ap.add_argument("--board", default="ulx3s-85f")
    ap.add_argument("--out", type=Path, default=Path("build-rtl-tmp/synth"))
    args = ap.parse_args()
    config = OpenBuildConfig(board=args.board)
    checkpoints = step_checkpoints(args.build)
    ctx = OpenBuildContext.for_steps(args.out, config, None, checkpoints)
    steps = {name: run for name, run in open_steps(config)}
    report: dict = {"build": str(args.build), "steps": []}

    def no_simulation(model, ctx):
        """Instead of simulating: the folding bound as the cycles per image (what the simulation measures for a
        design without stalls)."""
        bound = ctx.reports["design"]["cycles_bound"]
        return model, {"simulation": {"cycles_per_image": bound, "latency_cycles": None, "simulated": False}}

    chain = [Step("read_layers", step_read_layers), Step("generate_verilog", step_generate_verilog),
             Step("cycles_bound", no_simulation), Step("synthesise", steps["synthesise"]),
             Step("place_and_route", steps["place_and_route"])]
    with StepProgress(f"{args.board} (open backend)") as shown:
        run_steps(chain, ModelWrapper(str(checkpoints["correct_datatypes"])), ctx, report, progress=shown,
                  save=False)
    result = {**report["synthesis"], "board": args.board, "cycles_bound": report["design"]["cycles_bound"],
              "fps_at_fmax": report["measured"]["fps"], "steps": report["steps"]}
    write_json(args.out / "result.json", result)
    print(json.dumps(result, indent=1, default=str))


if __name__ == "__main__":
    main()
