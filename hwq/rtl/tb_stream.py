# SPDX-License-Identifier: BSD-3-Clause
"""cocotb 2 testbench of a generated stream block or accelerator (runs inside the simulator).

Launched by :func:`hwq.rtl.simulate.simulate`, which passes a JSON job file in ``HWQ_TB_JOB``: the packed input
beats per image, the expected output beats (from :mod:`hwq.rtl.reference`), and the back-pressure settings. The
bench drives ``s_axis_*``, reads ``m_axis_*``, asserts every output beat equal to the reference, and writes the
measured cycles to the job's ``result`` file. Port widths are read back from the design. A job for one block
alone (:func:`hwq.rtl.simulate.simulate_block`) names its ports instead (``ports_in`` / ``ports_out``: the
data, valid and ready names and the beats of each); every port then gets its own random gaps or back-pressure.

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


#: The accelerator's ports (data, valid, ready); a block alone has in_*/out_* (in0_*, out0_*, ... when several).
S_AXIS = ["s_axis_tdata", "s_axis_tvalid", "s_axis_tready"]
M_AXIS = ["m_axis_tdata", "m_axis_tvalid", "m_axis_tready"]


async def _drive(dut, port, beats: list[int], p_gap: float, rng: random.Random, clock: dict) -> None:
    """Present ``beats`` on the input ``port`` (data, valid, ready names); inputs change on falling edges, a beat
    moves when valid and ready."""
    data, valid, ready = (getattr(dut, name) for name in port)
    i, presenting, fire = 0, False, False
    while i < len(beats):
        await FallingEdge(dut.clk)
        if fire:
            i, presenting = i + 1, False
            clock["in"], clock["last"] = clock["in"] + 1, clock["now"]
        if not presenting and i < len(beats):
            if rng.random() < p_gap:
                valid.value = 0
            else:
                data.value = beats[i]
                valid.value = 1
                presenting = True
        elif i >= len(beats):
            valid.value = 0
        fire = presenting and bool(int(ready.value))
    valid.value = 0


def _unsigned(value) -> int:
    """A port's value as an unsigned integer; a 1-bit port reads as a ``Logic``, which has no ``to_unsigned``."""
    return int(value.to_unsigned()) if hasattr(value, "to_unsigned") else int(value)


async def _collect(dut, port, n_beats: int, p_stall: float, rng: random.Random, clock: dict,
                   label: str = "") -> list[tuple[int, int]]:
    """Read n_beats from the output ``port`` with random back-pressure; each beat with the cycle it was taken in.
    Fails when no beat went in or out (on any port) for ``clock["idle_limit"]`` cycles."""
    data, valid, ready = (getattr(dut, name) for name in port)
    got = []
    while len(got) < n_beats:
        await FallingEdge(dut.clk)
        if clock["now"] - clock["last"] > clock["idle_limit"]:
            raise AssertionError(f"{label}: the design hangs: no beat in or out for {clock['idle_limit']} cycles "
                                 f"after {clock['in']} of {clock['n_in']} input beats and {len(got)} of {n_beats} "
                                 "output beats (a deadlock?)")
        take = 0 if rng.random() < p_stall else 1
        ready.value = take
        if take and int(valid.value):
            got.append((_unsigned(data.value), clock["now"]))
            clock["last"] = clock["now"]
    await FallingEdge(dut.clk)
    ready.value = 0
    return got


def _rngs(seed: int, ins: list, outs: list) -> tuple[list, list]:
    """Random sources of the drivers and collectors: the accelerator's one input and one output share one (the
    bench's sequence as it always was); with several ports each port has its own, so they stall independently."""
    if len(ins) == len(outs) == 1:
        rng = random.Random(seed)
        return [rng], [rng]
    return ([random.Random(seed * 1000 + k) for k in range(len(ins))],
            [random.Random(seed * 1000 + 500 + k) for k in range(len(outs))])


async def _phase(dut, job, ins, outs, p_gap, p_stall, rngs, label):
    streams = [[b for image in port["inputs"] for b in image] for port in ins]
    clock = {"now": 0, "last": 0, "in": 0, "n_in": sum(map(len, streams)),
             "idle_limit": int(job.get("idle_limit", 100_000))}
    counter = cocotb.start_soon(_count(dut, clock))
    drivers = [cocotb.start_soon(_drive(dut, port["names"], beats, p_gap, rng, clock))
               for port, beats, rng in zip(ins, streams, rngs[0])]
    where = [label if len(outs) == 1 else f"{label} {port['names'][0]}" for port in outs]
    collectors = [cocotb.start_soon(_collect(dut, port["names"], sum(len(e) for e in port["expected"]), p_stall, rng,
                                             clock, name))
                  for port, rng, name in zip(outs, rngs[1], where)]
    results = [await c for c in collectors]
    for d in drivers:
        await d
    counter.cancel()
    for port, got, name in zip(outs, results, where):
        expected = port["expected"]
        flat = [b for e in expected for b in e]
        for i, ((value, _), want) in enumerate(zip(got, flat)):
            image = i // max(1, len(expected[0]))
            assert value == want, f"{name}: image {image} beat {i}: got {value:#x}, reference {want:#x}"
    return [t for _, t in results[0]], clock


@cocotb.test()
async def stream_matches_reference(dut):
    """Every output beat equals the reference, free-running and under random back-pressure."""
    job = json.loads(open(os.environ["HWQ_TB_JOB"]).read())
    started = time.perf_counter()   # wall time of the bench itself: the simulator's speed without its startup
    ins = job.get("ports_in") or [{"names": S_AXIS, "inputs": job["inputs"]}]
    outs = job.get("ports_out") or [{"names": M_AXIS, "expected": job["expected"]}]
    rngs = _rngs(job.get("seed", 0), ins, outs)
    Clock(dut.clk, PERIOD_NS, unit="ns").start()
    for port in ins:
        getattr(dut, port["names"][1]).value = 0
    for port in outs:
        getattr(dut, port["names"][2]).value = 0
    dut.rst.value = 1
    for _ in range(3):
        await RisingEdge(dut.clk)
    dut.rst.value = 0
    await RisingEdge(dut.clk)
    times, clock = await _phase(dut, job, ins, outs, 0.0, 0.0, rngs, "free-running")
    images, expected = ins[0]["inputs"], outs[0]["expected"]
    per_image = len(expected[0])
    ends = times[per_image - 1::per_image]
    interval = (ends[-1] - ends[0]) / (len(ends) - 1) if len(ends) > 1 else float("nan")
    result = {"images": len(images), "cycles_per_image": interval, "latency_cycles": ends[0],
              "width_in": len(getattr(dut, ins[0]["names"][0])), "width_out": len(getattr(dut, outs[0]["names"][0]))}
    if job.get("p_stall", 0) or job.get("p_gap", 0):
        await _phase(dut, job, ins, outs, job.get("p_gap", 0), job.get("p_stall", 0), rngs, "back-pressure")
        result["back_pressure"] = {"p_gap": job.get("p_gap", 0), "p_stall": job.get("p_stall", 0)}
    # all cycles of both phases and the reset, for the simulator's speed (cycles per second of wall time)
    result["cycles_simulated"] = int(get_sim_time("ns") // PERIOD_NS)
    result["bench_seconds"] = round(time.perf_counter() - started, 3)
    result["cycles_per_second"] = round(result["cycles_simulated"] / max(result["bench_seconds"], 1e-3))
    with open(job["result"], "w") as f:
        json.dump(result, f)
