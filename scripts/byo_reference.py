# SPDX-License-Identifier: BSD-3-Clause
"""FINN's reference networks, as Brevitas builds and exports them, through ``hwq build MODEL.onnx`` on both
backends: the table of docs/byo-model.md.

The networks are Brevitas' own model classes (``brevitas_examples.bnn_pynq``: TFC-1w1a, TFC-2w2a, CNV-1w1a),
untrained (seeded random weights: cycles, throughput and resources depend on the topology and the folding, not on
the weight values), exported with ``brevitas.export.export_qonnx`` through torch's TorchScript exporter
(``ts``: MatMul nodes) and its dynamo exporter (``dynamo``: Gemm nodes, weights in ``<file>.data``). Each file is
built with no hand edits:

1. FINN backend (``hwq build FILE --dataset D``) for the Pynq-Z2, folded for :data:`TARGET_FPS`; the gate runs
   ``--verify-samples`` real test images layer-wise;
2. FINN's own builder (``finn.builder.build_dataflow_cfg``, estimate reports only) on the same graph with the
   same folding file, for its LUT estimate next to hwq's;
3. the open backend (``hwq build FILE --backend open``) with the same folding: RTL simulation of test images
   bit-exact against the NumPy reference, Yosys + nextpnr for the ULX3S-85F (``--no-synth`` to skip; the CNV is
   simulated on fewer images, Icarus runs about 10k cycles/s, and placed only with ``--place-cnv``).

    .venv/bin/python scripts/byo_reference.py                     # writes benchmarks/byo_reference.{json,md}
    .venv/bin/python scripts/byo_reference.py --networks tfc_1w1a --exports ts --backends finn
    .venv/bin/python scripts/byo_reference.py --networks cnv_1w1a --exports ts --place-cnv --update
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import traceback
from pathlib import Path

from hwq._io import write_atomic, write_json

NETWORKS = {"tfc_1w1a": ((1, 1, 28, 28), "mnist"), "tfc_2w2a": ((1, 1, 28, 28), "mnist"),
            "cnv_1w1a": ((1, 3, 32, 32), "cifar10")}
#: The folding both backends implement: the TFCs folded for 500k fps (196 cycles at 100 MHz: a design nextpnr
#: places in minutes on the ECP5-85F), the CNV the fastest that fits the Pynq-Z2 (simulated only).
TARGET_FPS = {"tfc_1w1a": 500_000, "tfc_2w2a": 500_000, "cnv_1w1a": None}
EXPORTS = ("ts", "dynamo")


def export(name: str, how: str, root: Path) -> Path:
    """Brevitas' model class, seeded, exported by Brevitas (no hwq code involved)."""
    import torch
    from brevitas.export import export_qonnx
    from brevitas_examples.bnn_pynq.models import model_with_cfg

    torch.manual_seed(0)
    model, _ = model_with_cfg(name, pretrained=False)
    model.eval()
    path = root / f"{name}-{how}.onnx"
    export_qonnx(model, input_t=torch.rand(*NETWORKS[name][0]), export_path=str(path), dynamo=how == "dynamo")
    return path


def finn_backend(path: Path, dataset: str, samples: int, target_fps: float | None) -> dict:
    from hwq.dataflow import BuildConfig, run_build
    from hwq.manifest import estimate_totals

    started = time.perf_counter()
    m = run_build(path, BuildConfig(dataset=dataset, verify_samples=samples, codegen=False, target_fps=target_fps),
                  progress=False, stop_step="estimate")
    t = estimate_totals(m)
    return {"seconds": round(time.perf_counter() - started, 1), "layerwise": m["bit_exact"]["layerwise"],
            "gate": m["bit_exact"]["compared"], "n": m["bit_exact"]["n"], "cycles": t["max_cycles"],
            "fps": t["estimated_fps"], "lut": t["LUT"], "bram18": t["BRAM_18K"],
            "hw_layers": [n["op_type"] for n in _hw_nodes(path.with_name(f"{path.stem}-build-pynq-z2"))],
            "build": str(path.with_name(f"{path.stem}-build-pynq-z2"))}


