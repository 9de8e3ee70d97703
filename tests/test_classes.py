# SPDX-License-Identifier: BSD-3-Clause
"""The class rule (hwq.classes): the first arg-max of the classifier's integer scores, at every stage.

The hand-built network below has exact ties in the integer domain (classifier rows 2..9 are all the negation of
row 0, row 1 equals row 0): whatever the float kernels make of them, PyTorch, QONNX, the FINN HW graph and the
emulated board must all pick the lowest tied index.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from hwq.classes import FLOAT, INTEGER, Scores, top_class, top_classes
from hwq.data import Dataset, load_dataset
from hwq.export import ExportConfig, compare_outputs, run_export, verify_qonnx
from hwq.harness.protocol import Results
from hwq.models import ModelSpec, build_model
from hwq.models.scores import model_scores
from hwq.train import load_trained_model
from hwq.train.loop import call_hooks

N_IMAGES = 100


def test_top_classes_take_the_lowest_index_of_a_tie():
    assert top_classes([[1, 5, 5, 0], [2, 2, 2, 2], [0, 0, 1, 1]]).tolist() == [1, 0, 2]
    assert top_class([-3, -1, -1]) == 1
    assert Results((0.0, 1.0, 1.0)).top1 == 1  # the host's reading of a device's score vector


def _tied_classifier(run) -> None:
    """Rewrite a TFC run's classifier so that rows 1 = 0 and rows 2..9 = -row 0: exact integer ties."""
    state = torch.load(run / "model.pt", weights_only=True)
    key = next(k for k, v in state.items() if k.endswith("weight") and v.shape[0] == 10)
    state[key][1] = state[key][0]
    state[key][2:] = -state[key][0]
    torch.save(state, run / "model.pt")


@pytest.fixture(scope="module")
def tied_run(digits_tfc_w2a2, tmp_path_factory):
    run = tmp_path_factory.mktemp("tied") / "tfc-w2a2-tied"
    shutil.copytree(digits_tfc_w2a2, run)
    _tied_classifier(run)
    run_export(run, ExportConfig(verify_samples=N_IMAGES))
    return run


@pytest.fixture(scope="module")
def tied_inputs():
    test_x = load_dataset("digits").test_x[:N_IMAGES]
    return test_x, Dataset.to_float(test_x).reshape(N_IMAGES, -1)


def _expected_tied_classes(scores: Scores) -> np.ndarray:
    """Where class 0 leads or all ten tie (a zero score), class 0; else rows 2..9 tie, class 2."""
    return np.where(scores.integer[:, 0] >= scores.integer[:, 2], 0, 2)


def test_pytorch_scores_are_integers_with_exact_ties(tied_run, tied_inputs):
    model, _, _ = load_trained_model(tied_run)
    scores = model_scores(model, tied_inputs[1])
    assert scores.source == INTEGER
    assert (scores.integer[:, 0] == scores.integer[:, 1]).all()
    assert (scores.integer[:, 2:] == scores.integer[:, 2:3]).all()
    classes = scores.classes()
    assert set(classes.tolist()) <= {0, 2} and len(set(classes.tolist())) == 2
    np.testing.assert_array_equal(classes, _expected_tied_classes(scores))


def test_every_stage_breaks_a_tie_alike(tied_run, tied_inputs, tmp_path):
    from hwq.dataflow import BuildConfig, run_build
    from hwq.device import BuildModel

    run = tmp_path / "run"
    shutil.copytree(tied_run, run)
    images, inputs = tied_inputs
    model, _, _ = load_trained_model(run)
    expected = model_scores(model, inputs).classes()

    report = json.loads((run / "export.json").read_text())["verification"]
    assert report["class_rule"] == INTEGER and report["argmax_match"] == 1.0
    assert report["integer_scores_match"] == 1.0 and report["torch_accuracy"] == report["qonnx_accuracy"]

    manifest = run_build(run, BuildConfig(board="pynq-z2", verify_samples=N_IMAGES), progress=False)
    assert manifest["bit_exact"]["class_rule"] == INTEGER and manifest["bit_exact"]["classes_match"] == 1.0
    assert manifest["bit_exact"]["ties_broken_differently"] == 0

    board = BuildModel.from_build_dir(run / "build-pynq-z2")
    assert board.executor == "numpy", board.executor_note
    emulated = [board.classify(board.to_device_bytes(image)) for image in images.numpy()]
    np.testing.assert_array_equal(emulated, expected)
    board.executor = "qonnx"            # qonnx's execution of the HW graph breaks the ties alike
    np.testing.assert_array_equal([board.classify(board.to_device_bytes(image)) for image in images.numpy()],
                                  expected)


