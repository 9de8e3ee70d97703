# SPDX-License-Identifier: BSD-3-Clause
"""One lqnet MVAU in integer form vs plane form, same folding: Yosys ``synth_xilinx`` resources of each block (the
measurement behind docs/rtl.md "Plane MVAUs"). Writes benchmarks/plane_block.json.

    .venv/bin/python scripts/bench_plane_block.py                       # the lqnet-like synthetic layer
    .venv/bin/python scripts/bench_plane_block.py --build RUN/build-pynq-z2-open --layer MVAU_hls_1

The synthetic layer is a TFC hidden layer as a W2A2 lqnet run deploys it: MW = MH = 64, UINT2 inputs, weights
``m^T e`` with the per-channel bases such a run learns ((1, 2) or (2, 3): INT4 weights), 3 thresholds, folded
PE=32, SIMD=8 (FINN's folding for the pynq-z2 in that run). ``--build`` reads a layer of a real build instead
(its ``correct_datatypes`` checkpoint), with that build's folding.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import numpy as np

from hwq._io import write_json
from hwq.rtl.generate import generate_verilog
from hwq.rtl.layers import ElemType, MVAULayer
from hwq.rtl.mvau_form import to_plane_form
from hwq.rtl.planes import plane_weights
from hwq.rtl.synth_xilinx import synth_xilinx

OUT = Path(__file__).resolve().parents[1] / "benchmarks" / "plane_block.json"
PART = "xc7z020clg400-1"


def lqnet_like_layer(seed: int = 0) -> MVAULayer:
    """The synthetic W2A2 lqnet hidden layer of the module docstring (integer form)."""
    rng = np.random.default_rng(seed)
    basis = np.array([(1, 2), (2, 3)])[rng.integers(0, 2, 64)]
    w = plane_weights(rng.integers(0, 2, (2, 64, 64)), basis)
    layer = MVAULayer("lqnet_mvau", 64, 64, 32, 8, False, ElemType(2, False), ElemType(2, False), w, None)
    lo, hi = layer.acc_range()
    thr = np.sort(rng.integers(lo // 4, hi // 4 + 1, (64, 3)), axis=1)
    return dataclasses.replace(layer, thresholds=thr)


def build_layer(build: Path, name: str) -> MVAULayer:
    from qonnx.core.modelwrapper import ModelWrapper

    from hwq.dataflow.driver import step_checkpoint
    from hwq.rtl.layers import layers_from_model

    layers = layers_from_model(ModelWrapper(str(step_checkpoint(build, "correct_datatypes"))))
    return next(layer for layer in layers if layer.name == name)


def measure(layer: MVAULayer, work: Path) -> list[dict]:
    """synth_xilinx counts of ``layer``'s block in both forms."""
    graph, report = to_plane_form([layer])
    if report[layer.name]["form"] != "planes":
        raise SystemExit(f"{layer.name}: {report[layer.name]['reason']}")
    rows = []
    for form, block in (("integer", layer), ("planes", graph[0])):
        tag = f"{layer.name}-{form}"
        design = generate_verilog([block], work / tag / "rtl", top=f"{layer.name}_{form}")
        r = synth_xilinx(design, work / tag / "syn", part=PART)
        rows.append({"layer": layer.name, "form": form, "part": PART, "MW": layer.mw, "MH": layer.mh, "PE": layer.pe,
                     "SIMD": layer.simd, "in_type": repr(layer.in_type),
                     "weights": f"{int(layer.weights.min())}..{int(layer.weights.max())}",
                     "planes": report[layer.name]["planes"] if form == "planes" else None,
                     **r["counts"], "seconds": r["seconds"]})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", default="build-rtl-tmp/bench-planes", help="relative: the WebAssembly tools' sandbox")
    ap.add_argument("--build", type=Path, help="an open (or FINN) build folder to take the layer from")
    ap.add_argument("--layer", default="MVAU_hls_1", help="with --build: the layer's node name")
    ap.add_argument("--label", help="with --build: what the build is (recorded as the rows' source with the layer)")
    args = ap.parse_args()
    layer = build_layer(args.build, args.layer) if args.build else lqnet_like_layer()
    source = (f"{args.label or args.build}: {args.layer}" if args.build else
              "synthetic lqnet-like layer (seed 0)")
    rows = json.loads(OUT.read_text()) if OUT.is_file() else []     # rows of other layers stay
    rows = [r for r in rows if r.get("source") != source]
    rows += [{"source": source, **r} for r in measure(layer, Path(args.work))]
    write_json(OUT, rows)


if __name__ == "__main__":
    main()
