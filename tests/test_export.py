# SPDX-License-Identifier: BSD-3-Clause
"""Export: the QONNX graph computes what the trained PyTorch model computes, and a planted fault is caught."""

from __future__ import annotations

import json
import shutil

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from hwq.cli import main
from hwq.data import Dataset, load_dataset
from hwq.errors import VerificationError
from hwq.export import ExportConfig, compare_outputs, run_export, verify_qonnx
from hwq.train import load_trained_model


@pytest.fixture(scope="module")
def exported_w1a1(exported_tfc_w1a1):
    return exported_tfc_w1a1, json.loads((exported_tfc_w1a1 / "export.json").read_text())


def test_w1a1_export_is_verified(exported_w1a1):
    run, report = exported_w1a1
    v = report["verification"]
    assert (run / "model.onnx").is_file()
    assert v["n"] == 360 and v["argmax_match"] == 1.0 and v["passed"] is True
    assert v["max_abs_diff"] <= v["atol"]
    assert v["qonnx_accuracy"] == v["torch_accuracy"] >= 0.85
    assert "BipolarQuant" in report["ops"] and "MatMul" in report["ops"]
    assert report["input_shape"] == [1, 64]


def test_w2a2_export_is_verified(digits_tfc_w2a2, tmp_path):
    run = tmp_path / "w2a2"
    shutil.copytree(digits_tfc_w2a2, run)
    report = run_export(run, ExportConfig(verify_samples=200))
    v = report["verification"]
    assert v["n"] == 200 and v["argmax_match"] == 1.0 and v["max_abs_diff"] <= v["atol"]
    # The class rule decides on integer scores, so a tie cannot fall differently in PyTorch and in qonnx.
    assert v["class_rule"] == "integer classifier accumulators" and v["integer_scores_match"] == 1.0
    assert v["torch_accuracy"] == v["qonnx_accuracy"]
    assert "Quant" in report["ops"] and "BipolarQuant" not in report["ops"]


def _flip_weight_signs(onnx_path, out_path) -> str:
    """Plant a fault: negate the first large float initializer (a layer's latent weights)."""
    model = onnx.load(str(onnx_path))
    for init in model.graph.initializer:
        array = numpy_helper.to_array(init)
        if array.ndim == 2 and array.size >= 640:
            init.CopyFrom(numpy_helper.from_array(-array, init.name))
            onnx.save(model, str(out_path))
            return init.name
    raise AssertionError("no weight initializer found")


def test_planted_fault_is_caught(exported_w1a1, tmp_path):
    run, _ = exported_w1a1
    faulty = tmp_path / "faulty.onnx"
    _flip_weight_signs(run / "model.onnx", faulty)
    model, _, _ = load_trained_model(run)
    images = Dataset.to_float(load_dataset("digits").test_x[:50]).reshape(50, -1)
    verification, _, _ = verify_qonnx(faulty, model, images)
    assert verification["passed"] is False and verification["argmax_match"] < 1.0
    assert verification["first_mismatch"] is not None


def test_compare_outputs_forgives_only_ties():
    ref = np.array([[1.0, 1.0, 0.0], [3.0, 1.0, 0.0]])
    tie_broken = np.array([[1.0, 1.00001, 0.0], [3.0, 1.0, 0.0]])
    result = compare_outputs(ref, tie_broken, atol=1e-4)
    assert result["passed"] and result["ties_broken_differently"] == 1 and result["argmax_match"] == 0.5
    wrong = np.array([[1.0, 1.0, 0.0], [1.0, 3.0, 0.0]])
    result = compare_outputs(ref, wrong, atol=1e-4)
    assert not result["passed"] and result["first_mismatch"] == 1


def test_export_mismatch_raises_and_keeps_the_report(digits_tfc_w1a1, tmp_path, monkeypatch):
    """run_export on a graph that disagrees: VerificationError naming the file, export.json still written."""
    import hwq.export.qonnx_export as qe

    run = tmp_path / "run"
    shutil.copytree(digits_tfc_w1a1, run)
    real_export = qe.export_qonnx_model

    def export_then_corrupt(model, path):
        real_export(model, path)
        _flip_weight_signs(path, path)
        from qonnx.core.modelwrapper import ModelWrapper

        return ModelWrapper(str(path))

    monkeypatch.setattr(qe, "export_qonnx_model", export_then_corrupt)
    with pytest.raises(VerificationError, match=r"model\.onnx: QONNX output differs from PyTorch"):
        run_export(run, ExportConfig(verify_samples=100))
    assert json.loads((run / "export.json").read_text())["verification"]["passed"] is False


