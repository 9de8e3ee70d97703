# SPDX-License-Identifier: BSD-3-Clause
"""``hwq quantize``: Attention Round and round-to-nearest post-training quantization of a float run, the lossy
coding length bit allocation, and the run they write, which exports and builds like a trained one."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from hwq.errors import HwqError
from hwq.ptq import QuantizeConfig, run_quantize
from hwq.ptq.attention_round import (
    RoundingProblem, attention_round_integers, gaussian_assignment, hard_weight, nearest_integers,
)
from hwq.ptq.calibrate import fake_quantize, set_act_scale
from hwq.ptq.coding_length import allocate_bits, coding_length
from hwq.train import TrainConfig, run_train

#: Few Attention Round steps: enough on digits' 64x64 layers for the tests, a few seconds per run.
FAST = dict(iterations=150, calibration=512)


@pytest.fixture(scope="module")
def digits_tfc_float(tmp_path_factory):
    """A float digits TFC (ReLU), 5 epochs: about 96 % on the test set."""
    out = tmp_path_factory.mktemp("runs") / "tfc-float-digits"
    run_train(TrainConfig(model="tfc", dataset="digits", quant="float", epochs=5, threads=1), out, progress=False)
    return out


def test_the_assignment_is_a_distribution_that_decays_with_distance():
    grid = torch.arange(-7.0, 8.0)
    latent = torch.tensor([-6.3, -0.5, 0.2, 3.7, 7.0])
    p = gaussian_assignment(latent, grid, sigma=1.5)
    assert torch.allclose(p.sum(-1), torch.ones(len(latent)))
    distance = (latent.unsqueeze(-1) - grid).abs()
    for row in range(len(latent)):
        order = torch.argsort(distance[row])
        assert torch.all(p[row][order][1:] <= p[row][order][:-1] + 1e-7)  # farther never more probable
        assert (p[row] > 0).all()  # every grid value may be chosen


def test_a_vanishing_sigma_is_nearest_rounding():
    grid = torch.arange(-1.0, 2.0)
    latent = torch.linspace(-2.0, 2.0, 41) + 0.013  # no ties
    p = gaussian_assignment(latent, grid, sigma=1e-3)
    assert torch.equal(grid[p.argmax(-1)], torch.clamp(torch.round(latent), -1, 1))
    assert torch.equal(hard_weight(latent, grid), torch.clamp(torch.round(latent), -1, 1))


def _layer_problem(levels: int) -> RoundingProblem:
    generator = torch.Generator().manual_seed(3)
    mixing = torch.randn(32, 32, generator=generator)
    inputs = torch.relu(torch.randn(512, 32, generator=generator) @ mixing)  # correlated, as activations are
    weight = torch.randn(16, 32, generator=generator) * 0.1
    scale = float(weight.abs().max()) / levels
    return RoundingProblem(weight=weight, scale=scale, grid=torch.arange(-levels, levels + 1.0),
                           forward=lambda x, w: F.linear(x, w), inputs=inputs, targets=F.linear(inputs, weight),
                           channel_weight=torch.ones(16))


@pytest.mark.parametrize("levels", [1, 7])
def test_attention_round_reconstructs_a_layer_better_than_nearest(levels):
    problem = _layer_problem(levels)
    nearest = nearest_integers(problem)
    chosen = attention_round_integers(problem, iterations=300, lr=0.01, sigma_start=1.0, sigma_end=0.05,
                                      batch_size=256, seed=0)
    assert set(chosen.unique().tolist()) <= set(problem.grid.tolist())
    with torch.no_grad():
        assert float(problem.error(chosen)) < 0.8 * float(problem.error(nearest))


def test_the_activation_scale_set_is_the_one_brevitas_uses():
    from hwq.models import ModelSpec, build_model

    model = build_model(ModelSpec("tfc", 4, 3, image_shape=(1, 8, 8), options={"act_signed": False}))
    act = model.features[4]
    set_act_scale(act, 0.37)
    x = torch.randn(200, 64) * 2
    assert torch.allclose(act(x), fake_quantize(x, 0.37, 3, signed=False))
    assert float(act(x).detach().min()) == 0.0  # the unsigned grid: a quantized ReLU


def test_the_coding_length_allocation_gives_more_bits_to_the_richer_layer():
    generator = torch.Generator().manual_seed(0)
    rich = torch.randn(32, 32, generator=generator)                                       # full rank
    poor = torch.randn(32, 2, generator=generator) @ torch.randn(2, 32, generator=generator)  # rank 2
    assert coding_length(rich) > 2 * coding_length(poor)
    bits = allocate_bits({"poor": poor, "rich": rich}, budget_bits=4.0)
    assert bits["rich"] > bits["poor"]
    assert (bits["rich"] + bits["poor"]) / 2 <= 4.0
    assert allocate_bits({"a": rich, "b": rich.clone()}, budget_bits=3.0) == {"a": 3, "b": 3}


@pytest.mark.parametrize("settings,message", [
    (dict(method="round"), "--method 'round': unknown"),
    (dict(wbits=1), "--wbits 1: post-training quantization supports 2..8"),
    (dict(abits=9), "--abits 9"),
    (dict(precision={"features.2": 1}), "--precision.features.2 1"),
    (dict(bit_allocation="lossy-coding"), "--bit-allocation lossy-coding needs --budget-bits"),
    (dict(budget_bits=3.0), "--budget-bits is the budget of --bit-allocation lossy-coding"),
    (dict(calibration=0), "--calibration 0"),
])
def test_bad_settings_are_one_line_errors(settings, message):
    with pytest.raises(HwqError, match="^" + message.replace("(", r"\(").replace(".", r"\.")):
        QuantizeConfig(**settings)


def test_bad_runs_are_one_line_errors(tmp_path, digits_tfc_float):
    with pytest.raises(HwqError, match="run directory not found"):
        run_quantize(tmp_path / "missing", QuantizeConfig(), tmp_path / "out")
    quantized = tmp_path / "ptq"
    run_quantize(digits_tfc_float, QuantizeConfig(method="nearest", wbits=3, abits=3, calibration=64), quantized)
    with pytest.raises(HwqError, match="is a 'uniform' run; hwq quantize takes a float run"):
        run_quantize(quantized, QuantizeConfig(), tmp_path / "out")
    with pytest.raises(HwqError, match="already holds a run"):
        run_quantize(digits_tfc_float, QuantizeConfig(method="nearest", calibration=64), quantized)


def test_a_quantization_is_repeatable(tmp_path, digits_tfc_float):
    config = QuantizeConfig(wbits=3, abits=3, iterations=20, calibration=64)
    first = run_quantize(digits_tfc_float, config, tmp_path / "a")
    again = run_quantize(digits_tfc_float, config, tmp_path / "b")
    assert first["outputs"]["model_sha256"] == again["outputs"]["model_sha256"]
    assert first["inputs"]["float_model"]["sha256"] == first["ptq"]["source_model_sha256"]


def test_a_w2a2_attention_round_run_beats_nearest_and_exports_and_builds_bit_exactly(tmp_path, digits_tfc_float):
    from hwq.dataflow import BuildConfig, run_build
    from hwq.export import run_export

    runs = {}
    for method in ("nearest", "attention-round"):
        runs[method] = run_quantize(digits_tfc_float, QuantizeConfig(method=method, wbits=2, abits=2, **FAST),
                                    tmp_path / method)
    ptq = runs["attention-round"]["ptq"]
    assert ptq["calibration_images"] == 512 and ptq["source_test_acc"] > 0.9
    weights = [layer for layer in ptq["layers"] if layer["role"] == "weight"]
    assert [layer["bits"] for layer in weights] == [2, 2, 2, 2]
    assert all(layer["output_mse"] < layer["nearest_output_mse"] for layer in weights)
    assert runs["attention-round"]["test_acc"] > 0.8
    metrics = json.loads((tmp_path / "attention-round" / "metrics.json").read_text())
    assert metrics["complete"] and metrics["config"]["quant"] == "uniform"
    assert metrics["model_spec"]["options"]["act_signed"] is False  # the float ReLU became the unsigned grid
    report = run_export(tmp_path / "attention-round")
    assert report["verification"]["passed"] and report["verification"]["integer_scores_match"] in (True, None)
    assert report["verification"]["qonnx_accuracy"] == pytest.approx(runs["attention-round"]["test_acc"])
    manifest = run_build(tmp_path / "attention-round", BuildConfig(board="pynq-z2", verify_samples=20), progress=False)
    assert manifest["status"] == "done"
    assert manifest["bit_exact"]["passed"] and manifest["bit_exact"]["n"] == 20
    assert manifest["integer_range"]["passed"]


@pytest.mark.slow
@pytest.mark.parametrize("bits", [4, 3])
def test_attention_round_runs_build_with_finn_bit_exactly(tmp_path, digits_tfc_float, bits):
    from hwq.dataflow import BuildConfig, run_build
    from hwq.export import run_export

    run = tmp_path / f"ar-w{bits}a{bits}"
    run_quantize(digits_tfc_float, QuantizeConfig(wbits=bits, abits=bits, **FAST), run)
    assert run_export(run)["verification"]["passed"]
    manifest = run_build(run, BuildConfig(board="pynq-z2", verify_samples=20), progress=False)
    assert manifest["status"] == "done"
    assert manifest["bit_exact"]["passed"] and manifest["bit_exact"]["n"] == 20
    assert manifest["integer_range"]["passed"]


def test_the_cli_quantizes_with_the_lossy_coding_allocation(tmp_path, digits_tfc_float, capsys):
    from hwq.cli import main

    out = tmp_path / "lossy"
    assert main(["quantize", str(digits_tfc_float), "--method", "nearest", "--bit-allocation", "lossy-coding",
                 "--budget-bits", "3.5", "--abits", "4", "--calibration", "128", "--out", str(out)]) == 0
    assert "weights at an average of 3.5 bits" in capsys.readouterr().out
    metrics = json.loads((out / "metrics.json").read_text())
    weights = [layer for layer in metrics["ptq"]["layers"] if layer["role"] == "weight"]
    sizes = [layer["weights"] for layer in weights]
    average = sum(layer["bits"] * n for layer, n in zip(weights, sizes)) / sum(sizes)
    assert 3.0 <= average <= 3.5
    assert metrics["config"]["precision"] == {layer["name"]: layer["bits"] for layer in weights}
    assert main(["quantize", str(digits_tfc_float), "--wbits", "1", "--out", str(tmp_path / "x")]) == 2


def test_a_float_padding_the_quantized_model_cannot_hold_is_an_error(tmp_path):
    """A float MobileNet made with the default 1-bit --abits pads its depthwise convolutions with -1; its quantized
    counterpart pads with 0, so the float weights would meet other inputs at the borders."""
    float_run = tmp_path / "mobilenet-float"
    run_train(TrainConfig(model="mobilenet_tiny", dataset="digits", quant="float", epochs=1, threads=1), float_run,
              progress=False)
    with pytest.raises(HwqError, match=r"pads features\.4 with -1, the quantized one with 0; train the float run "
                                       r"with --option pad_value=0"):
        run_quantize(float_run, QuantizeConfig(method="nearest", calibration=32), tmp_path / "out")