def _hw_nodes(build: Path) -> list[dict]:
    from qonnx.core.modelwrapper import ModelWrapper

    model = ModelWrapper(str(build / "intermediate" / "estimate.onnx"))
    return [{"name": n.name, "op_type": n.op_type} for n in model.graph.node]


def finn_builder(build: Path, out: Path, board_name: str = "pynq-z2") -> dict:
    """FINN's own builder on hwq's graph after its input step (UINT8 pixels, as FINN's flows prepare a model),
    folded with hwq's folding file, estimate reports only: FINN's estimate of the same design, and its seconds
    (FINN's ``time_per_step.json`` as ``steps`` when it finished)."""
    from finn.builder.build_dataflow import build_dataflow_cfg
    from finn.builder.build_dataflow_config import DataflowBuildConfig, DataflowOutputType

    from hwq.boards import load_board
    from hwq.dataflow.finn_compat import finn_session, keeping_process_output

    board = load_board(board_name)
    steps = ["step_qonnx_to_finn", "step_tidy_up", "step_streamline", "step_convert_to_hw",
             "step_create_dataflow_partition", "step_specialize_layers", "step_apply_folding_config",
             "step_minimize_bit_width", "step_generate_estimate_reports"]
    cfg = DataflowBuildConfig(output_dir=str(out), synth_clk_period_ns=board.clock_period_ns, fpga_part=board.part,
                              board=board.finn_board, folding_config_file=str(build / "folding.json"),
                              generate_outputs=[DataflowOutputType.ESTIMATE_REPORTS], steps=steps,
                              auto_fifo_depths=False)
    model = build / "intermediate" / "insert_topk.onnx"  # hwq's UINT8 input and the TopK FINN's flows append
    started = time.perf_counter()
    with keeping_process_output(), finn_session(out / "codegen"):
        code = build_dataflow_cfg(str(model), cfg)
    seconds = round(time.perf_counter() - started, 2)
    if code != 0:
        return {"status": "failed", "log": str(out / "build_dataflow.log"), "seconds": seconds}
    layers = json.loads((out / "report" / "estimate_layer_resources.json").read_text())
    row = {"status": "done", "lut": round(layers["total"]["LUT"]), "bram18": layers["total"]["BRAM_18K"],
           "seconds": seconds}
    if (out / "time_per_step.json").is_file():
        row["steps"] = json.loads((out / "time_per_step.json").read_text())
    return row


