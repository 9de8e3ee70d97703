# SPDX-License-Identifier: BSD-3-Clause
"""``--method dirnet``: DIR-Net's balanced, standardized weights, its sign estimator and RBD on hand-made tensors,
and a digits TFC W1A1 trained with it that exports and builds bit-exactly."""

import pytest
import torch
from torch import nn

from hwq.quant import get_family
from hwq.quant.dirnet import DirNetLinear, representation_distance
from hwq.quant.estimators import EdeBinaryQuant, balance_standardize, ede_schedule, ede_sign


def _sign_input(layer) -> torch.Tensor:
    """What the layer's weight quantizer binarizes (captured at its tensor_quant)."""
    seen = []
    quant = next(m for m in layer.modules() if isinstance(m, EdeBinaryQuant))
    handle = quant.register_forward_pre_hook(lambda module, args: seen.append(args[0].detach()))
    layer.quant_weight()
    handle.remove()
    return seen[0]


@pytest.mark.parametrize("make", [lambda f: f.linear(12, 5, 1), lambda f: f.conv2d(3, 4, 3, 1),
                                  lambda f: f.conv2d(4, 4, 3, 1, groups=4)])
def test_weights_fed_to_the_sign_are_balanced_and_standardized_per_channel(make):
    layer = make(get_family("dirnet"))
    with torch.no_grad():  # channels with very different means and spreads
        w = torch.randn_like(layer.weight.reshape(layer.weight.shape[0], -1))
        w = w * torch.arange(1, w.shape[0] + 1).unsqueeze(1) + 3.0 * torch.arange(w.shape[0]).unsqueeze(1)
        layer.weight.copy_(w.reshape(layer.weight.shape))
    fed = _sign_input(layer).reshape(layer.weight.shape[0], -1)
    assert torch.allclose(fed.mean(1), torch.zeros(fed.shape[0]), atol=1e-5)
    assert torch.allclose(fed.std(1), torch.ones(fed.shape[0]), atol=1e-5)
    assert torch.equal(layer.quant_weight().value.reshape(fed.shape).sign(), torch.where(fed >= 0, 1.0, -1.0))


def test_binary_weight_scale_is_the_power_of_two_of_mean_abs_per_channel():
    layer = get_family("dirnet").linear(16, 3, 1)
    scale = layer.quant_weight().scale.flatten()
    mean_abs = balance_standardize(layer.weight).abs().mean(1)
    assert torch.equal(scale, torch.pow(2.0, torch.round(torch.log2(mean_abs))))
    classifier = get_family("dirnet").classifier(16, 3, 1)
    assert classifier.quant_weight().scale.numel() == 1  # FINN's label selection absorbs one positive number


def test_schedule_of_t_and_k():
    assert ede_schedule(0.0) == pytest.approx((0.1, 10.0))
    assert ede_schedule(0.5) == pytest.approx((1.0, 1.0))
    assert ede_schedule(1.0) == pytest.approx((10.0, 1.0))
    t, k = ede_schedule(0.25, 1e-3, 10.0)  # log-linear in progress: 10^(-3 + 0.25 * 4)
    assert (t, k) == pytest.approx((1e-2, 100.0))


@pytest.mark.parametrize("progress", [0.0, 1.0])
def test_estimator_gradient_is_k_t_one_minus_tanh_squared(progress):
    x = torch.tensor([-2.0, -0.3, 0.0, 0.05, 0.7, 3.0], requires_grad=True)
    g = torch.tensor([1.0, -2.0, 0.5, 1.5, -1.0, 2.0])
    t, k = ede_schedule(progress)
    out = ede_sign(x, t, k)
    out.backward(g)
    assert torch.equal(out.detach(), torch.tensor([-1.0, -1.0, 1.0, 1.0, 1.0, 1.0]))
    expected = g * k * t * (1 - torch.tanh(t * x.detach()) ** 2)
    assert torch.allclose(x.grad, expected)


def test_quantizers_follow_the_training_progress():
    """Every weight and activation quantizer of a dirnet model moves t with the train loop's hwq_on_step."""
    from hwq.models import ModelSpec, build_model
    from hwq.train.hooks import ModelHooks

    model = build_model(ModelSpec(name="tfc", wbits=1, abits=1, quant="dirnet", image_shape=(1, 8, 8),
                                  num_classes=10))
    quants = [m for m in model.modules() if isinstance(m, EdeBinaryQuant)]
    assert len(quants) == 4 + 3  # 4 weight layers, 3 binary activations
    ModelHooks(model)("hwq_on_step", 1.0)
    assert all(q.t == pytest.approx(10.0) and q.k == 1.0 for q in quants)
    layer = get_family("dirnet").act(1, 4)
    (q,) = [m for m in layer.modules() if isinstance(m, EdeBinaryQuant)]
    q.hwq_on_step(0.0)
    x = torch.tensor([[0.2, -1.5, 0.0, 4.0]], requires_grad=True)
    layer(x).sum().backward()
    assert torch.allclose(x.grad, 10.0 * 0.1 * (1 - torch.tanh(0.1 * x.detach()) ** 2))


