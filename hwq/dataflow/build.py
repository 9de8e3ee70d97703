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
from functools import partial
from importlib.metadata import version
from pathlib import Path
from typing import Any, Callable

import numpy as np
from qonnx.core.modelwrapper import ModelWrapper

from hwq import manifest as records
from hwq._io import read_json
from hwq.accelerator import finn_accelerator, with_sample_input
from hwq.dataflow.adder import refuse_adder_layers
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


def source_onnx(source: str | Path) -> Path:
    """The QONNX file a build reads: ``source`` itself when it is a ``.onnx`` file, else ``<run>/model.onnx``."""
    source = Path(source)
    return source if source.suffix == ".onnx" else source / ONNX_FILE


def _is_hwq_run(source: Path) -> bool:
    """A folder ``hwq train`` / ``hwq export`` wrote (its records say what the model is and whether it passed)."""
    return source.suffix != ".onnx" and any((source / name).is_file() for name in (EXPORT_FILE, "metrics.json"))


def check_source(source: Path, config: BuildConfig) -> dict[str, Any]:
    """Where the model comes from, checked: an hwq run (its export must have passed, :func:`check_export`), or
    a model hwq did not make (a bare QONNX file, or a folder holding only ``model.onnx``), which needs
    ``--dataset`` or ``--calibration`` for the gate's inputs and is compared with the file itself."""
    if source.suffix == ".onnx":
        if source.is_dir():
            raise ModelFileError(f"{source}: a folder; expected a QONNX file or a run folder without .onnx")
        if not source.is_file():
            raise ModelFileError(f"{source}: ONNX file not found")
    elif not source.is_dir():
        raise ModelFileError(f"{source}: no such run folder (or give a QONNX file: MODEL.onnx)")
    if _is_hwq_run(source):
        return check_export(source, config.force)
    if not source_onnx(source).is_file():
        raise ModelFileError(f"{source_onnx(source)}: ONNX file not found")
    return {"file": None, "status": "not an hwq export",
            "note": "a model hwq did not train: the gates compare the build with this QONNX file itself"}


def _test_images(source: Path, config: BuildConfig) -> tuple[str, np.ndarray]:
    """The gate's uint8 images: ``--calibration FILE.npz``, else the test split of ``--dataset`` (else the run's
    dataset); the first ``verify_samples``."""
    from hwq.data import load_dataset

    if config.calibration is not None:
        images = read_calibration(config.calibration)
        name = f"calibration:{config.calibration}"
    else:
        train = read_json(source / "metrics.json", "training metrics").get("config", {}) \
            if _is_hwq_run(source) and (source / "metrics.json").is_file() else {}
        dataset = config.dataset if config.dataset is not None else train.get("dataset")
        if dataset is None:
            raise ConfigError(f"{source}: no dataset for the gate's test images: give --dataset NAME (digits, "
                              "mnist, cifar10) or --calibration FILE.npz")
        loaded = load_dataset(dataset, config.data_dir or train.get("data_dir"))
        images, name = loaded.test_x.numpy(), loaded.name
    if config.verify_samples > len(images):
        what = name if config.calibration is not None else f"the {name} test split"
        raise ConfigError(f"verify_samples (--verify-samples) {config.verify_samples}: {what} has "
                          f"{len(images)} images")
    return name, np.asarray(images[:config.verify_samples])


def read_calibration(path: str | Path) -> np.ndarray:
    """The images of a ``.npz`` file (the array ``images``, or its only array): uint8 pixels, one image per row
    (N, C, H, W) or (N, features). A one-line ConfigError otherwise."""
    path = Path(path)
    field = f"calibration (--calibration) {path}"
    if not path.is_file():
        raise ConfigError(f"{field}: file not found")
    try:
        with np.load(path, allow_pickle=False) as data:
            names = list(data.files)
            key = "images" if "images" in names else names[0] if len(names) == 1 else None
            if key is None:
                raise ConfigError(f"{field}: expected an array named 'images' (or a single array); it holds "
                                  f"{', '.join(names) or 'nothing'}")
            images = data[key]
    except ConfigError:
        raise
    except Exception as err:
        raise ConfigError(f"{field}: not a readable .npz file ({type(err).__name__})") from None
    if images.ndim < 2 or not len(images):
        raise ConfigError(f"{field}: expected images as (N, ...) uint8 pixels, got shape {list(images.shape)}")
    if images.dtype != np.uint8:
        if not np.issubdtype(images.dtype, np.integer) or images.min() < 0 or images.max() > 255:
            raise ConfigError(f"{field}: expected uint8 pixels 0..255 (the bytes the accelerator receives), got "
                              f"{images.dtype}")
        images = images.astype(np.uint8)
    return images


def check_image_shape(images: np.ndarray, model: ModelWrapper, source: Path, what: str) -> None:
    """Each image must hold as many values as the graph input."""
    name = model.graph.input[0].name
    shape = [int(d) for d in model.get_tensor_shape(name)]
    if int(np.prod(images.shape[1:])) != int(np.prod(shape[1:])):
        raise ConfigError(f"{source}: graph input '{name}' takes {shape}, the images of {what} are "
                          f"{list(images.shape[1:])} ({int(np.prod(images.shape[1:]))} values)")


