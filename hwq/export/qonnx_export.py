# SPDX-License-Identifier: BSD-3-Clause
"""The export stage: a trained run -> ``model.onnx`` (QONNX, cleaned up) plus ``export.json``.

The export is verified, not trusted: the QONNX graph is executed with qonnx on held-out test images and its
outputs are compared with the PyTorch model's. A mismatch is a VerificationError, and ``export.json`` still
records what was measured.

Only a finished training is exported (``metrics.json`` complete), unless ``force`` is set, which exports the last
finished epoch (``checkpoint.pt``) and says so in ``export.json``. The graph is written under a temporary name
and takes its place only once verified: ``model.onnx`` exists only when ``export.json`` says it passed. A
failed export keeps its graph as ``model.failed.onnx`` (for inspection) and removes an older ``model.onnx``,
which ``export.json`` no longer vouches for.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from hwq import manifest as records
from hwq._io import read_json, write_atomic, write_json
from hwq.classes import Scores
from hwq.data import Dataset, load_dataset
from hwq.errors import CheckpointError, ConfigError, VerificationError
from hwq.export.float_ties import explain_differences
from hwq.export.scores import qonnx_scores, run_qonnx_graph
from hwq.models.scores import model_scores
from hwq.train.loop import CHECKPOINT_FILE, METRICS_FILE, MODEL_FILE, load_trained_model

ONNX_FILE, EXPORT_FILE = "model.onnx", "export.json"
#: A graph that failed verification (kept to look at), and one being verified (hidden; renamed when done).
FAILED_ONNX_FILE, PENDING_ONNX_FILE = "model.failed.onnx", ".model.unverified.onnx"


@dataclass(frozen=True)
class ExportConfig:
    #: Held-out test images to verify on (the first ``n`` of the test split; fewer if the split is smaller).
    verify_samples: int = 500
    #: Largest allowed |logit difference|; the graphs compute the same integer sums, only float order differs.
    atol: float = 1e-4
    #: Images per qonnx execution (the graph's batch dimension is set to this for verification only).
    batch: int = 100
    #: Export a run whose training did not finish (its last finished epoch, from ``checkpoint.pt``); off, because
    #: a half-trained model is rarely what a build should receive. ``export.json`` records it.
    force: bool = False

    def __post_init__(self) -> None:
        for name in ("verify_samples", "batch"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name}: expected a positive integer, got {value!r}")
        if (isinstance(self.atol, bool) or not isinstance(self.atol, int | float) or not math.isfinite(self.atol)
                or self.atol < 0):
            raise ConfigError(f"atol: expected a finite number >= 0, got {self.atol!r}")
        if not isinstance(self.force, bool):
            raise ConfigError(f"force: expected true or false, got {self.force!r}")


def export_qonnx_model(model: nn.Module, path: str | Path) -> "ModelWrapper":  # noqa: F821
    """Export ``model`` (eval mode, with an ``input_shape`` attribute) to a cleaned-up QONNX file."""
    from brevitas.export import export_qonnx
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.util.cleanup import cleanup_model

    from hwq.export.multithreshold import multithreshold_export, needs_multithreshold

    example = torch.zeros(1, *model.input_shape)

    def write(tmp: Path) -> None:
        # Threshold activations (N2UQ) are swapped for exact MultiThreshold stand-ins during the export only.
        swap = multithreshold_export(model) if needs_multithreshold(model) else contextlib.nullcontext()
        # The TorchScript exporter (dynamo=False) writes MatMul nodes, the form FINN's conversion expects.
        # A module may prepare itself for the export (LQ-Nets' weights: the latent weight holds the quantized one).
        with swap, contextlib.ExitStack() as prepared:
            for module in model.modules():
                if hasattr(module, "hwq_export_context"):
                    prepared.enter_context(module.hwq_export_context())
            export_qonnx(model.cpu().eval(), input_t=example, export_path=str(tmp), dynamo=False)
        cleanup_model(ModelWrapper(str(tmp))).save(str(tmp))

    write_atomic(path, write)
    return ModelWrapper(str(path))


def execute_qonnx(model_wrapper, inputs: np.ndarray, batch: int = 100) -> np.ndarray:
    """Run a batch-1 QONNX graph on many inputs with qonnx's executor, ``batch`` at a time; returns its output."""
    out = model_wrapper.graph.output[0].name
    return run_qonnx_graph(model_wrapper, inputs, [out], batch)[out]


