# SPDX-License-Identifier: BSD-3-Clause
"""The build stage: ``run_build(run_dir, BuildConfig) -> manifest``.

It reads ``<run>/model.onnx`` (from ``hwq export``) and writes ``<run>/build-<board>/``:

- ``intermediate/NN_<step>.onnx``: the model after every step (Netron opens them);
- ``folding.json``: the folding used, in FINN's format (usable as ``--folding``);
- ``codegen/``: generated HLS C++ / Verilog per layer; ``finn/report/``: FINN's own estimate reports;
- ``build.log``: what FINN printed; ``manifest.json``: steps, gates, estimates, vendor-step status.

Cheap checks come first: the config, the board file, the export's verification record (``export.json``), the
graph's node domains, the test images and the output folder, all before any FINN step; and among the steps the
resource fit (``fold``) before the bit-exactness gate. The build is written into a staging folder next to the
target and replaces the previous build only when it succeeds (:mod:`hwq.dataflow.staging`).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import shutil
import time
import warnings
from importlib.metadata import version
from pathlib import Path
from typing import Any, Callable

from qonnx.core.modelwrapper import ModelWrapper

from hwq._io import read_json, write_json
from hwq.accelerator import finn_accelerator
from hwq.boards import load_board
from hwq.dataflow.config import BuildConfig
from hwq.dataflow.errors import ModelFileError
from hwq.dataflow.finn_compat import finn_session
from hwq.dataflow.progress import StepProgress
from hwq.dataflow.staging import StagedOutput
from hwq.dataflow.steps import STEPS, BuildContext
from hwq.dataflow.vendor import vendor_status
from hwq.errors import ConfigError, HwqError, Interrupted, VerificationError
from hwq.onnx_check import check_domains

MANIFEST_FILE, ONNX_FILE, EXPORT_FILE = "manifest.json", "model.onnx", "export.json"
QONNX_OPS = ("Quant", "BipolarQuant", "BinaryQuant", "Trunc")


class UnverifiedModelError(VerificationError):
    """``model.onnx`` has no passed export verification (``export.json``) that matches it."""


def sha256_file(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


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


def _replace_in_place(out_dir: Path) -> None:
    """Unstaged builds (inside a folder the caller stages, e.g. the open backend's): clear ``out_dir``."""
    if out_dir.exists() and any(out_dir.iterdir()):
        if not (out_dir / MANIFEST_FILE).is_file():
            raise ConfigError(f"--out {out_dir}: exists and is not a build directory (no {MANIFEST_FILE}); "
                              "choose another --out")
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)


def check_inputs(run_dir: Path, config: BuildConfig) -> dict[str, Any]:
    """The cheap checks, before any output is written: board, export record, graph, folding file, images.

    Returns what the build needs from them (``board``, ``qonnx_model``, ``dataset``, ``images``, ``export``)."""
    board = load_board(config.board)
    if board.shell == "open":
        raise ConfigError(f"board '{board.name}' is built by the open backend (shell: open): add --backend open")
    export = check_export(run_dir, config.force)
    qonnx_model = load_qonnx(run_dir / ONNX_FILE)
    if config.folding_file is not None and not Path(config.folding_file).is_file():
        raise ConfigError(f"folding_file (--folding) {config.folding_file}: file not found")
    dataset, images = _test_images(run_dir, config)
    return {"board": board, "export": export, "qonnx_model": qonnx_model, "dataset": dataset, "images": images}


def _finn_config(board, out_dir: Path):
    from finn.builder.build_dataflow_config import DataflowBuildConfig, DataflowOutputType, ShellFlowType

    return DataflowBuildConfig(
        output_dir=str(out_dir / "finn"), synth_clk_period_ns=board.clock_period_ns, fpga_part=board.part,
        board=board.finn_board, generate_outputs=[DataflowOutputType.ESTIMATE_REPORTS],
        shell_flow_type=ShellFlowType.VIVADO_ZYNQ if board.shell == "zynq" else ShellFlowType.VITIS_ALVEO,
        vitis_platform=board.platform, auto_fifo_depths=False, save_intermediate_models=True,
    )


