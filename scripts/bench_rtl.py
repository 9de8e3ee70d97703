# SPDX-License-Identifier: BSD-3-Clause
"""Benchmark of the open backend: a trained run built with ``--backend open``; measured Fmax, simulated cycles,
FPS and resources next to FINN's estimate for the same folding. Appends a row to benchmarks/rtl.{json,md}.

    .venv/bin/python scripts/bench_rtl.py runs/bench-mnist-tfc-w1a1 --board ulx3s-85f \
        --folding benchmarks/folding_mnist_tfc_ecp5.json
    .venv/bin/python scripts/bench_rtl.py runs/tfc-digits --board icebreaker --folding small_folding.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from hwq._io import write_json
from hwq.rtl.build import OpenBuildConfig, run_open_build

OUT = Path(__file__).resolve().parents[1] / "benchmarks"


def _row(run: str, m: dict) -> dict:
    meas, est, sim = m["measured"], m["finn_estimate"], m["simulation"]
    return {"run": run, "board": m["board"]["name"], "folding": m["layers"],
            "tree_levels_per_stage": m["design"].get("tree_levels_per_stage", 0), "n_images": sim["n"],
            "bit_exact": sim["bit_exact"], "cycles_per_image": meas["cycles_per_image"],
            "folding_bound": sim["folding_bound_cycles"], "latency_cycles": meas["latency_cycles"],
            "fmax_mhz": round(meas["fmax_mhz"], 1), "fps": round(meas["fps"]), "lut": meas["lut"], "ff": meas["ff"],
            "bram": meas["bram"], "dsp": meas["dsp"], "lut_per_kfps": round(meas["lut"] / (meas["fps"] / 1e3), 2),
            "finn_estimate": {k: est[k] for k in ("board", "LUT", "BRAM_18K", "DSP", "estimated_fps", "clock_mhz")},
            "finn_lut_per_kfps": round(est["LUT"] / (est["estimated_fps"] / 1e3), 2),
            "seconds": {**{s["name"]: s["seconds"] for s in m["steps"]
                           if s["name"] in ("simulate", "synthesise", "place_and_route")}, "total": m["seconds"]}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run")
    ap.add_argument("--board", default="ulx3s-85f")
    ap.add_argument("--folding", dest="folding_file")
    ap.add_argument("--target-fps", dest="target_fps", type=float)
    ap.add_argument("--out", dest="out_dir")
    ap.add_argument("--tree-levels-per-stage", dest="tree_levels_per_stage", type=int,
                    default=OpenBuildConfig.tree_levels_per_stage,
                    help="adder levels between pipeline registers in the MVAU trees (0: combinational)")
    args = ap.parse_args()
    m = run_open_build(args.run, OpenBuildConfig(board=args.board, folding_file=args.folding_file,
                                                 target_fps=args.target_fps, out_dir=args.out_dir,
                                                 tree_levels_per_stage=args.tree_levels_per_stage))
    path = OUT / "rtl.json"
    rows = json.loads(path.read_text()) if path.is_file() else []
    key = (args.run, args.board, m["layers"], args.tree_levels_per_stage)
    rows = [r for r in rows if (r["run"], r["board"], r["folding"], r.get("tree_levels_per_stage", 0)) != key]
    rows.append(_row(args.run, m))
    write_json(path, rows)
    lines = ["| run | board | tree levels per register (0: comb.) | cycles/image (bound) | latency (cycles) | "
             "Fmax (MHz) | FPS | LUT | FF | BRAM | LUT per kFPS | FINN est. LUT / fps (same folding) | "
             "FINN LUT per kFPS |", "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | "
             "--- | ---: |"]
    for r in rows:
        e = r["finn_estimate"]
        lines.append(f"| {r['run']} | {r['board']} | {r.get('tree_levels_per_stage', 0)} | "
                     f"{r['cycles_per_image']:g} ({r['folding_bound']}) | {r['latency_cycles']} | "
                     f"{r['fmax_mhz']} | {r['fps']:,} | {r['lut']:,} | {r['ff']:,} | {r['bram']} | "
                     f"{r['lut_per_kfps']} | {e['LUT']:,} / {e['estimated_fps']:,.0f} at {e['clock_mhz']:g} MHz | "
                     f"{r['finn_lut_per_kfps']} |")
    (OUT / "rtl.md").write_text("<!-- SPDX-License-Identifier: BSD-3-Clause -->\n"
                                "Measured by scripts/bench_rtl.py (Fmax and resources: nextpnr; cycles: Icarus "
                                "simulation; FINN columns are analytical estimates).\n\n" + "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
