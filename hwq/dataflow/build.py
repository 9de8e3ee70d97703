# SPDX-License-Identifier: BSD-3-Clause
"""The build stage: ``run_build(run_dir, BuildConfig) -> manifest``.

It reads ``<run>/model.onnx`` (from ``hwq export``) and writes ``<run>/build-<board>/``:

- ``intermediate/<step>.onnx``: the model each step passed on, its checkpoint (Netron opens them);
- ``folding.json``: the folding used, in FINN's format (usable as ``--folding``);
- ``codegen/``: generated HLS C++ / Verilog per layer; ``finn/report/``: FINN's own estimate reports;
- ``build.log``: what FINN printed; ``manifest.json``: steps, gates, estimates, vendor-step status.

Cheap checks come first: the config, the board file, the export's verification record (``export.json``), the
graph's node domains, the test images and the output folder, all before any FINN step; and among the steps the
resource fit (``fold``) before the bit-exactness gate. The build is written into a staging folder next to the
target and replaces the previous build only when it succeeds (:mod:`hwq.dataflow.staging`). The steps are run by
:mod:`hwq.dataflow.driver`; :func:`build_with_steps` is the frame both backends share.
"""

from __future__ import annotations

import copy
import time
from importlib.metadata import version
from pathlib import Path
from typing import Any, Callable

from qonnx.core.modelwrapper import ModelWrapper

from hwq import manifest as records
from hwq._io import read_json
from hwq.accelerator import finn_accelerator
from hwq.dataflow.config import BuildConfig
from hwq.dataflow.driver import check_resumable, restore, run_steps, step_range
from hwq.dataflow.errors import MappingError, ModelFileError
from hwq.dataflow.finn_compat import finn_output_to, finn_session
from hwq.dataflow.progress import StepProgress
from hwq.dataflow.provenance import name_user_nodes, record_user_nodes, tracking_user_nodes
from hwq.dataflow.staging import StagedOutput
from hwq.dataflow.steps import HW_GRAPH_STEP, STEPS, BuildContext
from hwq.errors import ConfigError, HwqError, Interrupted, VerificationError
from hwq.manifest import sha256_file
from hwq.onnx_check import check_domains

MANIFEST_FILE, ONNX_FILE, EXPORT_FILE = "manifest.json", "model.onnx", "export.json"
QONNX_OPS = ("Quant", "BipolarQuant", "BinaryQuant", "Trunc")


class UnverifiedModelError(VerificationError):
    """``model.onnx`` has no passed export verification (``export.json``) that matches it."""


def check_export(run_dir: Path, force: bool = False) -> dict[str, Any]:
    """Refuse a ``model.onnx`` whose export verification is missing, failed, or about another file.

    ``export.json`` (written by ``hwq export``) must say ``verification.passed`` and hold the SHA-256 of the
    ``model.onnx`` beside it. Returns the manifest's record of the check; with ``force`` a problem is recorded
    (``overridden``) instead of raised. Raises :class:`UnverifiedModelError`, one line naming the file.
    """
    report_path, onnx_path = run_dir / EXPORT_FILE, run_dir / ONNX_FILE
    problem = None
    if not onnx_path.is_file():
        raise ModelFileError(f"{onnx_path}: ONNX file not found (run 'hwq export {run_dir}' first)")
    if not report_path.is_file():
        problem = f"{report_path}: not found, so {onnx_path} was never verified (run 'hwq export {run_dir}')"
    else:
        report = read_json(report_path, "export report")
        verification = report.get("verification", {}) if isinstance(report, dict) else {}
        recorded = (report.get("outputs", {}) if isinstance(report, dict) else {}).get("onnx_sha256")
        if not verification.get("passed"):
            detail = ", ".join(f"{k} {verification[k]:.3g}" for k in ("max_abs_diff", "argmax_match")
                               if isinstance(verification.get(k), (int, float)))
            problem = (f"{report_path}: the export verification failed ({detail or 'not passed'}), so "
                       f"{onnx_path} does not compute what the trained model computes")
        elif recorded != sha256_file(onnx_path):
            problem = (f"{onnx_path}: its SHA-256 is not the one {report_path} verified (the file changed after "
                       f"'hwq export'; export again)")
    if problem is None:
        return {"file": EXPORT_FILE, "status": "passed"}
    if not force:
        raise UnverifiedModelError(f"{problem}; --force builds it anyway")
    return {"file": EXPORT_FILE, "status": "overridden (--force)", "problem": problem}