def test_export_check_gives_the_same_classes_at_any_thread_count_and_batch_order(tied_run, tied_inputs):
    model, _, _ = load_trained_model(tied_run)
    inputs = tied_inputs[1]
    before = torch.get_num_threads()
    classes = {}
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            verification, reference, candidate = verify_qonnx(tied_run / "model.onnx", model, inputs)
            assert verification["passed"] and verification["argmax_match"] == 1.0
            classes[threads] = (reference.classes(), candidate.classes())
        _, reference, candidate = verify_qonnx(tied_run / "model.onnx", model, inputs.flip(0))
        classes["reversed"] = (reference.classes()[::-1], candidate.classes()[::-1])
    finally:
        torch.set_num_threads(before)
    first = classes[1][0]
    for torch_classes, qonnx_classes in classes.values():
        np.testing.assert_array_equal(torch_classes, first)
        np.testing.assert_array_equal(qonnx_classes, first)


def test_integer_scores_must_match_not_only_the_classes():
    logits = np.array([[3.0, 1.0], [0.0, 2.0]])
    same = compare_outputs(Scores(logits, np.array([[3, 1], [0, 2]])), Scores(logits, np.array([[3, 1], [0, 2]])),
                           atol=1e-4)
    assert same["passed"] and same["integer_scores_match"] == 1.0 and same["class_rule"] == INTEGER
    # Same classes, different integers in row 1: a real difference, not a rounding one.
    other = compare_outputs(Scores(logits, np.array([[3, 1], [0, 2]])), Scores(logits, np.array([[3, 1], [0, 3]])),
                            atol=1e-4)
    assert not other["passed"] and other["first_mismatch"] == 1 and other["argmax_match"] == 1.0


def _digits_model(name="tfc", quant="uniform", wbits=2, abits=2, shape=(1, 8, 8)):
    torch.manual_seed(0)
    return build_model(ModelSpec(name, wbits, abits, quant=quant, image_shape=shape)).eval()


def test_a_negative_final_scale_reverses_the_integer_ranking():
    model = _digits_model()
    inputs = torch.rand(32, 64)
    positive = model_scores(model, inputs)
    with torch.no_grad():
        model.features[-1].weight.fill_(-1.0)  # the TensorNorm
    negative = model_scores(model, inputs)
    np.testing.assert_array_equal(negative.integer, -positive.integer)
    untied = np.sort(negative.integer, 1)[:, -1] > np.sort(negative.integer, 1)[:, -2]
    np.testing.assert_array_equal(negative.classes()[untied], negative.logits.argmax(1)[untied])


def test_networks_without_integer_scores_fall_back_to_the_logits():
    assert model_scores(_digits_model(quant="float"), torch.rand(4, 64)).source == FLOAT
    # ResNet-20's classifier reads an average pool, which is not on an activation grid.
    resnet = _digits_model("resnet20", wbits=1, abits=1, shape=(3, 32, 32))
    assert model_scores(resnet, torch.rand(2, 3, 32, 32)).source == FLOAT
    # BiTAT's classifier is a float layer until its phase ends; then it has integer scores.
    bitat = _digits_model(quant="bitat", wbits=1, abits=1)
    assert model_scores(bitat, torch.rand(4, 64)).source == FLOAT
    call_hooks(bitat, "hwq_on_step", 1.0)
    assert model_scores(bitat.eval(), torch.rand(4, 64)).source == INTEGER


def test_mobilenet_and_n2uq_classifiers_have_integer_scores():
    for model in (_digits_model("mobilenet_tiny", wbits=1, abits=1), _digits_model(quant="n2uq")):
        inputs = torch.rand(8, *model.input_shape)
        scores = model_scores(model, inputs)
        assert scores.source == INTEGER
        untied = np.sort(scores.integer, 1)[:, -1] > np.sort(scores.integer, 1)[:, -2]
        np.testing.assert_array_equal(scores.classes()[untied], scores.logits.argmax(1)[untied])


def test_export_report_names_the_rule(exported_tfc_w1a1):
    report = json.loads((exported_tfc_w1a1 / "export.json").read_text())
    assert report["verification"]["class_rule"] == INTEGER


def test_scores_keep_only_the_classifier_tensors_alive():
    """The hooks hold fingerprints of every other module's output, not the tensors: holding them all kept every
    activation of an evaluation batch alive (about 20 GB for the CIFAR-10 reactnet on 1000 images)."""
    from hwq.models.scores import _Recorder
    from hwq.models.tensor_norm import TensorNorm

    model = _digits_model("reactnet_tiny", wbits=1, abits=1).eval()
    recorder = _Recorder(model)
    with torch.no_grad():
        model(torch.rand(4, *model.input_shape))
    recorder.close()
    held = {type(m).__name__ for m, _, out in recorder.calls if isinstance(out, torch.Tensor)}
    assert held and all(isinstance(m, (torch.nn.Linear, TensorNorm))
                        for m, _, out in recorder.calls if isinstance(out, torch.Tensor)), held
    assert model_scores(model, torch.rand(4, *model.input_shape)).source == INTEGER  # the search still succeeds
