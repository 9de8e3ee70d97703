# SPDX-License-Identifier: BSD-3-Clause
"""Synthesise a few open-backend builds of untrained models and add them to the cost model's calibration
(hwq/cost/calibration.json), then refit it (hwq.cost.calibration.fit) and print each target's fit error.

Each point: an untrained model (hwq.cost.reference.export_untrained) built by ``hwq build --backend open`` with a
folding file, simulated bit-exactly on 2 random images and synthesised by Yosys + nextpnr for the board; its
nextpnr LUT count is the point's ``synth_lut``. The folding is the cost model's (its layer names), written in
FINN's node names for the build.

    OMP_NUM_THREADS=1 nice .venv/bin/python scripts/calibrate_cost_model.py --only 0 1     # minutes per point
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from hwq.cost import describe_model
from hwq.cost.calibration import CALIBRATION_FILE, fit
from hwq.cost.reference import export_untrained

SMALL_TFC = {"features.2": {"PE": 4, "SIMD": 8}, "features.6": {"PE": 4, "SIMD": 16},
             "features.10": {"PE": 4, "SIMD": 16}, "features.14": {"PE": 2, "SIMD": 16}, "label_select": {"PE": 1}}
MIXED_TFC = {"features.2": 1, "features.4": 4, "features.6": 4, "features.8": 1, "features.14": 4}
#: (target, model, dataset, wbits, abits, precision, board, folding)
POINTS = [
    ("ecp5", "tfc", "digits", 2, 2, {}, "orangecrab-25f", SMALL_TFC),
    ("ecp5", "tfc", "digits", 2, 2, MIXED_TFC, "orangecrab-25f", SMALL_TFC),
    ("ecp5", "tfc", "digits", 4, 4, {}, "ulx3s-85f", SMALL_TFC),
]
FINN_PREFIX = {"mvau": "MVAU", "window": "ConvolutionInputGenerator", "pool": "Pool", "label_select": "LabelSelect"}


def finn_folding(layers, folding: dict, hw_graph) -> dict:
    """The folding in FINN's node names: the cost model's layers and FINN's HW nodes are one chain, in order."""
    from qonnx.core.modelwrapper import ModelWrapper

    nodes = [n for n in ModelWrapper(str(hw_graph)).graph.node]
    out = {"Defaults": {}}
    for layer, node in zip(layers.layers, nodes, strict=True):
        assert node.op_type.startswith(FINN_PREFIX[layer.kind]), (layer.name, node.op_type)
        out[node.name] = dict(folding.get(layer.name, {}))
    return out


def synthesise(point: tuple, work: Path) -> dict:
    from hwq.dataflow.driver import step_checkpoint
    from hwq.rtl.build import OpenBuildConfig, run_open_build

    target, model, dataset, wbits, abits, precision, board, folding = point
    run = export_untrained(work / "run", model, dataset, wbits, abits, precision)
    common = dict(board=board, force=True, calibration=str(run / "images.npz"), verify_samples=2)
    # the FINN node names come from the build's own graph: fold once for the names, then build with the file
    run_open_build(run, OpenBuildConfig(**common, synthesise=False, out_dir=str(work / "names")), stop_step="fold")
    names = finn_folding(describe_model(model, dataset, wbits, abits), folding,
                         step_checkpoint(work / "names", "fold"))
    (work / "folding.json").write_text(json.dumps(names))
    started = time.perf_counter()
    manifest = run_open_build(run, OpenBuildConfig(**common, folding_file=str(work / "folding.json"),
                                                   out_dir=str(work / "build")))
    if manifest["status"] != "done":
        raise RuntimeError(f"open build failed: {manifest.get('error')}")
    lut = manifest["results"]["lut"]
    bits = f"W{wbits}A{abits}" + (" mixed (W1/W4/W2/W4, A4/A1/A2)" if precision else "")
    return {"target": target, "model": model, "wbits": wbits, "abits": abits, "dataset": dataset, "board": board,
            "precision": precision, "folding": folding, "synth_lut": lut,
            "source": f"scripts/calibrate_cost_model.py: untrained {bits}, small folding, nextpnr "
                      f"({time.perf_counter() - started:.0f} s)"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", type=int, nargs="*", help="indices of POINTS (default: all)")
    args = parser.parse_args()
    data = json.loads(CALIBRATION_FILE.read_text())
    points = [{k: v for k, v in p.items() if k != "finn_lut"} for p in data["points"]]
    with tempfile.TemporaryDirectory() as tmp:
        for i in args.only if args.only else range(len(POINTS)):
            new = synthesise(POINTS[i], Path(tmp) / f"point{i}")
            print(json.dumps(new), flush=True)
            points = [p for p in points if p.get("source") != new["source"]] + [new]
            result = fit(points)
            CALIBRATION_FILE.write_text(json.dumps({"about": data.get("about", ""), **result}, indent=1) + "\n")
    for target, entry in result["targets"].items():
        print(target, entry)


if __name__ == "__main__":
    main()