def load_qonnx(path: str | Path) -> ModelWrapper:
    """Load a QONNX file; a missing, corrupt or non-QONNX file is a ModelFileError naming it."""
    import onnx

    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: ONNX file not found (run 'hwq export' first)")
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as err:  # onnx raises DecodeError, ...
        raise ModelFileError(f"{path}: not a valid ONNX file ({type(err).__name__})") from None
    check_domains(proto, source=path)  # before qonnx, which imports the module a node's domain names
    try:
        onnx.checker.check_model(proto)
    except Exception as err:  # ValidationError, ...
        raise ModelFileError(f"{path}: not a valid ONNX file ({type(err).__name__})") from None
    model = ModelWrapper(proto)
    if not any(n.op_type in QONNX_OPS for n in model.graph.node):
        raise ModelFileError(f"{path}: not a QONNX model (no {'/'.join(QONNX_OPS)} nodes)")
    if len(model.graph.input) != 1 or len(model.graph.output) != 1:
        raise ModelFileError(f"{path}: expected one graph input and one output")
    return model


def _test_images(run_dir: Path, config: BuildConfig):
    from hwq.data import load_dataset

    metrics = read_json(run_dir / "metrics.json", "training metrics")
    train = metrics.get("config", {})
    dataset = load_dataset(train.get("dataset", "digits"), config.data_dir or train.get("data_dir"))
    if config.verify_samples > len(dataset.test_x):
        raise ConfigError(f"verify_samples (--verify-samples) {config.verify_samples}: the {dataset.name} test "
                          f"split has {len(dataset.test_x)} images")
    return dataset.name, dataset.test_x[:config.verify_samples].numpy()


def check_inputs(run_dir: Path, config: BuildConfig) -> dict[str, Any]:
    """The cheap checks, before any output is written: board, export record, graph, folding file, images.

    Returns what the build needs from them (``board``, ``qonnx_model``, ``dataset``, ``images``, ``export``)."""
    from hwq.boards import load_board

    board = load_board(config.canonical().board, config.boards_dir)
    export = check_export(run_dir, config.force)
    qonnx_model = load_qonnx(run_dir / ONNX_FILE)
    if config.folding_file is not None and not Path(config.folding_file).is_file():
        raise ConfigError(f"folding_file (--folding) {config.folding_file}: file not found")
    dataset, images = _test_images(run_dir, config)
    return {"board": board, "export": export, "qonnx_model": qonnx_model, "dataset": dataset, "images": images}


def finn_config(board, out_dir: Path):
    """FINN's build config for ``board`` with its outputs under ``out_dir/finn`` (estimate reports only)."""
    from finn.builder.build_dataflow_config import DataflowBuildConfig, DataflowOutputType, ShellFlowType

    return DataflowBuildConfig(
        output_dir=str(out_dir / "finn"), synth_clk_period_ns=board.clock_period_ns, fpga_part=board.part,
        board=board.finn_board, generate_outputs=[DataflowOutputType.ESTIMATE_REPORTS],
        shell_flow_type=ShellFlowType.VIVADO_ZYNQ if board.shell == "zynq" else ShellFlowType.VITIS_ALVEO,
        vitis_platform=board.platform, auto_fifo_depths=False, save_intermediate_models=True,
    )


def build_inputs(run_dir: str | Path, config) -> dict[str, Path]:
    """The files a build (either backend) is made from: ``model.onnx`` and, if given, the folding file. The
    manifest records their SHA-256 (``inputs``); the flow compares them to decide whether a build is up to date."""
    inputs = {"onnx": Path(run_dir) / ONNX_FILE}
    if config.folding_file is not None:
        inputs["folding_file"] = Path(config.folding_file)
    return inputs