def run_build(
    run_dir: str | Path, config: BuildConfig = BuildConfig(), progress: bool = True,
    steps: list[tuple[str, Callable]] | None = None, *, staged: bool = True,
) -> dict[str, Any]:
    """Build ``run_dir``'s exported model into a FINN dataflow accelerator for ``config.board``.

    Returns the manifest (also written to ``<out>/manifest.json``, also when a step fails). ``staged=False``
    writes straight into the output folder, for a caller that stages a folder around it (the open backend).

    >>> manifest = run_build("runs/tfc-digits", BuildConfig(board="pynq-z2", target_fps=100_000))  # doctest: +SKIP
    >>> manifest["estimates"]["total"]["estimated_fps"]                                            # doctest: +SKIP
    156250.0
    """
    started = time.perf_counter()
    run_dir = Path(run_dir)
    inputs = check_inputs(run_dir, config)
    board = inputs["board"]
    target = Path(config.out_dir) if config.out_dir else run_dir / f"build-{board.name}"
    stage = StagedOutput.begin(target) if staged else None
    out_dir = stage.staging if stage else target
    if not staged:
        _replace_in_place(out_dir)
    shown = StepProgress(board.name, total=len(steps or STEPS), show=progress)
    if inputs["export"]["status"] != "passed":
        shown.warn(f"building an unverified model (--force): {inputs['export']['problem']}")
    source = run_dir / ONNX_FILE
    manifest: dict[str, Any] = {
        "stage": "build", "status": "running",
        "source": {"run": str(run_dir), "onnx": str(source), "onnx_sha256": sha256_file(source),
                   "dataset": inputs["dataset"], "export_check": inputs["export"]},
        "board": board.to_dict(), "config": config.to_dict(),
        "tool_versions": {p: version(p) for p in ("finn-plus", "qonnx", "onnx")},
        "steps": [],
    }
    try:
        _build_into(out_dir, steps or STEPS, inputs, config, manifest, shown, started)
    except HwqError as err:
        if stage:
            stage.fail(err)  # kept as <target>.failed; the message now says where
        raise
    except KeyboardInterrupt as err:
        if stage:
            stage.keep_failed()
            raise Interrupted.wrap(err, stage.where_kept()) from None
        raise
    if stage:
        stage.commit()
    return manifest


def _build_into(out_dir: Path, steps, inputs: dict, config: BuildConfig, manifest: dict, shown: StepProgress,
                started: float) -> None:
    """Run the steps with ``out_dir`` as the build folder; ``manifest`` is filled in and written, also on failure."""
    board, source = inputs["board"], Path(manifest["source"]["onnx"])
    (out_dir / "intermediate").mkdir(parents=True, exist_ok=True)
    with finn_session(out_dir / "codegen"):
        ctx = BuildContext(config=config, board=board, out_dir=out_dir, finn_cfg=_finn_config(board, out_dir),
                           qonnx_model=inputs["qonnx_model"], images=inputs["images"], progress=shown)
        ctx.report["vendor"] = vendor_status(board.shell)
        try:
            _run_steps(steps, inputs["qonnx_model"], ctx, manifest, shown)
            ctx.report["accelerator"] = finn_accelerator(manifest | ctx.report, out_dir)  # what emulate/measure read
            manifest["status"] = "done"
        except HwqError as err:
            manifest.update(status="failed", error=str(err))
            raise
        except KeyboardInterrupt:
            manifest.update(status="interrupted", error=f"interrupted in step '{manifest['steps'][-1]['name']}'")
            raise
        except Exception as err:  # a FINN transform failing on this model: report it against the model file
            manifest.update(status="failed", error=f"{type(err).__name__}: {err}")
            raise ModelFileError(f"{source}: FINN failed in step '{manifest['steps'][-1]['name']}' "
                                 f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}); "
                                 f"see {out_dir / 'build.log'}") from err
        finally:
            ctx.report.pop("observed_ranges", None)
            manifest.update({k: v for k, v in ctx.report.items()})
            manifest["seconds"] = round(time.perf_counter() - started, 3)
            write_json(out_dir / MANIFEST_FILE, manifest)


def _run_steps(steps, model, ctx: BuildContext, manifest: dict, shown: StepProgress) -> ModelWrapper:
    """Run each step with FINN's console output captured into ``build.log``; save its ONNX; time it."""
    log = (ctx.out_dir / "build.log").open("w")
    with log, shown:
        for index, (name, step) in enumerate(steps):
            record: dict[str, Any] = {"name": name}
            manifest["steps"].append(record)
            log.write(f"== {name}\n")
            with shown.step(name) as timing, contextlib.redirect_stdout(io.StringIO()) as captured, \
                    warnings.catch_warnings(record=True) as warned:
                warnings.simplefilter("always")
                try:
                    model = step(model, ctx)
                finally:
                    log.write(captured.getvalue())
                    log.writelines(f"warning: {w.message}\n" for w in warned)
            record["seconds"] = timing["seconds"]
            if name != "vendor_flow":
                onnx_name = f"intermediate/{index:02d}_{name}.onnx"
                saved = getattr(step, "saved_graph", None)  # a check step saves the graph it checked
                (saved(model, ctx) if saved else model).save(str(ctx.out_dir / onnx_name))
                record["onnx"] = onnx_name
    for vendor_step, state in ctx.report["vendor"].items():  # reported even without progress output
        if state["status"] == "skipped":
            shown.print(f"  {vendor_step:<28} skipped: {state['reason']}", always=True)
    return model
