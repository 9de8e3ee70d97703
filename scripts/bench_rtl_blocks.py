# SPDX-License-Identifier: BSD-3-Clause
"""Fmax of single MVAU blocks with combinational and pipelined adder trees (Yosys + nextpnr, UP5K and ECP5-25F):
the measurement behind ``hwq.rtl.blocks.TREE_LEVELS_PER_STAGE``. Writes benchmarks/rtl_blocks.{json,md}.

    nice .venv/bin/python scripts/bench_rtl_blocks.py            # about 15 minutes on 2 shared cores
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from hwq._io import write_json
from hwq.rtl.blocks import mvau_pipeline_stages
from hwq.rtl.generate import generate_verilog
from hwq.rtl.layers import ElemType, MVAULayer
from hwq.rtl.synth import synthesise

OUT = Path(__file__).resolve().parents[1] / "benchmarks"
PARTS = {"up5k": ("ice40", "up5k", "sg48", None), "ecp5-25f": ("ecp5", "25k", "CSFBGA285", "8")}


def xnor_block(seed: int = 0) -> MVAULayer:
    """The block of docs/rtl.md: XNOR-popcount MW=32, MH=16, PE=4, SIMD=8 (3 adder levels)."""
    rng = np.random.default_rng(seed)
    return MVAULayer("xnor_mvau", 32, 16, 4, 8, True, ElemType(1, False), ElemType(1, False),
                     rng.integers(0, 2, (32, 16)), rng.integers(10, 22, (16, 1)))


def pixel_block(seed: int = 0) -> MVAULayer:
    """A TFC first layer's kind: UINT8 pixels x +-1 weights, MW=64, MH=16, PE=4, SIMD=32 (5 levels + subtract)."""
    rng = np.random.default_rng(seed)
    return MVAULayer("pixel_mvau", 64, 16, 4, 32, False, ElemType(8, False), ElemType(1, False),
                     rng.choice([-1, 1], (64, 16)), rng.integers(-500, 500, (16, 1)))


def measure(layer: MVAULayer, part: str, every: int, work: Path) -> dict:
    family, device, package, speed = PARTS[part]
    tag = f"{layer.name}-{part}-k{every}"
    design = generate_verilog([layer], work / tag / "rtl", top=f"{layer.name}_top", tree_levels_per_stage=every)
    r = synthesise(design, work / tag / "syn", family=family, device=device, package=package, speed=speed)
    return {"block": layer.name, "part": part, "tree_levels_per_stage": every,
            "stages": mvau_pipeline_stages(layer, every), "fmax_mhz": round(r["fmax_mhz"], 1),
            "lut": r["lut"]["used"], "ff": r["ff"], "bram": r["bram"]["used"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", default="build-rtl-tmp/bench-blocks", help="relative: the WebAssembly tools' sandbox")
    ap.add_argument("--levels", default="0,1,2,3", help="tree_levels_per_stage values to measure")
    ap.add_argument("--blocks", default="xnor,pixel", help="which blocks: xnor, pixel")
    ap.add_argument("--parts", default=",".join(PARTS), help=f"which parts: {', '.join(PARTS)}")
    args = ap.parse_args()
    path = OUT / "rtl_blocks.json"
    rows = json.loads(path.read_text()) if path.is_file() else []     # earlier rows stay unless measured again
    blocks = {"xnor": xnor_block, "pixel": pixel_block}
    for layer in (blocks[b]() for b in args.blocks.split(",")):
        for part in args.parts.split(","):
            for every in map(int, args.levels.split(",")):
                row = measure(layer, part, every, Path(args.work))
                rows = [r for r in rows if (r["block"], r["part"], r["tree_levels_per_stage"]) !=
                        (row["block"], row["part"], every)] + [row]
                print(json.dumps(row), flush=True)
                write_json(path, rows)
    write_tables(rows)


def write_tables(rows: list[dict]) -> None:
    """benchmarks/rtl_blocks.json and .md, sorted by block, part and depth."""
    rows = sorted(rows, key=lambda r: (r["block"], r["part"], r["tree_levels_per_stage"]))
    write_json(OUT / "rtl_blocks.json", rows)
    lines = ["| block | part | tree levels per register | register stages | Fmax (MHz) | LUT | FF | BRAM |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    lines += [f"| {r['block']} | {r['part']} | {r['tree_levels_per_stage']} | {r['stages']} | {r['fmax_mhz']} | "
              f"{r['lut']:,} | {r['ff']:,} | {r['bram']} |" for r in rows]
    (OUT / "rtl_blocks.md").write_text("<!-- SPDX-License-Identifier: BSD-3-Clause -->\nMeasured by "
                                       "scripts/bench_rtl_blocks.py (nextpnr, seed 1, 100 MHz target).\n\n"
                                       + "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