def new_manifest(run_dir: Path, config, inputs: dict[str, Any], backend: str, board,
                 tool_versions: dict[str, str]) -> dict[str, Any]:
    """A build's manifest as it starts (``running``), either backend: the shared shape (:mod:`hwq.manifest`) plus
    ``backend``, ``board`` and ``source`` (the model, its dataset and the export check)."""
    source = run_dir / ONNX_FILE
    return records.start(
        "build", config.to_dict(), build_inputs(run_dir, config), tool_versions, backend=backend,
        board=board.to_dict(),
        source={"run": str(run_dir), "onnx": str(source), "onnx_sha256": sha256_file(source),
                "dataset": inputs["dataset"], "export_check": inputs["export"]})


def run_build(
    run_dir: str | Path, config: BuildConfig = BuildConfig(), progress: bool = True,
    steps: list[tuple[str, Callable]] | None = None, *, start_step: str | None = None, stop_step: str | None = None,
) -> dict[str, Any]:
    """Build ``run_dir``'s exported model into a FINN dataflow accelerator for ``config.board``.

    Runs ``steps`` (default :data:`~hwq.dataflow.steps.STEPS`) from ``start_step`` (resuming from the checkpoint of
    the step before it in the existing build of the same model and settings) to ``stop_step`` (then the build is
    ``stopped``). Returns the manifest (also written to ``<out>/manifest.json``, also when a step fails).

    >>> manifest = run_build("runs/tfc-digits", BuildConfig(board="pynq-z2", target_fps=100_000))  # doctest: +SKIP
    >>> hwq.manifest.estimate_totals(manifest)["estimated_fps"]                                    # doctest: +SKIP
    156250.0
    """
    started = time.perf_counter()
    run_dir = Path(run_dir)
    config = config.canonical()
    steps = list(steps or STEPS)
    first, last = step_range(steps, start_step, stop_step)
    inputs = check_inputs(run_dir, config)
    board = inputs["board"]
    shown = StepProgress(board.name, total=last - first + 1, show=progress)
    if inputs["export"]["status"] != "passed":
        shown.warn(f"building an unverified model (--force): {inputs['export']['problem']}")
    manifest = new_manifest(run_dir, config, inputs, "finn", board,
                            {p: version(p) for p in ("finn-plus", "qonnx", "onnx")})

    def context(out_dir: Path) -> BuildContext:
        return BuildContext(config=config, board=board, out_dir=out_dir, finn_cfg=finn_config(board, out_dir),
                            qonnx_model=inputs["qonnx_model"], images=inputs["images"], progress=shown)

    build_with_steps(config.build_dir(run_dir), steps, (first, last), inputs["qonnx_model"], context, manifest,
                     shown, start_step=start_step, complete=_complete, started=started)
    for vendor_step, state in manifest.get("vendor", {}).items():  # reported even without progress output
        if state["status"] == "skipped":
            shown.print(f"  {vendor_step:<28} skipped: {state['reason']}", always=True)
    return manifest


def _complete(manifest: dict[str, Any], out_dir: Path) -> None:
    """The end of a successful FINN build in ``out_dir`` (also one stopped by ``--stop-step``): every step's
    section is in ``manifest``; add what is derived from them (``outputs``, ``results``, ``accelerator``) before it
    is written as done."""
    manifest["outputs"].update(build_outputs(manifest))
    total = records.estimate_totals(manifest) if "estimates" in manifest else {}
    manifest["results"] = {key: value for key, value in {
        "kind": "FINN analytical estimate" if total else None,
        "fps": total.get("estimated_fps"), "latency_us": total.get("estimated_latency_us"),
        "cycles_per_image": total.get("max_cycles"), "clock_mhz": total.get("clock_mhz"),
        "lut": total.get("LUT"), "bram": total.get("BRAM_18K"), "bram_kind": "BRAM18" if total else None,
        "dsp": total.get("DSP"), "uram": total.get("URAM"),
        "bit_exact": manifest.get("bit_exact", {}).get("passed"),
        "integer_range": manifest.get("integer_range", {}).get("passed")}.items() if value is not None}
    manifest["accelerator"] = finn_accelerator(manifest, out_dir)  # what emulate/measure read