def check_inputs(run_dir: Path, config: BuildConfig) -> dict[str, Any]:
    """The cheap checks, before any output is written: board, source (export record or bring-your-own), graph
    (import tidying, input convention), folding file, images.

    Returns what the build needs from them (``board``, ``qonnx_model``, ``dataset``, ``images``, ``export``,
    ``import``, ``input_convention``)."""
    from hwq.boards import load_board
    from hwq.dataflow.input_convention import find_input_convention
    from hwq.dataflow.model_import import check_tidy, load_qonnx

    source = Path(run_dir)
    board = load_board(config.canonical().board, config.boards_dir)
    export = check_source(source, config)
    onnx_path = source_onnx(source)
    qonnx_model, imported = load_qonnx(onnx_path)
    try:
        convention = find_input_convention(qonnx_model, config.input_scale, config.input_offset)
    except MappingError as err:
        raise MappingError(f"{onnx_path}: {err}") from None
    if config.folding_file is not None and not Path(config.folding_file).is_file():
        raise ConfigError(f"folding_file (--folding) {config.folding_file}: file not found")
    dataset, images = _test_images(source, config)
    check_image_shape(images, qonnx_model, onnx_path, dataset)
    if len(imported["passes"]) > 1:  # more than qonnx's cleanup: compare the tidied graph with the file as given
        original = ModelWrapper(_as_given(onnx_path))
        imported["check"] = check_tidy(original, qonnx_model, convention.graph_input(images[:4]))
        if not imported["check"]["passed"]:
            raise VerificationError(f"{onnx_path}: the tidied graph differs from the file (max |diff| "
                                    f"{imported['check']['max_abs_diff']:.3g}); please report this model")
    return {"board": board, "export": export, "qonnx_model": qonnx_model, "dataset": dataset, "images": images,
            "import": imported, "input_convention": convention, "onnx": onnx_path}


def _as_given(path: Path):
    """The file as the user gave it (domains already checked), with its external data and opset imports."""
    import onnx

    from hwq.dataflow.model_import import add_missing_opset_imports

    proto = onnx.load(str(path))
    add_missing_opset_imports(proto)
    return proto


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
    inputs = {"onnx": source_onnx(run_dir)}
    if getattr(config, "calibration", None) is not None:
        inputs["calibration"] = Path(config.calibration)
    if config.folding_file is not None:
        inputs["folding_file"] = Path(config.folding_file)
    return inputs


def new_manifest(run_dir: Path, config, inputs: dict[str, Any], backend: str, board,
                 tool_versions: dict[str, str]) -> dict[str, Any]:
    """A build's manifest as it starts (``running``), either backend: the shared shape (:mod:`hwq.manifest`) plus
    ``backend``, ``board`` and ``source`` (the model, its dataset and the export check)."""
    source = inputs["onnx"]
    return records.start(
        "build", config.to_dict(), build_inputs(run_dir, config), tool_versions, backend=backend,
        board=board.to_dict(),
        source={"run": str(run_dir), "onnx": str(source), "onnx_sha256": sha256_file(source),
                "dataset": inputs["dataset"], "export_check": inputs["export"], "import": inputs["import"],
                "input": inputs["input_convention"].to_dict()})


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
    refuse_adder_layers(inputs["qonnx_model"], inputs["onnx"])  # before any output: FINN has no adder MVAU
    board = inputs["board"]
    shown = StepProgress(board.name, total=last - first + 1, show=progress)
    if inputs["export"]["status"].startswith("overridden"):
        shown.warn(f"building an unverified model (--force): {inputs['export']['problem']}")
    manifest = new_manifest(run_dir, config, inputs, "finn", board,
                            {p: version(p) for p in ("finn-plus", "qonnx", "onnx")})

    def context(out_dir: Path) -> BuildContext:
        return BuildContext(config=config, board=board, out_dir=out_dir, finn_cfg=finn_config(board, out_dir),
                            qonnx_model=inputs["qonnx_model"], images=inputs["images"], progress=shown,
                            input_convention=inputs["input_convention"])

    build_with_steps(config.build_dir(run_dir), steps, (first, last), inputs["qonnx_model"], context, manifest,
                     shown, start_step=start_step, complete=partial(_complete, sample=first_image(inputs)),
                     started=started)
    for vendor_step, state in manifest.get("vendor", {}).items():  # reported even without progress output
        if state["status"] == "skipped":
            shown.print(f"  {vendor_step:<28} skipped: {state['reason']}", always=True)
    return manifest


def first_image(inputs: dict[str, Any]):
    """The first image the gates check (the build's ``sample_input``), or None without one."""
    images = inputs.get("images")
    return images[0] if images is not None and len(images) else None


def _complete(manifest: dict[str, Any], out_dir: Path, sample=None) -> None:
    """The end of a successful FINN build in ``out_dir`` (also one stopped by ``--stop-step``): every step's
    section is in ``manifest``; add what is derived from them (``outputs``, ``results``, ``accelerator`` with
    ``sample`` as its sample input) before it is written as done."""
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
    # what emulate/measure read
    manifest["accelerator"] = with_sample_input(finn_accelerator(manifest, out_dir), out_dir, sample)


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
