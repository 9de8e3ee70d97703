#!/usr/bin/env python
# SPDX-License-Identifier: BSD-3-Clause
"""Benchmark: the measurement harness against the emulated board, over a real pseudo-terminal.

Measures (1) the timing error of performance mode against the virtual clock (measured / estimated throughput, and
the one-inference latency of the ``infer 1`` windows against the estimated pipeline latency),
(2) the harness's own overhead per command round trip (wall time of ``name%`` and of ``infer 1 0%``, which
includes one bit-exact inference), (3) the wall time to load one input image (``db load`` + ``db`` commands), and
(4) the emulated board's real inference rate (bit-exact inferences per wall second, from accuracy mode).
Writes ``benchmarks/harness.json``.

    .venv/bin/python scripts/bench_harness.py --build runs/demo-digits-tfc-w1a1/build-pynq-z2
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

from hwq._io import write_json
from hwq.device import BuildModel, Emulator
from hwq.harness.device import Device
from hwq.harness.measure import MeasureConfig, run_measure


def _timed(call, repeats: int) -> dict:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append((time.perf_counter() - start) * 1e6)
    return {"median_us": statistics.median(times), "min_us": min(times), "max_us": max(times), "n": repeats}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--build", default="runs/demo-digits-tfc-w1a1/build-pynq-z2")
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--samples", type=int, default=200, help="images for the accuracy-mode inference rate")
    parser.add_argument("--results", default="benchmarks/harness.json")
    args = parser.parse_args()

    model = BuildModel.from_build_dir(args.build)
    image = model.to_device_bytes(__import__("numpy").zeros(model.input_bytes, dtype="uint8"))
    with tempfile.TemporaryDirectory() as tmp, Emulator(model) as emulator:
        with Device.open(emulator.port, timeout_s=5.0, transcript=os.path.join(tmp, "t.log")) as dut:
            name_rtt = _timed(dut.name, args.repeats)
            load = _timed(lambda: dut.load(image), max(10, args.repeats // 10))
            infer_rtt = _timed(lambda: dut.infer(1, 0), args.repeats)
        perf = run_measure(MeasureConfig(port=emulator.port, mode="performance", out_dir=tmp, build_dir=args.build))
        started = time.perf_counter()
        acc = run_measure(MeasureConfig(port=emulator.port, mode="accuracy", out_dir=tmp, build_dir=args.build,
                                        samples=args.samples))
        acc_seconds = time.perf_counter() - started
    s = perf["summary"]
    result = {
        "benchmark": "harness against the emulated board (real pty, pyserial)",
        "command": f"python scripts/bench_harness.py --build {args.build} --repeats {args.repeats} "
                   f"--samples {args.samples}",
        "build": args.build,
        "timing": {"estimated_fps_per_s": s["estimated_fps_per_s"],
                   "measured_median_per_s": s["throughput_median_per_s"],
                   "measured_over_estimated": s["measured_over_estimated"],
                   "relative_error": abs(s["measured_over_estimated"] - 1.0),
                   "throughput_spread_pct": s["throughput_spread_pct"],
                   "shortest_window_s": s["shortest_window_s"],
                   "estimated_latency_us": s["estimated_latency_us"],
                   "one_inference_latency_median_us": s["latency_median_us"],
                   "one_inference_latency_mean_us": s["latency_mean_us"],
                   "clock_resolution_us": s["clock_resolution_us"]},
        "round_trip": {"name": name_rtt, "infer_1_0": infer_rtt, "load_one_image": load,
                       "input_bytes": model.input_bytes},
        "emulated_inference_rate": {"images": acc["summary"]["samples"], "seconds": round(acc_seconds, 3),
                                    "images_per_s": acc["summary"]["samples"] / acc_seconds,
                                    "device_accuracy": acc["summary"]["device_accuracy"],
                                    "agreement_with_host": acc["summary"]["agreement"]},
        "machine": {"cpu_count": os.cpu_count()},
    }
    write_json(args.results, result)
    t, r, e = result["timing"], result["round_trip"], result["emulated_inference_rate"]
    print(f"timing: measured/estimated {t['measured_over_estimated']:.6f} (error {t['relative_error']:.2e}), "
          f"one inference {t['one_inference_latency_median_us']:g} us (estimated {t['estimated_latency_us']:g} us); "
          f"round trips: name {r['name']['median_us']:.0f} us, infer 1 0 {r['infer_1_0']['median_us']:.0f} us, "
          f"load {r['input_bytes']} B {r['load_one_image']['median_us']:.0f} us; emulated board "
          f"{e['images_per_s']:.1f} images/s in accuracy mode -> {args.results}")


if __name__ == "__main__":
    main()