def build_outputs(manifest: dict[str, Any]) -> dict[str, str]:
    """The files a build's steps wrote that a later stage reads: the HW graph (:data:`HW_GRAPH_STEP`'s
    checkpoint), the folding (``folding.json``), FINN's console output (``build.log``)."""
    outputs = {"log": "build.log"}
    hw_graph = records.step_checkpoint(manifest, HW_GRAPH_STEP)
    if hw_graph:
        outputs["hw_graph"] = hw_graph
    if "folding" in manifest:
        outputs["folding"] = "folding.json"
    return outputs


def build_with_steps(target: Path, steps: list, step_range_: tuple[int, int], model: ModelWrapper,
                     make_context: Callable[[Path], Any], manifest: dict[str, Any], shown: StepProgress, *,
                     start_step: str | None, complete: Callable[[dict, Path], None], started: float) -> dict[str, Any]:
    """The frame of a build, either backend: stage ``target``, run ``steps[first:last + 1]`` in a FINN session with
    FINN's console output in ``build.log`` (:func:`~hwq.dataflow.finn_compat.finn_output_to`), then ``complete``
    the manifest (``complete(manifest, build_folder)``, the backend's one place where the finished manifest is
    filled in) and write it as done (stopped), or record the failure; replace ``target`` only on success.

    With ``first > 0`` the build resumes from ``target`` (:func:`~hwq.dataflow.driver.check_resumable`, checked
    before anything is written)."""
    first, last = step_range_
    previous = check_resumable(target, steps, first, manifest, start_step) if first > 0 else None
    stage = StagedOutput.begin(target)
    out_dir, path = stage.staging, stage.staging / MANIFEST_FILE
    source = manifest["source"]["onnx"]
    try:
        ctx = make_context(out_dir)
        if previous is not None:
            model = ModelWrapper(check_domains(restore(target, previous, out_dir, steps, first, manifest, ctx)))
            manifest["resumed_from"] = {"build": str(target), "start_step": start_step}
        else:  # so that an error about a node FINN made names the user's node it came from
            model = record_user_nodes(ModelWrapper(copy.deepcopy(model.model)))
        with finn_session(out_dir / "codegen"), (out_dir / "build.log").open("a") as log, shown, \
                finn_output_to(log):
            try:
                with tracking_user_nodes():  # the nodes FINN makes keep the user's node they came from
                    run_steps(steps[first:last + 1], model, ctx, manifest, progress=shown, log=log)
            except Exception as err:
                # the model the failing step was given: an error naming one of its nodes names the user's too
                saved = list(getattr(ctx, "checkpoints", {}).values())
                failed_on = ModelWrapper(str(saved[-1])) if saved else model
                if isinstance(err, MappingError):
                    raise type(err)(name_user_nodes(failed_on, str(err))) from err
                if isinstance(err, HwqError):
                    raise
                # a FINN transform (or a tool) failing on this model: report it against the model file
                name = manifest["steps"][-1]["name"] if manifest["steps"] else "?"
                text = name_user_nodes(failed_on, str(err).splitlines()[0] if str(err) else "")
                raise ModelFileError(f"{source}: step '{name}' failed ({type(err).__name__}: {text}); see "
                                     f"{out_dir / 'build.log'}") from err
        if last < len(steps) - 1:
            manifest["stop_step"] = steps[last][0]
        complete(manifest, out_dir)
        manifest["seconds"] = round(time.perf_counter() - started, 3)
        records.finish(manifest, path, "done" if last == len(steps) - 1 else "stopped")
    except HwqError as err:
        _record_failure(manifest, path, err, started)
        stage.fail(err)  # kept as <target>.failed; the message now says where
        raise
    except KeyboardInterrupt as err:
        _record_failure(manifest, path, err, started)
        stage.keep_failed()
        raise Interrupted.wrap(err, stage.where_kept()) from None
    stage.commit()
    return manifest


def _record_failure(manifest: dict[str, Any], path: Path, err: BaseException, started: float) -> None:
    manifest["seconds"] = round(time.perf_counter() - started, 3)
    records.fail(manifest, path, err)