def compare_outputs(reference: Scores | np.ndarray, candidate: Scores | np.ndarray, atol: float) -> dict[str, Any]:
    """Compare two stages' scores: the classes (by the class rule), the integer scores, the float logits.

    With integer scores on both sides (every deployable hwq network) they must be equal, and so must the classes
    they give; the float logits may differ by summation order, up to ``atol``. Without them (a float baseline),
    the classes come from the logits, and a differing class is forgiven only when the reference's top two logits
    are within ``atol`` (a tie that float summation order may break either way).
    """
    reference = reference if isinstance(reference, Scores) else Scores(np.asarray(reference))
    candidate = candidate if isinstance(candidate, Scores) else Scores(np.asarray(candidate))
    diff = np.abs(reference.logits.astype(np.float64) - candidate.logits.astype(np.float64))
    integer = reference.integer is not None and candidate.integer is not None
    if not integer:  # one rule for both sides: the float one
        reference, candidate = Scores(reference.logits), Scores(candidate.logits)
    ref_top, cand_top = reference.classes(), candidate.classes()
    differ = ref_top != cand_top
    if integer:
        genuine = np.flatnonzero(differ | (reference.integer != candidate.integer).any(axis=1))
        forgiven = 0
    else:
        top2 = np.sort(reference.logits, axis=1)[:, -2:]
        tied = (top2[:, 1] - top2[:, 0]) <= atol
        genuine = np.flatnonzero(differ & ~tied)
        forgiven = int(np.sum(differ & tied))
    report = {
        "n": int(len(reference.logits)),
        "class_rule": reference.source,
        "argmax_match": float(np.mean(~differ)),
        "max_abs_diff": float(diff.max()) if diff.size else 0.0,
        "atol": atol,
        "ties_broken_differently": forgiven,
        "first_mismatch": int(genuine[0]) if len(genuine) else None,
        "passed": bool(diff.max() <= atol and len(genuine) == 0) if diff.size else True,
    }
    if integer:
        report["integer_scores_match"] = float(np.mean(~(reference.integer != candidate.integer).any(axis=1)))
    return report


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def export_inputs(run_dir: str | Path) -> dict[str, Path]:
    """The file an export is made from: the finished training's weights (the record's ``inputs.weights``; the flow
    compares it to decide whether the export is up to date)."""
    return {"weights": Path(run_dir) / MODEL_FILE}


def _tool_versions() -> dict[str, str]:
    from importlib.metadata import version

    return {p: version(p) for p in ("torch", "brevitas", "qonnx", "onnx")}


def verify_qonnx(
    onnx_path: str | Path, model: nn.Module, images: torch.Tensor, config: ExportConfig = ExportConfig(),
) -> tuple[dict[str, Any], Scores, Scores]:
    """Execute ``onnx_path`` with qonnx on ``images`` (model inputs) and compare with ``model``.

    Returns the comparison (see :func:`compare_outputs`) and both stages' scores; raising is left to the caller.
    """
    from qonnx.core.modelwrapper import ModelWrapper

    reference = model_scores(model.eval(), images)
    wrapper = ModelWrapper(str(onnx_path))
    candidate, _ = qonnx_scores(wrapper, images.numpy(), config.batch)
    comparison = compare_outputs(reference, candidate, config.atol)
    if not comparison["passed"] and reference.integer is not None and candidate.integer is not None:
        comparison = _forgive_float_ties(comparison, wrapper, model, images, reference, candidate, config)
    return comparison, reference, candidate


def _forgive_float_ties(comparison: dict[str, Any], wrapper, model: nn.Module, images: torch.Tensor,
                        reference: Scores, candidate: Scores, config: ExportConfig) -> dict[str, Any]:
    """Re-run the differing images teacher-forced (:mod:`hwq.export.float_ties`); the comparison passes when
    every difference was a rounding tie broken by float32 order and, ties forced, the scores are PyTorch's."""
    differ = ((reference.integer != candidate.integer).any(axis=1) | (reference.classes() != candidate.classes())
              | (np.abs(reference.logits - candidate.logits) > config.atol).any(axis=1))
    rows = np.flatnonzero(differ)
    ties, forced, same_pass = explain_differences(wrapper, model, images[torch.as_tensor(rows)])
    if forced is not None:
        again = compare_outputs(same_pass, forced, config.atol)
        if not again["passed"]:
            ties.explained = False
            ties.problem = (f"with every tie forced to PyTorch's level, the scores still differ (max |diff| "
                            f"{again['max_abs_diff']:.3g})")
    return {**comparison, "passed": ties.explained, "float_order_ties": {**ties.as_dict(), "images_rerun": len(rows)}}


def run_export(run_dir: str | Path, config: ExportConfig = ExportConfig()) -> dict[str, Any]:
    """Export ``run_dir``'s trained model to ``run_dir/model.onnx`` and verify it; returns ``export.json``.

    >>> report = run_export("runs/demo")            # doctest: +SKIP
    >>> report["verification"]["argmax_match"]       # doctest: +SKIP
    1.0
    """
    run_dir = Path(run_dir)
    training = finished_training(run_dir, config.force)
    pending = run_dir / PENDING_ONNX_FILE
    try:
        report = _export_and_verify(run_dir, config, training, pending)
    finally:
        pending.unlink(missing_ok=True)  # published by now, or an export that failed or was interrupted
    verification = report["verification"]
    if not verification["passed"]:
        raise mismatch_error(run_dir / ONNX_FILE, verification, run_dir / EXPORT_FILE, run_dir / FAILED_ONNX_FILE)
    return report


