# SPDX-License-Identifier: BSD-3-Clause
"""The export stage: a trained run -> ``model.onnx`` (QONNX, cleaned up) plus ``export.json``.

The export is verified, not trusted: the QONNX graph is executed with qonnx on held-out test images and its
outputs are compared with the PyTorch model's. A mismatch is a VerificationError, and ``export.json`` still
records what was measured.
"""

from __future__ import annotations

import contextlib
import hashlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from hwq._io import write_atomic, write_json
from hwq.classes import Scores
from hwq.data import Dataset, load_dataset
from hwq.errors import VerificationError
from hwq.export.scores import qonnx_scores, run_qonnx_graph
from hwq.models.scores import model_scores
from hwq.train.loop import MODEL_FILE, load_trained_model

ONNX_FILE, EXPORT_FILE = "model.onnx", "export.json"


@dataclass(frozen=True)
class ExportConfig:
    #: Held-out test images to verify on (the first ``n`` of the test split; fewer if the split is smaller).
    verify_samples: int = 500
    #: Largest allowed |logit difference|; the graphs compute the same integer sums, only float order differs.
    atol: float = 1e-4
    #: Images per qonnx execution (the graph's batch dimension is set to this for verification only).
    batch: int = 100


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
        with swap:
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


def verify_qonnx(
    onnx_path: str | Path, model: nn.Module, images: torch.Tensor, config: ExportConfig = ExportConfig(),
) -> tuple[dict[str, Any], Scores, Scores]:
    """Execute ``onnx_path`` with qonnx on ``images`` (model inputs) and compare with ``model``.

    Returns the comparison (see :func:`compare_outputs`) and both stages' scores; raising is left to the caller.
    """
    from qonnx.core.modelwrapper import ModelWrapper

    reference = model_scores(model.eval(), images)
    candidate, _ = qonnx_scores(ModelWrapper(str(onnx_path)), images.numpy(), config.batch)
    return compare_outputs(reference, candidate, config.atol), reference, candidate


def run_export(run_dir: str | Path, config: ExportConfig = ExportConfig()) -> dict[str, Any]:
    """Export ``run_dir``'s trained model to ``run_dir/model.onnx`` and verify it; returns ``export.json``.

    >>> report = run_export("runs/demo")            # doctest: +SKIP
    >>> report["verification"]["argmax_match"]       # doctest: +SKIP
    1.0
    """
    run_dir = Path(run_dir)
    started = time.perf_counter()
    model, train_config, spec = load_trained_model(run_dir)
    onnx_path = run_dir / ONNX_FILE
    wrapper = export_qonnx_model(model, onnx_path)

    dataset = load_dataset(train_config.dataset, train_config.data_dir)
    n = min(config.verify_samples, len(dataset.test_x))
    images = Dataset.to_float(dataset.test_x[:n]).reshape(n, *model.input_shape)
    verification, reference, candidate = verify_qonnx(onnx_path, model, images, config)
    labels = dataset.test_y[:n].numpy()
    report = {
        "stage": "export",
        "source": {"run": str(run_dir), "weights": MODEL_FILE, "weights_sha256": _sha256(run_dir / MODEL_FILE)},
        "outputs": {"onnx": ONNX_FILE, "onnx_sha256": _sha256(onnx_path)},
        "model_spec": {**spec.__dict__, "image_shape": list(spec.image_shape)},
        "input_shape": [1, *model.input_shape],
        "ops": sorted({node.op_type for node in wrapper.graph.node}),
        "verification": {
            "dataset": dataset.name, "split": "test", "first_index": 0, **verification,
            "qonnx_accuracy": float(np.mean(candidate.classes() == labels)),
            "torch_accuracy": float(np.mean(reference.classes() == labels)),
        },
        "seconds": round(time.perf_counter() - started, 3),
    }
    write_json(run_dir / EXPORT_FILE, report)
    if not verification["passed"]:
        raise mismatch_error(onnx_path, verification, run_dir / EXPORT_FILE)
    return report


def mismatch_error(onnx_path: Path, verification: dict[str, Any], details: Path) -> VerificationError:
    """The one-line error for a failed comparison."""
    where = verification["first_mismatch"]
    return VerificationError(
        f"{onnx_path}: QONNX output differs from PyTorch (max |diff| {verification['max_abs_diff']:.3g}, "
        f"atol {verification['atol']}" + (f"; first differing class at test image {where}" if where is not None
                                          else "") + f"); details in {details}"
    )