def open_backend(path: Path, dataset: str, build: Path, samples: int, synthesise: bool) -> dict:
    from hwq.rtl.build import OpenBuildConfig, run_open_build

    started = time.perf_counter()
    m = run_open_build(path, OpenBuildConfig(board="ulx3s-85f", dataset=dataset, verify_samples=samples,
                                             folding_file=str(build / "folding.json"), synthesise=synthesise))
    s = m["simulation"]
    e = m["finn_estimate"]   # FINN's estimate of the folding the open design implements (open_folding applied)
    row = {"seconds": round(time.perf_counter() - started, 1), "n": s["n"], "bit_exact": s["bit_exact"],
           "cycles": s["cycles_per_image"], "folding_bound": s["folding_bound_cycles"],
           "folding_changes": m.get("open_folding", {}).get("changed", []),
           "finn_estimate": {"cycles": e["max_cycles"], "fps": e["estimated_fps"], "lut": e["LUT"]}}
    if "measured" in m:
        f = m["measured"]
        row.update(fmax_mhz=f["fmax_mhz"], fps=f["fps"], lut=f["lut"], bram=f["bram"])
    return row


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--networks", nargs="+", default=list(NETWORKS), choices=list(NETWORKS))
    p.add_argument("--exports", nargs="+", default=list(EXPORTS), choices=list(EXPORTS))
    p.add_argument("--backends", nargs="+", default=["finn", "finn-builder", "open"],
                   choices=["finn", "finn-builder", "open"])
    p.add_argument("--samples", type=int, default=20, help="gate images (default 20)")
    p.add_argument("--open-samples", type=int, default=4, help="RTL-simulated images (default 4)")
    p.add_argument("--no-synth", action="store_true", help="open backend: simulate only")
    p.add_argument("--place-cnv", action="store_true",
                   help="open backend: synthesise and place the CNV too (about 80 minutes on 2 cores)")
    p.add_argument("--out", default="benchmarks/byo_reference")
    p.add_argument("--update", action="store_true",
                   help="replace only the rows run now in an existing OUT.json (default: write it anew)")
    args = p.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory(prefix="hwq-byo-") as tmp:
        root = Path(tmp)
        for name in args.networks:
            for how in args.exports:
                row = {"network": name, "export": how, "dataset": NETWORKS[name][1]}
                print(f"== {name} ({how})", file=sys.stderr, flush=True)
                try:
                    path = export(name, how, root)
                    if {"finn", "finn-builder", "open"} & set(args.backends):
                        row["finn"] = finn_backend(path, row["dataset"], args.samples, TARGET_FPS[name])
                    build = Path(row["finn"]["build"])
                    if "finn-builder" in args.backends:
                        row["finn_builder"] = finn_builder(build, root / f"{path.stem}-finn-builder")
                    if "open" in args.backends:
                        synth = not args.no_synth and (name.startswith("tfc") or args.place_cnv)
                        row["open"] = open_backend(path, row["dataset"], build, args.open_samples, synth)
                except Exception as err:  # noqa: BLE001 - a benchmark row records its failure and goes on
                    row["error"] = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
                    traceback.print_exc()
                row.get("finn", {}).pop("build", None)
                print(json.dumps(row), file=sys.stderr, flush=True)
                rows.append(row)
    out = Path(args.out)
    if args.update and out.with_suffix(".json").is_file():
        ran = {(r["network"], r["export"]) for r in rows}
        kept = [r for r in json.loads(out.with_suffix(".json").read_text())["rows"]
                if (r["network"], r["export"]) not in ran]
        order = {(n, e): i for i, (n, e) in enumerate((n, e) for n in NETWORKS for e in EXPORTS)}
        rows = sorted(kept + rows, key=lambda r: order[(r["network"], r["export"])])
    write_json(out.with_suffix(".json"), {"rows": rows, "board": "pynq-z2 (FINN), ulx3s-85f (open)"})
    text = table(rows)
    write_atomic(out.with_suffix(".md"), lambda p: p.write_text(text))
    print(table(rows))
    return 0


def _num(value, digits: int = 0) -> str:
    return "" if value in (None, "") else f"{value:,.{digits}f}"


def table(rows: list[dict]) -> str:
    """The markdown table of docs/byo-model.md."""
    head = ["network", "export", "HW layers (FINN backend)", "gate", "cycles", "fps (100 MHz)", "LUT (hwq)",
            "LUT (FINN's builder)", "open: cycles (sim)", "open: FINN's estimate (cycles, LUT)", "open: Fmax MHz",
            "open: fps", "open: LUT (ECP5)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        f, b, o = r.get("finn", {}), r.get("finn_builder", {}), r.get("open", {})
        layers = ", ".join(dict.fromkeys(x.split("_")[0] for x in f.get("hw_layers", []))) or r.get("error", "")
        gate = f"layer-wise, {f['n']} images" if f.get("layerwise") else f.get("gate", "")
        cells = [r["network"], r["export"], layers, gate, _num(f.get("cycles")), _num(f.get("fps")),
                 _num(f.get("lut")), _num(b.get("lut")) or b.get("status", ""), _num(o.get("cycles")),
                 (f"{o['finn_estimate']['cycles']:,}, {o['finn_estimate']['lut']:,}" if o else ""),
                 _num(o.get("fmax_mhz"), 1), _num(o.get("fps")), _num(o.get("lut"))]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
