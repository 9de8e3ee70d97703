#!/usr/bin/env python
# SPDX-License-Identifier: BSD-3-Clause
"""Benchmark: the measurement harness against the emulated board, over a real pseudo-terminal.

Measures (1) the timing error of performance mode against the virtual clock (measured / estimated throughput, and
the one-inference latency of the ``infer 1`` windows against the estimated pipeline latency),
(2) the harness's own overhead per command round trip (wall time of ``name%`` and of ``infer 1 0%``, which
includes one bit-exact inference), (3) the wall time to load one input image (``db load`` + ``db`` commands),
(4) the emulated board's real inference rate in accuracy mode: with the emulator in this process (a thread, as
``hwq run`` serves it) and in its own process (``hwq emulate``, as a user runs it), each one command at a time
and pipelined (``--pipeline``), (5) where the emulated board's time per image goes (the protocol session with no
pty: the commands of one image, with and without computing its class), (6) performance mode's start-up in its own
process (launch to the first input byte sent, and the whole command), with the build's sample input and without
it (the test set loaded for one image), (7) with ``--test-set-build``, accuracy mode over a build's whole test
split on the graph board and on the RTL board, each end in its own process, and (8) the functional model's speed: the
NumPy reference of the build's HW graph (:class:`hwq.accelerator_model.BuildModel`, executor ``numpy``) against
qonnx's execution of the same graph and against onnxruntime on the exported model (``model.onnx`` beside the
build, with its bipolar quantizers written as standard ONNX ops and its Quant nodes as QuantizeLinear /
DequantizeLinear), per image and batched, on the build's test images, with the classes each gives.
Writes ``benchmarks/harness.json``.

    .venv/bin/python scripts/bench_harness.py --build runs/demo-digits-tfc-w1a1/build-pynq-z2 \
        [--rtl-build runs/demo-digits-tfc-w1a1/build-open-unsynth --rtl-build runs/demo-digits-tfc-w1a1/build-pynq-z2]

(the open build of the docs' table: ``docs/harness.md``, "Benchmark").
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from hwq._io import write_json
from hwq.device import BuildModel, Emulator
from hwq.device.dut import DutSession, reply_bytes
from hwq.device.emulator import EmulatedAccelerator
from hwq.harness.device import Device
from hwq.harness.inputs import load_test_set
from hwq.harness.measure import MeasureConfig, run_measure
from hwq.wire import hex_chunks


def _timed(call, repeats: int) -> dict:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append((time.perf_counter() - start) * 1e6)
    return {"median_us": statistics.median(times), "min_us": min(times), "max_us": max(times), "n": repeats}


def _accuracy_rate(port: str, build: str, samples: int, pipeline: bool) -> dict:
    """Accuracy mode over ``samples`` images against the device at ``port`` (after a short warm-up run): the rate
    of the whole run (opening the port included) and of the images' exchanges (the report's ``answered``)."""
    with tempfile.TemporaryDirectory() as tmp:
        run_measure(MeasureConfig(port=port, mode="accuracy", out_dir=tmp, build_dir=build, samples=10,
                                  pipeline=pipeline))
        started = time.perf_counter()
        report = run_measure(MeasureConfig(port=port, mode="accuracy", out_dir=tmp, build_dir=build,
                                           samples=samples, pipeline=pipeline))
        seconds = time.perf_counter() - started
    s = report["summary"]
    return {"images": s["samples"], "seconds": round(seconds, 3), "images_per_s": s["samples"] / seconds,
            "answered": report["answered"], "device_accuracy": s["device_accuracy"],
            "agreement_with_host": s["agreement"]}


def _own_process_rates(build: str, samples: int) -> dict:
    """The rates with the emulator in its own process (``hwq emulate BUILD``), one command at a time and pipelined."""
    emulator = subprocess.Popen([sys.executable, "-m", "hwq", "emulate", build], stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL, text=True)
    try:
        port = emulator.stdout.readline().strip()
        return {name: _accuracy_rate(port, build, samples, pipeline)
                for name, pipeline in (("one_command_at_a_time", False), ("pipelined", True))}
    finally:
        emulator.terminate()
        emulator.wait()


def _startup_once(port: str, build: str, tmp: str) -> dict:
    """``hwq measure --mode performance`` in its own process: seconds from its launch to the first input byte
    sent (``db load`` in its transcript: imports, the build's check, the input) and to its exit."""
    out = tempfile.mkdtemp(dir=tmp)               # a fresh transcript (an existing one is appended to)
    launched = time.time()
    subprocess.run([sys.executable, "-m", "hwq", "measure", "--port", port, "--build", build, "--mode", "performance",
                    "--windows", "1", "--latency-windows", "1", "--out", out], check=True, capture_output=True)
    ended = time.time()
    with open(os.path.join(out, "transcript.log"), "rb") as transcript:
        first = next(float(line.split()[0]) for line in transcript if b" tx b'db load" in line)
    return {"to_first_input_s": first - launched, "whole_command_s": ended - launched}


def _performance_startup(port: str, build: str, repeats: int = 3) -> dict:
    """Start-up of performance mode on ``build`` (its ``sample_input``) and on a copy without one (the test set is
    then loaded for the first image: how every build was measured before the section had it); medians."""
    import json
    import shutil

    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        without = os.path.join(tmp, "build-without-sample")
        shutil.copytree(build, without, ignore=shutil.ignore_patterns("rtl_board", "measure*"))
        manifest_path = os.path.join(without, "manifest.json")
        with open(manifest_path) as f:
            manifest = json.load(f)
        manifest["accelerator"]["sample_input"] = None
        with open(manifest_path, "w") as f:
            json.dump(manifest, f)
        for name, path in (("with_sample_input", build), ("without_sample_input", without)):
            runs = [_startup_once(port, path, tmp) for _ in range(repeats)]
            rows[name] = {key: statistics.median(r[key] for r in runs) for key in runs[0]} | {"runs": repeats}
    return rows


def _whole_test_set(build: str, rtl: bool) -> dict:
    """``hwq measure --mode accuracy --pipeline`` over the build's whole test split, both ends in their own
    processes as a user runs them, against ``hwq emulate BUILD`` (``--rtl``: the generated circuit): the rate
    of the images' exchanges (the report's ``answered``) and the whole command's seconds."""
    import json

    emulator = subprocess.Popen([sys.executable, "-m", "hwq", "emulate", build] + (["--rtl"] if rtl else []),
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        port = emulator.stdout.readline().strip()      # printed once the board is up (the circuit compiled)
        with tempfile.TemporaryDirectory() as tmp:
            started = time.perf_counter()
            subprocess.run([sys.executable, "-m", "hwq", "measure", "--port", port, "--build", build, "--mode",
                            "accuracy", "--pipeline", "--out", tmp], check=True, capture_output=True)
            seconds = time.perf_counter() - started
            with open(os.path.join(tmp, "measure-accuracy.json")) as f:
                report = json.load(f)
    finally:
        emulator.terminate()
        emulator.wait()
    s = report["summary"]
    return {"build": build, "board": "RTL (hwq emulate --rtl)" if rtl else "graph (hwq emulate)",
            "dataset": report["dataset"], "images": s["samples"], "answered": report["answered"],
            "whole_command_s": round(seconds, 2), "device_accuracy": s["device_accuracy"],
            "agreement_with_host": s["agreement"]}


def _session_costs(model: BuildModel, inputs: list[bytes]) -> dict:
    """Where the emulated board's time per image goes, without a pty: the session handling one image's commands
    (``db load``, the ``db`` chunks, ``infer 1 0``) with the class computed, and again with it cached."""
    accelerator = EmulatedAccelerator(model)
    session = DutSession(accelerator)

    def serve(data: bytes) -> None:
        for command in [f"db load {len(data)}"] + hex_chunks(data) + ["infer 1 0"]:
            accelerator.sync_idle()
            reply_bytes(session.handle(command))

    model.classify_many(inputs[:4])         # the reference's first inputs are also checked against qonnx: not timed
    started = time.perf_counter()
    for data in inputs:
        serve(data)
    with_class = (time.perf_counter() - started) / len(inputs)
    started = time.perf_counter()
    for data in inputs:                     # the same inputs again (at most 64): the class comes from the cache
        serve(data)
    cached = (time.perf_counter() - started) / len(inputs)
    started = time.perf_counter()
    for data in inputs:
        model.classify(data)
    classify = (time.perf_counter() - started) / len(inputs)
    return {"images": len(inputs), "session_per_image_us": with_class * 1e6, "classify_per_image_us": classify * 1e6,
            "protocol_per_image_us": (with_class - classify) * 1e6,
            "commands_per_image": 2 + len(hex_chunks(inputs[0])), "cached_session_per_image_us": cached * 1e6}


def _rtl_board(build: str, samples: int) -> dict:
    """The RTL board (``hwq emulate --rtl``) of ``build``: the seconds to start it (Verilator compile, unless
    cached), accuracy mode's rate against it (pipelined) and performance mode's measured / estimated."""
    model = BuildModel.from_build_dir(build)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp, Emulator(model, rtl=True) as emulator:
        start_s = time.perf_counter() - started
        rate = _accuracy_rate(emulator.port, build, samples, True)
        perf = run_measure(MeasureConfig(port=emulator.port, mode="performance", out_dir=tmp, build_dir=build,
                                         min_window_s=1.0))
        simulated, origin = emulator.accelerator.simulated, emulator.accelerator.origin
    s = perf["summary"]
    return {"build": build, "circuit": origin, "start_seconds": round(start_s, 2), "accuracy_mode": rate,
            "measured_median_per_s": s["throughput_median_per_s"], "estimated_fps_per_s": s["estimated_fps_per_s"],
            "measured_over_estimated": s["measured_over_estimated"], "latency_median_us": s["latency_median_us"],
            "estimated_latency_us": s["estimated_latency_us"], "inferences_simulated": simulated}


def standard_onnx(path: Path) -> bytes:
    """The exported QONNX model as standard ONNX for onnxruntime: each BipolarQuant of a constant folded into the
    constant, each other one written ``Where(x >= 0, scale, -scale)``, Quant nodes as QuantizeLinear /
    DequantizeLinear (qonnx's QuantToQCDQ), a free batch dimension."""
    from onnx import helper
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.transformation.qonnx_to_qcdq import QuantToQCDQ

    model = ModelWrapper(str(path))
    graph = model.graph
    for node in [n for n in graph.node if n.op_type == "BipolarQuant"]:
        x, scale_name = node.input
        scale, weights = model.get_initializer(scale_name), model.get_initializer(x)
        if weights is not None:
            model.set_initializer(node.output[0], (np.where(weights >= 0, 1.0, -1.0) * scale).astype(np.float32))
            graph.node.remove(node)
            continue
        zero, pos, neg, ge = (f"{node.name}_{k}" for k in ("zero", "pos", "neg", "ge"))
        model.set_initializer(zero, np.zeros((), np.float32))
        model.set_initializer(pos, np.asarray(scale, np.float32))
        model.set_initializer(neg, -np.asarray(scale, np.float32))
        at = list(graph.node).index(node)
        graph.node.insert(at, helper.make_node("GreaterOrEqual", [x, zero], [ge]))
        graph.node.insert(at + 1, helper.make_node("Where", [ge, pos, neg], [node.output[0]]))
        graph.node.remove(node)
    model = model.transform(QuantToQCDQ())
    graph = model.graph
    del graph.value_info[:]
    for tensor in list(graph.input) + list(graph.output):
        tensor.type.tensor_type.shape.dim[0].dim_param = "N"
    return model.model.SerializeToString()


def _per_image_and_batched(classify_one, classify_batch, inputs) -> dict:
    started = time.perf_counter()
    one = [classify_one(i) for i in range(len(inputs))]
    per_image = (time.perf_counter() - started) / len(inputs)
    started = time.perf_counter()
    batched = classify_batch()
    batch = (time.perf_counter() - started) / len(inputs)
    assert list(batched) == one, "one by one and batched disagree"
    return {"per_image_us": per_image * 1e6, "batched_per_image_us": batch * 1e6, "classes": [int(c) for c in one]}


def _reference_speed(model: BuildModel, build: str, images: np.ndarray, qonnx_images: int) -> dict:
    """NumPy reference vs qonnx (same HW graph) vs onnxruntime (the exported model) on the build's test images."""
    import onnxruntime as ort

    inputs = [model.to_device_bytes(image) for image in images]
    model.classify_many(inputs[:4])             # the reference's own check against qonnx, not timed
    numpy_ = _per_image_and_batched(lambda i: model.classify(inputs[i]), lambda: model.classify_many(inputs), inputs)
    executor = model.executor
    model.executor = "qonnx"
    few = inputs[:qonnx_images]
    qonnx_ = _per_image_and_batched(lambda i: model.classify(few[i]), lambda: model.classify_many(few), few)
    model.executor = executor
    exported = Path(build).resolve().parent / "model.onnx"
    session = ort.InferenceSession(standard_onnx(exported), providers=["CPUExecutionProvider"])
    graph_input = session.get_inputs()[0]
    floats = images.astype(np.float32) / 255.0     # the exported model's input convention: pixels / 255
    shape = [len(images)] + [int(d) for d in graph_input.shape[1:]]
    floats = floats.reshape(shape)
    ort_ = _per_image_and_batched(
        lambda i: int(np.argmax(session.run(None, {graph_input.name: floats[i:i + 1]})[0])),
        lambda: np.argmax(session.run(None, {graph_input.name: floats})[0], axis=1), inputs)
    agree_ort = float(np.mean(np.array(numpy_["classes"]) == np.array(ort_["classes"])))
    agree_qonnx = float(np.mean(np.array(numpy_["classes"][:len(few)]) == np.array(qonnx_["classes"])))
    for row in (numpy_, qonnx_, ort_):
        row.pop("classes")
    return {"images": len(inputs), "qonnx_images": len(few), "executor": executor, "numpy_reference": numpy_,
            "qonnx_execute_onnx": qonnx_, "onnxruntime_exported_model": ort_,
            "numpy_over_onnxruntime": {k: numpy_[k] / ort_[k] for k in ("per_image_us", "batched_per_image_us")},
            "qonnx_over_numpy": {k: qonnx_[k] / numpy_[k] for k in ("per_image_us", "batched_per_image_us")},
            "classes_agree_numpy_qonnx": agree_qonnx, "classes_agree_numpy_onnxruntime": agree_ort,
            "onnxruntime_model": str(exported)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--build", default="runs/demo-digits-tfc-w1a1/build-pynq-z2")
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--samples", type=int, default=360, help="images for the accuracy-mode inference rate")
    parser.add_argument("--rtl-build", dest="rtl_builds", action="append", default=[],
                        help="also measure the RTL board (hwq emulate --rtl) of this build (repeatable)")
    parser.add_argument("--test-set-build", dest="test_set_builds", action="append", default=[],
                        help="also run accuracy mode over this build's whole test split, on the graph board and "
                             "the RTL board, each end in its own process (repeatable)")
    parser.add_argument("--qonnx-images", dest="qonnx_images", type=int, default=50,
                        help="images for qonnx's (slow) execution of the HW graph")
    parser.add_argument("--results", default="benchmarks/harness.json")
    args = parser.parse_args()

    model = BuildModel.from_build_dir(args.build)
    image = model.to_device_bytes(np.zeros(model.input_bytes, dtype="uint8"))
    with tempfile.TemporaryDirectory() as tmp, Emulator(model) as emulator:
        with Device.open(emulator.port, timeout_s=5.0, transcript=os.path.join(tmp, "t.log")) as dut:
            name_rtt = _timed(dut.name, args.repeats)
            load = _timed(lambda: dut.load(image), max(10, args.repeats // 10))
            infer_rtt = _timed(lambda: dut.infer(1, 0), args.repeats)
        perf = run_measure(MeasureConfig(port=emulator.port, mode="performance", out_dir=tmp, build_dir=args.build))
        startup = _performance_startup(emulator.port, args.build)
        in_process = {name: _accuracy_rate(emulator.port, args.build, args.samples, pipeline)
                      for name, pipeline in (("one_command_at_a_time", False), ("pipelined", True))}
    own_process = _own_process_rates(args.build, args.samples)
    _, images, _ = load_test_set(MeasureConfig(port="-", build_dir=args.build), model, samples=args.samples)
    session = _session_costs(model, [model.to_device_bytes(im) for im in images[:64]])
    reference = _reference_speed(model, args.build, images, args.qonnx_images)
    rtl = [_rtl_board(build, args.samples) for build in args.rtl_builds]
    test_sets = [_whole_test_set(build, rtl) for build in args.test_set_builds for rtl in (False, True)]
    s = perf["summary"]
    result = {
        "benchmark": "harness against the emulated board (real pty, pyserial)",
        "command": f"python scripts/bench_harness.py --build {args.build} --repeats {args.repeats} "
                   f"--samples {args.samples} --qonnx-images {args.qonnx_images}"
                   + "".join(f" --rtl-build {b}" for b in args.rtl_builds)
                   + "".join(f" --test-set-build {b}" for b in args.test_set_builds),
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
        "accuracy_mode_rate": {"emulator_in_this_process": in_process, "emulator_in_its_own_process": own_process},
        "performance_mode_startup": startup,
        "emulator_session_costs": session,
        "functional_model": reference,
        "rtl_board": rtl,
        "whole_test_set": test_sets,
        "machine": {"cpu_count": os.cpu_count(), "load_average": os.getloadavg()},
    }
    write_json(args.results, result)
    t, r, f = result["timing"], result["round_trip"], reference
    print(f"timing: measured/estimated {t['measured_over_estimated']:.6f} (error {t['relative_error']:.2e}), "
          f"one inference {t['one_inference_latency_median_us']:g} us (estimated {t['estimated_latency_us']:g} us); "
          f"round trips: name {r['name']['median_us']:.0f} us, infer 1 0 {r['infer_1_0']['median_us']:.0f} us, "
          f"load {r['input_bytes']} B {r['load_one_image']['median_us']:.0f} us")
    for where, rates in result["accuracy_mode_rate"].items():
        print(f"accuracy mode, {where}: " + ", ".join(
            f"{k} {v['images_per_s']:,.0f} images/s ({v['answered']['images_per_s']:,.0f} answered)"
            for k, v in rates.items()))
    print("performance mode, launch to first input / whole command (s): " + ", ".join(
        f"{k} {v['to_first_input_s']:.2f} / {v['whole_command_s']:.2f}" for k, v in startup.items()))
    print(f"emulated board per image: {session['session_per_image_us']:.0f} us "
          f"(class {session['classify_per_image_us']:.0f} us, protocol {session['protocol_per_image_us']:.0f} us)")
    print(f"functional model per image / batched (us): numpy {f['numpy_reference']['per_image_us']:.1f} / "
          f"{f['numpy_reference']['batched_per_image_us']:.2f}, qonnx {f['qonnx_execute_onnx']['per_image_us']:.0f}"
          f" / {f['qonnx_execute_onnx']['batched_per_image_us']:.0f}, onnxruntime "
          f"{f['onnxruntime_exported_model']['per_image_us']:.1f} / "
          f"{f['onnxruntime_exported_model']['batched_per_image_us']:.2f}; classes agree numpy-qonnx "
          f"{f['classes_agree_numpy_qonnx']:.3f}, numpy-onnxruntime {f['classes_agree_numpy_onnxruntime']:.3f} "
          f"-> {args.results}")
    for row in test_sets:
        print(f"{row['dataset']} test split ({row['images']} images) on the {row['board']} board: "
              f"{row['answered']['images_per_s']:,.0f} images/s answered, {row['whole_command_s']} s the whole "
              f"command, agreement {row['agreement_with_host']:.4f}")
    for row in rtl:
        print(f"RTL board {row['build']} ({row['circuit']}): started in {row['start_seconds']} s, accuracy mode "
              f"{row['accuracy_mode']['images_per_s']:,.0f} images/s, measured/estimated "
              f"{row['measured_over_estimated']:.4f}")


if __name__ == "__main__":
    main()
