# SPDX-License-Identifier: BSD-3-Clause
"""``--method adder``: AdderNet's layer, gradients and adaptive scaling on hand-made tensors; quantized layers on
their input's grid; a digits TFC's export."""

import math
import re

import pytest
import torch
from brevitas.quant_tensor import IntQuantTensor

from hwq.errors import ConfigError
from hwq.quant import get_family
from hwq.quant.adder import AdderConv2d, AdderFunction, AdderLinear, adder_distance


def _on_grid(values: torch.Tensor, scale: float, bits: int = 8) -> IntQuantTensor:
    """A QuantTensor as the adder family's activation quantizer hands it on."""
    return IntQuantTensor(values, torch.tensor(scale), torch.tensor(0.0), torch.tensor(float(bits)), signed=True,
                          training=False)


def test_output_is_minus_the_l1_distance_exactly():
    x = torch.tensor([[1.0, -2.0, 0.5], [0.0, 0.0, 0.0]])
    w = torch.tensor([[1.0, -2.0, 0.5], [2.0, 1.0, -1.0]])
    expected = torch.tensor([[0.0, -(1 + 3 + 1.5)], [-3.5, -4.0]])
    assert torch.equal(adder_distance(x, w), expected)
    assert torch.equal(AdderFunction.apply(x, w, 0.2), expected)


def test_gradients_are_addernets_full_precision_and_hardtanh_ones():
    """dL/dw = sum_n (x - w) g scaled to L2 norm eta*sqrt(k); dL/dx = sum_o HT(w - x) g."""
    x = torch.tensor([[3.0, -0.5], [0.25, 1.0]], requires_grad=True)
    w = torch.tensor([[0.5, 0.5], [-1.0, 2.0], [0.0, 0.0]], requires_grad=True)
    g = torch.tensor([[1.0, -2.0, 0.5], [0.5, 1.0, -1.0]])
    eta = 0.2
    AdderFunction.apply(x, w, eta).backward(g)

    raw_w = torch.zeros(3, 2)
    grad_x = torch.zeros(2, 2)
    for n in range(2):
        for o in range(3):
            raw_w[o] += (x[n] - w[o]).detach() * g[n, o]
            grad_x[n] += torch.clamp(w[o] - x[n], -1, 1).detach() * g[n, o]
    expected_w = raw_w * eta * math.sqrt(6) / raw_w.norm()
    assert torch.allclose(w.grad, expected_w, atol=1e-6)
    assert torch.allclose(w.grad.norm(), torch.tensor(eta * math.sqrt(6)))
    assert torch.allclose(x.grad, grad_x, atol=1e-6)
    # The sign gradient of |x - w| (what autograd would give) differs: the full-precision one is not signSGD.
    assert not torch.allclose(x.grad, -torch.sign(x.detach().unsqueeze(1) - w.detach()).mul(g.unsqueeze(-1)).sum(1))


@pytest.mark.parametrize("bits", [2, 4])
def test_quantized_layer_is_the_integer_distance_times_the_input_scale(bits):
    torch.manual_seed(0)
    scale = 0.125
    layer = AdderLinear(6, 4, bits=bits, eta=0.2)
    x_int = torch.randint(-2 ** (bits - 1), 2 ** (bits - 1), (5, 6)).float()
    y = layer(_on_grid(x_int * scale, scale, bits))
    qmax = 2 ** (bits - 1) - 1
    w_int = torch.clamp(torch.round(layer.weight.detach() / scale), -qmax, qmax)
    integer = -(x_int.unsqueeze(1) - w_int.unsqueeze(0)).abs().sum(-1)  # computed in integers
    assert torch.equal(y, integer * scale)
    assert w_int.abs().max() <= qmax


def test_weight_gradient_passes_the_grid_straight_through():
    layer = AdderLinear(2, 1, bits=2, eta=1.0)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[5.0, -0.3]]))  # 5.0 lies outside the 2-bit grid [-1, 1] * 1.0
    layer(_on_grid(torch.tensor([[1.0, 0.0]]), 1.0, 2)).sum().backward()
    # x - w_q = (1 - 1, 0 - 0) -> 0 for both; a second input pulls the clamped weight: x = -1 -> -2
    assert torch.equal(layer.weight.grad, torch.zeros(1, 2))
    layer.weight.grad = None
    layer(_on_grid(torch.tensor([[-1.0, 1.0]]), 1.0, 2)).sum().backward()
    assert layer.weight.grad[0, 0] < 0 < layer.weight.grad[0, 1]


def test_conv_layer_equals_the_distance_of_each_patch():
    torch.manual_seed(2)
    layer = AdderConv2d(2, 3, 3, bits=4, eta=0.2, padding=1)
    x = torch.randint(-8, 8, (2, 2, 4, 5)).float() * 0.25
    y = layer(_on_grid(x, 0.25, 4))
    w = layer.quant_weight(torch.tensor(0.25)).detach().reshape(3, 2, 3, 3)
    padded = torch.nn.functional.pad(x, (1, 1, 1, 1))
    for n, o, i, j in [(0, 0, 0, 0), (1, 2, 3, 4), (0, 1, 2, 1)]:
        assert torch.equal(y[n, o, i, j], -(padded[n, :, i:i + 3, j:j + 3] - w[o]).abs().sum())


def test_conv_layer_exports_the_same_values_without_im2col():
    """The exported form (patches by a one-hot convolution) equals the training form exactly."""
    torch.manual_seed(3)
    layer = AdderConv2d(3, 4, 3, bits=4, eta=0.2, stride=2, padding=1)
    x = torch.randint(-8, 8, (2, 3, 7, 6)).float() * 0.5
    assert torch.equal(layer._exported(x, torch.tensor(0.5)), layer(_on_grid(x, 0.5, 4)))