def test_cli_export(exported_w1a1, capsys):
    run, _ = exported_w1a1
    assert main(["export", str(run), "--verify-samples", "50"]) == 0
    out = capsys.readouterr().out
    assert "argmax match 100.00%" in out and "verified on 50 digits test images" in out


def test_cnv_export_is_verified(tmp_path):
    """CNV (conv, max-pool, flatten) exports and verifies too; untrained weights suffice for equality."""
    from hwq.export import export_qonnx_model
    from hwq.models import ModelSpec, build_model

    torch.manual_seed(0)
    model = build_model(ModelSpec("cnv", 1, 1, image_shape=(3, 32, 32))).eval()
    # Freshly initialised batch norms (mean 0, var 1) put every sign threshold exactly on an integer sum,
    # where float summation order decides the sign; trained statistics do not, so give it some.
    for bn in model.modules():
        if isinstance(bn, torch.nn.BatchNorm2d | torch.nn.BatchNorm1d):
            bn.running_mean.uniform_(-3.0, 3.0).add_(0.25)
            bn.running_var.uniform_(0.5, 4.0)
    export_qonnx_model(model, tmp_path / "cnv.onnx")
    images = torch.rand(4, 3, 32, 32).mul(255).round().div(255)
    verification, _, _ = verify_qonnx(tmp_path / "cnv.onnx", model, images, ExportConfig(batch=4))
    assert verification["passed"] and verification["argmax_match"] == 1.0


# --- only finished, verified artifacts are passed on ---------------------------------------------------------------
def _tiny_run(out, epochs: int = 2, interrupt_at: int | None = None, monkeypatch=None):
    """A small digits run; with ``interrupt_at``, Ctrl-C at the start of that epoch leaves it unfinished."""
    from hwq.errors import Interrupted
    from hwq.models.fc import FC
    from hwq.train import TrainConfig, run_train

    config = TrainConfig(epochs=epochs, threads=1, train_subset=300)
    if interrupt_at is None:
        run_train(config, out, progress=False)
        return out

    def stop(self, epoch, epochs):
        if epoch == interrupt_at:
            raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(FC, "hwq_on_epoch_start", stop, raising=False)
        with pytest.raises(Interrupted):
            run_train(config, out, progress=False)
    return out


