# SPDX-License-Identifier: BSD-3-Clause
"""Place and route the open backend's Verilog of a FINN-folded network for an open board (no simulation).

Reads the ``correct_datatypes`` graph of an existing FINN build, generates the design and runs Yosys + nextpnr for
the board; writes ``result.json`` (resources, Fmax, seconds) under ``--out``. For designs too slow to simulate in
``hwq build --backend open`` (CNV: ``scripts/sim_cnv_rtl.py`` checks it bit-exactly instead).

    python scripts/synth_cnv_rtl.py runs/cnv-w1a1-cifar10/build-pynq-z2 --board ulx3s-85f --out build-rtl-tmp/cnv-85f
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def main() -> None:
    from qonnx.core.modelwrapper import ModelWrapper

    from hwq._io import write_json
    from hwq.boards import load_board
    from hwq.rtl.generate import generate_verilog
    from hwq.rtl.layers import layers_from_model
    from hwq.rtl.synth import synthesise

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("build", type=Path, help="a FINN build folder holding intermediate/*_correct_datatypes.onnx")
    ap.add_argument("--board", default="ulx3s-85f")
    ap.add_argument("--out", type=Path, default=Path("build-rtl-tmp/synth"))
    args = ap.parse_args()
    found = sorted((args.build / "intermediate").glob("*_correct_datatypes.onnx"))
    if not found:
        raise SystemExit(f"{args.build / 'intermediate'}: no 'correct_datatypes' model")
    layers = layers_from_model(ModelWrapper(str(found[-1])))
    design = generate_verilog(layers, args.out / "rtl")
    board, started = load_board(args.board), time.time()
    fpga = board.fpga
    result = synthesise(design, args.out / "synth", family=fpga["family"], device=fpga["device"],
                        package=fpga["package"], speed=fpga.get("speed"), freq_mhz=board.clock_mhz)
    result.update(seconds=round(time.time() - started, 1), cycles_bound=design.cycles_bound, board=board.name,
                  fps_at_fmax=result["fmax_mhz"] * 1e6 / design.cycles_bound)
    write_json(args.out / "result.json", result)
    print(json.dumps(result, indent=1, default=str))


if __name__ == "__main__":
    main()