def test_representation_term_is_zero_for_the_teachers_representations_and_positive_otherwise():
    torch.manual_seed(0)
    own = torch.randn(4, 6)
    assert float(representation_distance(own, own.clone())) == pytest.approx(0.0, abs=1e-7)
    assert float(representation_distance(own, 3.0 * own)) == pytest.approx(0.0, abs=1e-6)
    assert float(representation_distance(own, torch.randn(4, 6))) > 0.1


def test_rbd_loss_of_a_layer_against_its_teacher_layer():
    family = get_family("dirnet")
    student = nn.Sequential(family.linear(6, 4, 1))
    teacher = nn.Sequential(nn.Linear(6, 4, bias=False))
    layer: DirNetLinear = student[0]
    layer.hwq_attach_teacher("0", teacher)
    x = torch.randn(3, 6)
    with torch.no_grad():  # the teacher computes exactly the student's binary layer: no distance
        teacher[0].weight.copy_(layer.quant_weight().value)
    student.train(), teacher.train()
    teacher(x), student(x)
    assert float(layer.hwq_extra_loss()) == pytest.approx(0.0, abs=1e-6)
    with torch.no_grad():
        teacher[0].weight.copy_(torch.randn(4, 6))
    teacher(x), student(x)
    loss = layer.hwq_extra_loss()
    assert float(loss) > 0 and loss.requires_grad
    assert float(layer.hwq_extra_loss()) == 0.0  # the outputs are used once


def test_digits_tfc_w1a1_with_method_dirnet_exports_and_builds_bit_exactly(tmp_path):
    from hwq.dataflow import BuildConfig, run_build
    from hwq.export import run_export
    from hwq.train import TrainConfig, run_train

    run = tmp_path / "dirnet"
    metrics = run_train(TrainConfig(method="dirnet", epochs=2, threads=1), run, progress=False)
    assert metrics["config"]["method"] == "dirnet" and metrics["config"]["quant"] == "dirnet"
    assert metrics["test_acc"] > 0.3
    export = run_export(run)
    assert export["verification"]["passed"] and export["verification"]["max_abs_diff"] == 0.0
    manifest = run_build(run, BuildConfig(board="pynq-z2", out_dir=str(tmp_path / "build"), verify_samples=20),
                         progress=False)
    assert manifest["status"] == "done"
    assert manifest["bit_exact"]["passed"] and manifest["bit_exact"]["n"] == 20
    assert manifest["integer_range"]["passed"]


def test_the_exported_graph_has_the_nodes_of_a_uniform_w1a1_graph(tmp_path):
    """The balance and standardization fold into the weight constants: the same ops, in the same order."""
    from hwq.export.qonnx_export import export_qonnx_model
    from hwq.models import ModelSpec, build_model

    kinds = {}
    for quant in ("uniform", "dirnet"):
        torch.manual_seed(0)
        model = build_model(ModelSpec(name="tfc", wbits=1, abits=1, quant=quant, image_shape=(1, 8, 8),
                                      num_classes=10)).eval()
        graph = export_qonnx_model(model, tmp_path / f"{quant}.onnx")
        kinds[quant] = [node.op_type for node in graph.graph.node]
    assert kinds["dirnet"] == kinds["uniform"] and "BipolarQuant" in kinds["dirnet"]


def test_a_resumed_run_equals_an_uninterrupted_one(tmp_path, train_then_stop):
    """The estimator's t comes from the step's progress alone: a resumed run is the same bits."""
    from hwq.train import TrainConfig, run_train
    from hwq.train.checkpoint import load_checkpoint

    config = TrainConfig(method="dirnet", epochs=2, threads=1, train_subset=300)
    run_train(config, tmp_path / "straight", progress=False)
    train_then_stop(tmp_path / "resumed", config, stop_after=1)
    run_train(config, tmp_path / "resumed", resume=True, progress=False)
    straight, resumed = (load_checkpoint(tmp_path / name / "model.pt") for name in ("straight", "resumed"))
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)