def test_export_refuses_an_unfinished_training_unless_forced(tmp_path, monkeypatch, capsys):
    run = _tiny_run(tmp_path / "run", epochs=3, interrupt_at=1, monkeypatch=monkeypatch)
    assert main(["export", str(run), "--verify-samples", "20"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"hwq export: error: {run}/metrics.json: the training did not finish (epoch 1 of 3); resume it "
                   f"with 'hwq train --out {run} --resume', or pass --force to export its last finished epoch")
    assert not (run / "model.onnx").exists() and not (run / "export.json").exists()
    assert main(["export", str(run), "--verify-samples", "20", "--force"]) == 0
    assert "forced: the training stopped after epoch 1" in capsys.readouterr().out
    report = json.loads((run / "export.json").read_text())
    assert report["forced"] is True and report["training"] == {"complete": False, "epochs": 1}
    assert report["source"]["weights"] == "checkpoint.pt" and report["verification"]["passed"] is True


def test_export_of_a_folder_without_training_is_one_line(tmp_path, capsys):
    assert main(["export", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"hwq export: error: {tmp_path}/metrics.json not found: {tmp_path} holds no trained model "
                   f"(train it with 'hwq train --out {tmp_path}')")


def test_a_failed_reexport_leaves_no_model_onnx(tmp_path, monkeypatch):
    """A re-export that fails verification keeps its graph as model.failed.onnx; no model.onnx stays behind."""
    import hwq.export.qonnx_export as qe

    run = _tiny_run(tmp_path / "run")
    report = run_export(run, ExportConfig(verify_samples=30))
    assert report["forced"] is False and report["training"] == {"complete": True, "epochs": 2}
    real_export = qe.export_qonnx_model

    def export_then_corrupt(model, path):
        real_export(model, path)
        _flip_weight_signs(path, path)
        from qonnx.core.modelwrapper import ModelWrapper

        return ModelWrapper(str(path))

    with monkeypatch.context() as patch:
        patch.setattr(qe, "export_qonnx_model", export_then_corrupt)
        with pytest.raises(VerificationError, match=r"graph kept as .*model\.failed\.onnx"):
            run_export(run, ExportConfig(verify_samples=30))
    failed = json.loads((run / "export.json").read_text())
    assert not (run / "model.onnx").exists() and (run / "model.failed.onnx").is_file()
    assert failed["verification"]["passed"] is False and failed["outputs"]["onnx"] == "model.failed.onnx"
    assert [p.name for p in run.iterdir() if "unverified" in p.name] == []
    # a good export afterwards restores model.onnx and drops the failed graph
    run_export(run, ExportConfig(verify_samples=30))
    assert (run / "model.onnx").is_file() and not (run / "model.failed.onnx").exists()


def _nudged(onnx_path, out_path, image: np.ndarray, past_boundary: float) -> str:
    """Move one value before the first hidden activation Quant to ``past_boundary`` steps above the rounding
    boundary over its level (on ``image``): what a float32 summation order does to a value at a tie
    (``past_boundary`` tiny), or a wrong bias does (large). Returns the quantizer's node name."""
    from qonnx.core.modelwrapper import ModelWrapper

    from hwq.export.float_ties import qonnx_activation_quants
    from hwq.export.scores import run_qonnx_graph

    wrapper = ModelWrapper(str(onnx_path))
    quant = qonnx_activation_quants(wrapper)[0]
    x = run_qonnx_graph(wrapper, image[None], [quant.input[0]])[quant.input[0]][0]
    scale, zero = (float(np.asarray(wrapper.get_initializer(quant.input[i])).reshape(-1)[0]) for i in (1, 2))
    level = np.rint(x / scale + zero)
    j = int(np.flatnonzero(level < level.max())[0])              # a value with a level above it
    shift = np.zeros((1, *x.shape), np.float32)
    shift[(0, j)] = (level[j] + 0.5 + past_boundary - zero) * scale - x[j]
    model = onnx.load(str(onnx_path))
    node = next(n for n in model.graph.node if n.name == quant.name)
    model.graph.initializer.append(numpy_helper.from_array(shift, "nudge"))
    at = list(model.graph.node).index(node)
    model.graph.node.insert(at, onnx.helper.make_node("Add", [node.input[0], "nudge"], ["nudged"], name="nudge"))
    node.input[0] = "nudged"
    onnx.save(model, str(out_path))
    return quant.name


@pytest.mark.parametrize("past_boundary, explained", [(1e-5, True), (0.2, False)])
def test_float_order_ties_are_told_from_genuine_differences(digits_tfc_w2a2, tmp_path, past_boundary, explained):
    """A value a hair past a rounding boundary (what float32 summation order does at a tie) is forgiven after
    teacher forcing and counted; the same value a fifth of a step past is a genuine difference, named."""
    model, _, _ = load_trained_model(digits_tfc_w2a2)
    images = Dataset.to_float(load_dataset("digits").test_x[:1]).reshape(1, -1)
    onnx_path = tmp_path / "model.onnx"
    from hwq.export.qonnx_export import export_qonnx_model

    export_qonnx_model(model, onnx_path)
    name = _nudged(onnx_path, tmp_path / "nudged.onnx", images[0].numpy(), past_boundary)
    verification, _, _ = verify_qonnx(tmp_path / "nudged.onnx", model, images)
    ties = verification["float_order_ties"]
    assert verification["passed"] is explained and ties["explained"] is explained
    if explained:
        assert ties["values"] == 1 and ties["images"] == 1 and sum(ties["by_quantizer"].values()) == 1
    else:
        assert f"graph node {name}) differs away from a rounding boundary at image 0" in ties["problem"]