def _export_and_verify(run_dir: Path, config: ExportConfig, training: dict, pending: Path) -> dict[str, Any]:
    """Export to ``pending``, verify it, then publish it (:func:`_publish`) with its ``export.json``."""
    started = time.perf_counter()
    weights = MODEL_FILE if training["complete"] else CHECKPOINT_FILE
    model, train_config, spec = load_trained_model(run_dir, weights=weights)
    wrapper = export_qonnx_model(model, pending)
    exported = time.perf_counter()

    dataset = load_dataset(train_config.dataset, train_config.data_dir)
    n = min(config.verify_samples, len(dataset.test_x))
    images = Dataset.to_float(dataset.test_x[:n]).reshape(n, *model.input_shape)
    verification, reference, candidate = verify_qonnx(pending, model, images, config)
    labels = dataset.test_y[:n].numpy()
    report = records.start("export", dataclasses.asdict(config), {"weights": run_dir / weights}, _tool_versions())
    report.update({
        "source": {"run": str(run_dir), "weights": weights, "weights_sha256": _sha256(run_dir / weights)},
        "outputs": {"onnx": ONNX_FILE if verification["passed"] else FAILED_ONNX_FILE,
                    "onnx_sha256": _sha256(pending)},
        "training": training,
        "forced": config.force,
        "model_spec": {**spec.__dict__, "image_shape": list(spec.image_shape)},
        "input_shape": [1, *model.input_shape],
        "ops": sorted({node.op_type for node in wrapper.graph.node}),
        "verification": {
            "dataset": dataset.name, "split": "test", "first_index": 0, **verification,
            "qonnx_accuracy": float(np.mean(candidate.classes() == labels)),
            "torch_accuracy": float(np.mean(reference.classes() == labels)),
        },
        "seconds": round(time.perf_counter() - started, 3),
    })
    v = report["verification"]
    report["steps"] = [{"name": "export", "seconds": round(exported - started, 3), "status": "done"},
                       {"name": "verify", "seconds": round(time.perf_counter() - exported, 3),
                        "status": "done" if v["passed"] else "failed"}]
    report["results"] = {k: v[k] for k in ("n", "argmax_match", "integer_scores_match", "max_abs_diff",
                                           "qonnx_accuracy", "torch_accuracy", "passed") if k in v}
    if v["passed"]:
        report["status"] = "done"
    else:
        records.fail(report, None, mismatch_error(run_dir / ONNX_FILE, v, run_dir / EXPORT_FILE,
                                                  run_dir / FAILED_ONNX_FILE))
    _publish(run_dir, pending, report)
    return report


def finished_training(run_dir: Path, force: bool = False) -> dict[str, Any]:
    """``{"complete", "epochs"}`` of the training in ``run_dir``; an unfinished one is an error unless ``force``."""
    if not run_dir.is_dir():
        raise CheckpointError(f"{run_dir}: run directory not found")
    path = run_dir / METRICS_FILE
    if not path.is_file():
        raise CheckpointError(f"{path} not found: {run_dir} holds no trained model (train it with "
                              f"'hwq train --out {run_dir}')")
    metrics = read_json(path, "metrics file")
    if not isinstance(metrics, dict):
        raise CheckpointError(f"{path}: expected the training metrics (a mapping)")
    training = {"complete": metrics.get("complete") is True, "epochs": metrics.get("epochs")}
    settings = metrics.get("config") if isinstance(metrics.get("config"), dict) else {}
    if not training["complete"] and not force:
        raise CheckpointError(
            f"{path}: the training did not finish (epoch {training['epochs']} of {settings.get('epochs', '?')}); "
            f"resume it with 'hwq train --out {run_dir} --resume', or pass --force to export its last finished epoch"
        )
    return training


def _publish(run_dir: Path, pending: Path, report: dict[str, Any]) -> None:
    """Give the verified graph its name, or keep a failed one as ``model.failed.onnx``; then ``export.json``.

    The order keeps ``model.onnx`` and a passing ``export.json`` together even if the process dies in between:
    a failure is recorded before the old ``model.onnx`` goes, a success after the new one is in place.
    """
    if report["verification"]["passed"]:
        os.replace(pending, run_dir / ONNX_FILE)
        (run_dir / FAILED_ONNX_FILE).unlink(missing_ok=True)
        write_json(run_dir / EXPORT_FILE, report)
    else:
        write_json(run_dir / EXPORT_FILE, report)
        (run_dir / ONNX_FILE).unlink(missing_ok=True)
        os.replace(pending, run_dir / FAILED_ONNX_FILE)


def _tie_problem(verification: dict[str, Any]) -> str:
    problem = verification.get("float_order_ties", {}).get("problem")
    return f"; not float-order ties: {problem}" if problem else ""


def mismatch_error(
    onnx_path: Path, verification: dict[str, Any], details: Path, kept_as: Path | None = None,
) -> VerificationError:
    """The one-line error for a failed comparison (``kept_as``: where the failed graph was kept)."""
    where = verification["first_mismatch"]
    return VerificationError(
        f"{onnx_path}: QONNX output differs from PyTorch (max |diff| {verification['max_abs_diff']:.3g}, "
        f"atol {verification['atol']}" + (f"; first differing class at test image {where}" if where is not None
                                          else "") + _tie_problem(verification) + f"); details in {details}"
        + (f", graph kept as {kept_as}" if kept_as is not None else "")
    )
