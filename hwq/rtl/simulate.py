# SPDX-License-Identifier: BSD-3-Clause
"""Simulate a generated design with cocotb 2 (runner API) and Icarus Verilog, against the NumPy reference.

>>> from hwq.rtl.simulate import simulate                                   # doctest: +SKIP
>>> simulate(design, x, expected, "build-rtl-tmp/sim", p_stall=0.3)         # doctest: +SKIP
{'images': 20, 'cycles_per_image': 8.0, 'latency_cycles': 24, ...}
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from hwq.errors import ConfigError, VerificationError
from hwq.rtl.generate import Design

SIMULATORS = ("icarus",)


def pack_beats(values, per_beat: int, bits: int) -> list[list[int]]:
    """Pack rows of integers (N, elems) into beats of ``per_beat`` elements, element 0 in the LSBs.

    >>> pack_beats([[1, 2, 3, 0]], 2, 4)
    [[33, 3]]
    """
    out = []
    mask = (1 << bits) - 1
    for row in np.asarray(values, dtype=np.int64):
        beats = []
        for b in range(0, len(row), per_beat):
            word = 0
            for i, v in enumerate(row[b:b + per_beat]):
                word |= (int(v) & mask) << (i * bits)
            beats.append(word)
        out.append(beats)
    return out


def simulate(design: Design, inputs, expected, work_dir, *, simulator: str = "icarus", p_gap: float = 0.0,
             p_stall: float = 0.0, seed: int = 0) -> dict:
    """Run ``design`` on ``inputs`` (N, in elems) and compare every output with ``expected`` (N, out elems).

    Returns the testbench's measurements (cycles per image, latency in cycles); raises
    :class:`~hwq.errors.VerificationError` naming the first differing image when an output differs.
    """
    from cocotb_tools.runner import get_runner

    if simulator not in SIMULATORS:
        raise ConfigError(f"simulator '{simulator}': expected one of {', '.join(SIMULATORS)}")
    if shutil.which("iverilog") is None:
        raise ConfigError("iverilog not found on PATH: install Icarus Verilog (make installs it as root)")
    work = Path(work_dir).resolve()
    work.mkdir(parents=True, exist_ok=True)
    job = {"inputs": pack_beats(inputs, design.in_beat, design.in_bits),
           "expected": pack_beats(expected, design.out_beat, design.out_bits),
           "p_gap": p_gap, "p_stall": p_stall, "seed": seed, "result": str(work / "result.json")}
    (work / "job.json").write_text(json.dumps(job))
    (work / "result.json").unlink(missing_ok=True)
    runner = get_runner(simulator)
    runner.build(sources=[Path(f).resolve() for f in design.files], hdl_toplevel=design.top,
                 build_dir=work / "sim_build", always=True, timescale=("1ns", "1ps"),
                 log_file=work / "build.log")
    results_xml = work / "results.xml"
    try:
        runner.test(test_module="hwq.rtl.tb_stream", hdl_toplevel=design.top, build_dir=work / "sim_build",
                    test_dir=work, seed=seed, results_xml=str(results_xml),
                    extra_env={"HWQ_TB_JOB": str(work / "job.json")}, log_file=work / "sim.log")
    except SystemExit:  # the runner exits when a test fails (under pytest); the results file says which
        pass
    if not results_xml.is_file():
        raise VerificationError(f"{design.top}: the simulation wrote no results (log {work / 'sim.log'})")
    failures = _failures(results_xml)
    if failures or not (work / "result.json").is_file():
        raise VerificationError(f"{design.top}: RTL simulation differs from the reference: "
                                f"{failures or 'no result'} (log {work / 'sim.log'})")
    return json.loads((work / "result.json").read_text())


def _failures(results_xml) -> str:
    import xml.etree.ElementTree as ET

    root = ET.parse(results_xml).getroot()
    msgs = [f.get("message", "failed") for case in root.iter("testcase") for f in case.iter("failure")]
    return "; ".join(m.splitlines()[0] for m in msgs)
