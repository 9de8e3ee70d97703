# SPDX-License-Identifier: BSD-3-Clause
"""cocotb 2 testbench of a generated stream block or accelerator (runs inside the simulator).

Launched by :func:`hwq.rtl.simulate.simulate`, which passes a JSON job file in ``HWQ_TB_JOB``: the packed input
beats per image, the expected output beats (from :mod:`hwq.rtl.reference`), and the back-pressure settings. The
bench drives ``s_axis_*``, reads ``m_axis_*``, asserts every output beat equal to the reference, and writes the
measured cycles to the job's ``result`` file. Port widths are read back from the design.

Phase 1 streams every image with no stalls and measures cycles per image (steady-state interval between outputs)
and the latency of the first image; phase 2 replays the images with random input gaps and random output
back-pressure. A design that hangs (no beat in or out for the job's ``idle_limit`` cycles, e.g. a deadlocked
residual) fails with a message saying how far it got, instead of running forever.

>>> simulate(design, x, expected, "build-rtl-tmp/sim")   # runs this module in Icarus  # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
import random
import time

import cocotb
from cocotb.clock import Clock
from cocotb.simtime import get_sim_time
from cocotb.triggers import FallingEdge, RisingEdge

#: Clock period of the bench in ns (only simulated time: cycles are what is measured).
PERIOD_NS = 10


async def _count(dut, clock: dict) -> None:
    while True:
        await RisingEdge(dut.clk)
        clock["now"] += 1


async def _drive(dut, beats: list[int], p_gap: float, rng: random.Random, clock: dict) -> None:
    """Present ``beats`` on s_axis; inputs change on falling edges, a beat moves when valid and ready."""
    i, presenting, fire = 0, False, False
    while i < len(beats):
        await FallingEdge(dut.clk)
        if fire:
            i, presenting = i + 1, False
            clock["in"], clock["last"] = i, clock["now"]
        if not presenting and i < len(beats):
            if rng.random() < p_gap:
                dut.s_axis_tvalid.value = 0
            else:
                dut.s_axis_tdata.value = beats[i]
                dut.s_axis_tvalid.value = 1
                presenting = True
        elif i >= len(beats):
            dut.s_axis_tvalid.value = 0
        fire = presenting and bool(int(dut.s_axis_tready.value))
    dut.s_axis_tvalid.value = 0


def _unsigned(value) -> int:
    """A port's value as an unsigned integer; a 1-bit port reads as a ``Logic``, which has no ``to_unsigned``."""
    return int(value.to_unsigned()) if hasattr(value, "to_unsigned") else int(value)


async def _collect(dut, n_beats: int, p_stall: float, rng: random.Random, clock: dict,
                   label: str = "") -> list[tuple[int, int]]:
    """Read n_beats from m_axis with random back-pressure; each beat with the cycle it was taken in. Fails when
    no beat went in or out for ``clock["idle_limit"]`` cycles."""
    got = []
    while len(got) < n_beats:
        await FallingEdge(dut.clk)
        if clock["now"] - clock["last"] > clock["idle_limit"]:
            raise AssertionError(f"{label}: the design hangs: no beat in or out for {clock['idle_limit']} cycles "
                                 f"after {clock['in']} of {clock['n_in']} input beats and {len(got)} of {n_beats} "
                                 "output beats (a deadlock?)")
        ready = 0 if rng.random() < p_stall else 1
        dut.m_axis_tready.value = ready
        if ready and int(dut.m_axis_tvalid.value):
            got.append((_unsigned(dut.m_axis_tdata.value), clock["now"]))
            clock["last"] = clock["now"]
    await FallingEdge(dut.clk)
    dut.m_axis_tready.value = 0
    return got


async def _phase(dut, job, images, expected, p_gap, p_stall, rng, label):
    beats = [b for image in images for b in image]
    clock = {"now": 0, "last": 0, "in": 0, "n_in": len(beats), "idle_limit": int(job.get("idle_limit", 100_000))}
    n_out = sum(len(e) for e in expected)
    counter = cocotb.start_soon(_count(dut, clock))
    driver = cocotb.start_soon(_drive(dut, beats, p_gap, rng, clock))
    got = await _collect(dut, n_out, p_stall, rng, clock, label)
    await driver
    counter.cancel()
    flat = [b for e in expected for b in e]
    for i, ((value, _), want) in enumerate(zip(got, flat)):
        image = i // max(1, len(expected[0]))
        assert value == want, f"{label}: image {image} beat {i}: got {value:#x}, reference {want:#x}"
    return [t for _, t in got], clock


@cocotb.test()
async def stream_matches_reference(dut):
    """Every output beat equals the reference, free-running and under random back-pressure."""
    job = json.loads(open(os.environ["HWQ_TB_JOB"]).read())
    started = time.perf_counter()   # wall time of the bench itself: the simulator's speed without its startup
    images, expected = job["inputs"], job["expected"]
    rng = random.Random(job.get("seed", 0))
    Clock(dut.clk, PERIOD_NS, unit="ns").start()
    dut.s_axis_tvalid.value = 0
    dut.m_axis_tready.value = 0
    dut.rst.value = 1
    for _ in range(3):
        await RisingEdge(dut.clk)
    dut.rst.value = 0
    await RisingEdge(dut.clk)
    times, clock = await _phase(dut, job, images, expected, 0.0, 0.0, rng, "free-running")
    per_image = len(expected[0])
    ends = times[per_image - 1::per_image]
    interval = (ends[-1] - ends[0]) / (len(ends) - 1) if len(ends) > 1 else float("nan")
    result = {"images": len(images), "cycles_per_image": interval, "latency_cycles": ends[0],
              "width_in": len(dut.s_axis_tdata), "width_out": len(dut.m_axis_tdata)}
    if job.get("p_stall", 0) or job.get("p_gap", 0):
        await _phase(dut, job, images, expected, job.get("p_gap", 0), job.get("p_stall", 0), rng, "back-pressure")
        result["back_pressure"] = {"p_gap": job.get("p_gap", 0), "p_stall": job.get("p_stall", 0)}
    # all cycles of both phases and the reset, for the simulator's speed (cycles per second of wall time)
    result["cycles_simulated"] = int(get_sim_time("ns") // PERIOD_NS)
    result["bench_seconds"] = round(time.perf_counter() - started, 3)
    result["cycles_per_second"] = round(result["cycles_simulated"] / max(result["bench_seconds"], 1e-3))
    with open(job["result"], "w") as f:
        json.dump(result, f)
