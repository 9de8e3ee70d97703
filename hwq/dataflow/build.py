# SPDX-License-Identifier: BSD-3-Clause
"""The build stage: ``run_build(run_dir, BuildConfig) -> manifest``.

It reads ``<run>/model.onnx`` (from ``hwq export``) and writes ``<run>/build-<board>/``:

- ``intermediate/NN_<step>.onnx``: the model after every step (Netron opens them);
- ``folding.json``: the folding used, in FINN's format (usable as ``--folding``);
- ``codegen/``: generated HLS C++ / Verilog per layer; ``finn/report/``: FINN's own estimate reports;
- ``build.log``: what FINN printed; ``manifest.json``: steps, gates, estimates, vendor-step status.
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
from hwq.boards import load_board
from hwq.dataflow.config import BuildConfig
from hwq.dataflow.errors import ModelFileError
from hwq.dataflow.finn_compat import finn_session
from hwq.dataflow.steps import STEPS, BuildContext
from hwq.dataflow.vendor import vendor_status
from hwq.errors import HwqError

MANIFEST_FILE, ONNX_FILE = "manifest.json", "model.onnx"
QONNX_OPS = ("Quant", "BipolarQuant", "BinaryQuant", "Trunc")


def load_qonnx(path: str | Path) -> ModelWrapper:
    """Load a QONNX file; a missing, corrupt or non-QONNX file is a ModelFileError naming it."""
    import onnx

    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: ONNX file not found (run 'hwq export' first)")
    try:
        proto = onnx.load(str(path))
        onnx.checker.check_model(proto)
    except Exception as err:  # onnx raises DecodeError, ValidationError, ...
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
    return dataset.name, dataset.test_x[:config.verify_samples].numpy()


def _prepare_out_dir(out_dir: Path) -> None:
    if out_dir.exists() and any(out_dir.iterdir()):
        if not (out_dir / MANIFEST_FILE).is_file():
            raise HwqError(f"{out_dir}: exists and is not a build directory (no {MANIFEST_FILE}); "
                           "choose another --out")
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)


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
    steps: list[tuple[str, Callable]] | None = None,
) -> dict[str, Any]:
    """Build ``run_dir``'s exported model into a FINN dataflow accelerator for ``config.board``.

    Returns the manifest (also written to ``<out>/manifest.json``, also when a step fails).

    >>> manifest = run_build("runs/tfc-digits", BuildConfig(board="pynq-z2", target_fps=100_000))  # doctest: +SKIP
    >>> manifest["estimates"]["total"]["estimated_fps"]                                            # doctest: +SKIP
    156250.0
    """
    started = time.perf_counter()
    run_dir = Path(run_dir)
    board = load_board(config.board)
    source = run_dir / ONNX_FILE
    qonnx_model = load_qonnx(source)
    dataset_name, images = _test_images(run_dir, config)
    out_dir = Path(config.out_dir) if config.out_dir else run_dir / f"build-{board.name}"
    _prepare_out_dir(out_dir)
    (out_dir / "intermediate").mkdir()
    manifest: dict[str, Any] = {
        "stage": "build", "status": "running",
        "source": {"run": str(run_dir), "onnx": str(source),
                   "onnx_sha256": hashlib.sha256(source.read_bytes()).hexdigest(), "dataset": dataset_name},
        "board": board.to_dict(), "config": config.to_dict(),
        "tool_versions": {p: version(p) for p in ("finn-plus", "qonnx", "onnx")},
        "steps": [],
    }
    with finn_session(out_dir / "codegen"):
        ctx = BuildContext(config=config, board=board, out_dir=out_dir, finn_cfg=_finn_config(board, out_dir),
                           qonnx_model=qonnx_model, images=images)
        ctx.report["vendor"] = vendor_status(board.shell)
        model = qonnx_model
        try:
            model = _run_steps(steps or STEPS, model, ctx, manifest, progress)
            manifest["status"] = "done"
        except HwqError as err:
            manifest.update(status="failed", error=str(err))
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
    return manifest


def _run_steps(steps, model, ctx: BuildContext, manifest: dict, show: bool) -> ModelWrapper:
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    console = Console(stderr=True, quiet=not show)
    log = (ctx.out_dir / "build.log").open("w")
    with log, Progress(TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                       TimeElapsedColumn(), console=console, transient=True) as bar:
        task = bar.add_task("build", total=len(steps))
        for index, (name, step) in enumerate(steps):
            bar.update(task, description=f"{ctx.board.name}: {name}")
            record: dict[str, Any] = {"name": name}
            manifest["steps"].append(record)
            t0 = time.perf_counter()
            log.write(f"== {name}\n")
            with contextlib.redirect_stdout(io.StringIO()) as captured, warnings.catch_warnings(record=True) as warned:
                warnings.simplefilter("always")
                try:
                    model = step(model, ctx)
                finally:
                    log.write(captured.getvalue())
                    log.writelines(f"warning: {w.message}\n" for w in warned)
            record["seconds"] = round(time.perf_counter() - t0, 3)
            if name != "vendor_flow":
                onnx_name = f"intermediate/{index:02d}_{name}.onnx"
                model.save(str(ctx.out_dir / onnx_name))
                record["onnx"] = onnx_name
            console.print(f"  {name:<28} {record['seconds']:7.2f} s")
            bar.advance(task)
    always = Console(stderr=True)  # skipped vendor steps are reported even without progress output
    for vendor_step, state in ctx.report["vendor"].items():
        if state["status"] == "skipped":
            always.print(f"  {vendor_step:<28} skipped: {state['reason']}", soft_wrap=True, highlight=False)
    return model