def test_family_keeps_first_layer_and_classifier_multiplying():
    family = get_family("adder")
    first, second, last = family.linear(8, 4, 4), family.linear(4, 4, 4), family.classifier(4, 2, 4)
    assert not isinstance(first, AdderLinear) and isinstance(second, AdderLinear)
    assert not isinstance(last, AdderLinear)
    assert isinstance(get_family("adder", {"adder_first": True}).linear(8, 4, 4), AdderLinear)


def test_adder_layer_needs_a_quantized_input():
    with pytest.raises(ConfigError, match="activation quantizer"):
        AdderLinear(3, 2, bits=4, eta=0.2)(torch.zeros(1, 3))


def test_binary_bits_are_a_config_error():
    from hwq.train import TrainConfig

    with pytest.raises(ConfigError, match="--wbits 1 .*'adder'"):
        get_family("adder").check_bits(1, 4)
    config = TrainConfig(method="adder", wbits=4, abits=4, dropout=0.0, threads=1)
    assert config.quant == "adder" and config.method == "adder"


def test_dropout_is_a_config_error_naming_the_field():
    from hwq.train import TrainConfig

    with pytest.raises(ConfigError, match=r"^dropout: --method adder trains without dropout .*give --dropout 0"):
        TrainConfig(method="adder", wbits=4, abits=4, threads=1)


@pytest.fixture(scope="module")
def adder_run(tmp_path_factory):
    """A digits TFC at W4A4 trained 2 epochs with --method adder and exported: (run folder, export.json)."""
    from hwq.export import run_export
    from hwq.train import TrainConfig, run_train

    config = TrainConfig(method="adder", wbits=4, abits=4, epochs=2, lr=0.01, dropout=0.0, threads=1)
    run = tmp_path_factory.mktemp("adder") / "adder"
    metrics = run_train(config, run, progress=False)
    assert metrics["config"]["method"] == "adder" and metrics["config"]["quant"] == "adder"
    assert metrics["test_acc"] > 0.5
    return run, run_export(run)


def test_digits_tfc_w4a4_with_method_adder_exports_bit_exactly(adder_run):
    _, report = adder_run
    verification = report["verification"]
    assert verification["passed"] and verification["integer_scores_match"] == 1.0
    assert {"Sub", "Abs", "ReduceSum", "Neg"} <= set(report["ops"])


def test_finn_build_of_an_adder_network_is_one_line_naming_its_node(adder_run, capsys):
    from hwq.cli import main

    run, _ = adder_run
    assert main(["build", str(run), "--board", "pynq-z2", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert re.search(r"node 'Sub_0' \(Sub_0 -> Abs_0 -> ReduceSum_0 -> Neg_0: an adder layer.*FINN has no adder "
                     r"MVAU.*--backend open", err)
    assert not any(p.name.startswith("build-") for p in run.iterdir())


def test_open_build_of_an_adder_network_simulates_bit_exactly(adder_run):
    """``hwq build --backend open`` up to the simulation (synthesis for the UP5K takes minutes, and this TFC's
    folding does not fit it): FINN's steps are skipped, the reference is checked against qonnx, the Verilog
    simulated on the test images."""
    import json

    from hwq.cli import main

    run, _ = adder_run
    out = run.parent / "build-open"
    assert main(["build", str(run), "--backend", "open", "--board", "icebreaker", "--stop-step", "simulate",
                 "--out", str(out), "--verify-samples", "20", "--no-progress"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "stopped" and manifest["adder_network"]
    assert [s["name"] for s in manifest["steps"]] == ["read_layers", "check_reference", "generate_verilog",
                                                       "simulate"]
    assert manifest["reference"]["passed"] and manifest["reference"]["n"] == 20
    assert manifest["simulation"]["bit_exact"] and manifest["simulation"]["cycles_per_image"] == 128
    assert [layer["adder"] for layer in manifest["layers"].values()] == [False, True, True, False, False]
    assert "accelerator" not in manifest


def test_adder_tfc_reads_into_open_backend_layers_and_simulates_bit_exactly(adder_run, tmp_path):
    """The exported graph read straight into MVAU / adder MVAU layers (no FINN): their integer classifier scores
    equal the QONNX graph's on all 360 test images, and the generated Verilog gives the same classes under
    back-pressure."""
    import numpy as np
    from qonnx.core.modelwrapper import ModelWrapper

    from hwq.data import Dataset, load_dataset
    from hwq.export.scores import qonnx_scores
    from hwq.rtl.adder_import import read_adder_chain
    from hwq.rtl.generate import generate_verilog
    from hwq.rtl.layers import run_layers
    from hwq.rtl.simulate import simulate

    run, _ = adder_run
    model = ModelWrapper(str(run / "model.onnx"))
    layers = read_adder_chain(model, pe=4, simd=8)
    assert [layer.adder for layer in layers[:-1]] == [False, True, True, False]
    digits = load_dataset("digits", None)
    pixels = digits.test_x.numpy().reshape(len(digits.test_x), -1).astype(np.int64)
    scores, _ = qonnx_scores(model, Dataset.to_float(digits.test_x).reshape(len(pixels), -1).numpy())
    assert scores.integer is not None
    assert np.array_equal(run_layers(layers[:-1], pixels), scores.integer)
    classes = run_layers(layers, pixels)[:, 0]
    assert np.array_equal(classes, scores.classes())
    design = generate_verilog(layers, tmp_path / "rtl", top="adder_tfc")
    result = simulate(design, pixels[:8], classes[:8, None], tmp_path / "sim", p_gap=0.2, p_stall=0.3, seed=0)
    assert result["cycles_per_image"] == design.cycles_bound == 128
