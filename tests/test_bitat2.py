# SPDX-License-Identifier: BSD-3-Clause
"""BiTAT's second design (``--quant bitat``, the default design): the layer-by-layer schedule, V orthonormal and
trained, S trained, frozen codes, the block objective against a teacher, plain binary export."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hwq.data import Dataset, load_dataset
from hwq.errors import ConfigError
from hwq.models import ModelSpec, build_model
from hwq.quant import clip_latent_weights
from hwq.quant.bitat import bitat_layers, check_deployable
from hwq.quant.bitat_second import SecondDesignConv2d, SecondDesignLinear
from hwq.train.loop import call_hooks, make_optimizer
from hwq.train.progressive import LayerPhases

DIGITS_SHAPE = (1, 8, 8)


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def _model(name="tfc", **options):
    torch.manual_seed(0)
    options.setdefault("bitat_aggregate", False)
    return build_model(ModelSpec(name, 1, 1, quant="bitat", image_shape=DIGITS_SHAPE, options=options))


def _steps(model, digits, steps, record=None, lr=0.02):
    """The train loop's inner body with the second design's per-step hook; ``record(model, step)`` after each."""
    from hwq.train import TrainConfig

    optimizer = make_optimizer(model, TrainConfig(lr=lr))
    model.train()
    gen = torch.Generator().manual_seed(0)
    for step in range(steps):
        call_hooks(model, "hwq_on_step", (step + 1) / steps)
        idx = torch.randint(0, len(digits.train_x), (64,), generator=gen)
        logits = model(Dataset.to_float(digits.train_x[idx]))
        loss = torch.nn.functional.cross_entropy(logits, digits.train_y[idx])
        loss = loss + sum(call_hooks(model, "hwq_extra_loss"))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        clip_latent_weights(model)
        call_hooks(model, "hwq_after_step")
        if record is not None:
            record(model, step)


def test_phases_quantize_one_layer_at_a_time_input_side_first():
    plan, n = LayerPhases(warmup=0.1, final=0.2), 5
    for progress in np.linspace(0, 1, 101):
        ts = [plan.t(u, n, progress) for u in range(n)]
        assert ts == sorted(ts, reverse=True)                   # the input side is never behind
        assert sum(0.0 < t < 1.0 for t in ts) <= 1              # one layer in its phase at a time
    assert plan.t(0, n, 0.1) == 0.0 and plan.t(n - 1, n, 0.8) == 1.0   # warm-up all real, final all binary
    assert plan.block_end(2, n, block_size=2) == plan.phase(3, n)[1]
    assert plan.block_end(4, n, block_size=2) == plan.phase(4, n)[1]  # a last, shorter block
    together = LayerPhases(progressive=False, final=0.2)
    assert {together.phase(u, n) for u in range(n)} == {(0.0, 0.8)}
    with pytest.raises(ConfigError, match="bitat_warmup, bitat_final"):
        LayerPhases(warmup=0.5, final=0.5)


def test_the_default_design_is_the_second_and_keeps_k_bit_layers_uniform():
    tfc = _model()
    layers = bitat_layers(tfc)
    assert layers and all(isinstance(m, SecondDesignLinear) for m in layers)
    assert [m.unit_index for m in layers] == list(range(len(layers)))
    assert all(m.transform == "cayley" and m.codes == "importance" for m in layers)  # V trained, codes by S
    react = _model("reactnet_tiny", width=0.25)
    convs = [m for m in react.modules() if isinstance(m, torch.nn.Conv2d)]
    binary = [m for m in convs if isinstance(m, SecondDesignConv2d)]
    assert binary and len(binary) == len(convs) - 1               # the 8-bit stem is an ordinary layer
    assert not isinstance(react.stem[1], SecondDesignConv2d)
    assert not isinstance(react.classifier[0], SecondDesignLinear)  # the k-bit classifier too


def test_schedule_v_orthonormal_s_trained_and_frozen_codes_never_change(digits):
    model = _model(bitat_final=0.2, bitat_max_eigen_dim=512)
    layers = bitat_layers(model)
    n = len(layers)
    steps, seen = 60, {}

    def record(m, step):
        for u, layer in enumerate(layers):
            state = seen.setdefault(u, {"codes_at_freeze": None, "orth": [], "rotation": None, "s": None})
            if 0.0 < layer.t < 1.0 and layer.transform == "cayley":
                state["orth"].append(layer.orthonormality_error())
                state["rotation"] = float(layer.rotation_raw.detach().abs().max())
                state["s"] = layer.importance().detach().clone()
            if layer.frozen:
                codes = torch.sign(layer.weight.detach())
                if state["codes_at_freeze"] is None:
                    state["codes_at_freeze"] = codes
                assert torch.equal(codes, state["codes_at_freeze"]), f"layer {u} changed after it froze"
        ts = [layer.t for layer in layers]
        assert ts == sorted(ts, reverse=True)

    _steps(model, digits, steps, record)
    check_deployable(model)                                       # all binary at the end
    assert all(layer.frozen for layer in layers)
    trained_v = [u for u in range(n) if seen[u]["orth"]]
    assert trained_v, "no layer had a trained basis"
    for u in trained_v:
        assert max(seen[u]["orth"]) < 1e-4                        # V stays orthonormal while trained
        assert seen[u]["rotation"] > 0                            # ... and is trained
        assert float(seen[u]["s"].std()) > 0                      # S from the eigenvalues, not all ones
    assert seen[0]["codes_at_freeze"] is not None


def test_a_frozen_layer_gets_no_gradient_unless_freezing_is_off(digits):
    for freeze in (True, False):
        model = _model(bitat_freeze=freeze, bitat_final=0.5, bitat_max_eigen_dim=0)
        _steps(model, digits, 8)
        first = bitat_layers(model)[0]
        assert first.binary
        assert (first.weight.grad is None) == freeze


def test_the_block_objective_needs_a_teacher_of_the_same_model(digits):
    from hwq.train.loop import attach_teacher

    with pytest.raises(ConfigError, match=r"^model_options.bitat_aggregate: .*give --teacher RUN"):
        attach_teacher(_model(bitat_aggregate=True), None)
    other = build_model(ModelSpec("reactnet_tiny", 32, 32, quant="float", image_shape=DIGITS_SHAPE))
    with pytest.raises(ConfigError, match=r"the teacher has no layer '[\w.]+'"):
        attach_teacher(_model(bitat_aggregate=True), other)


def test_unset_aggregation_follows_the_teacher_and_the_run_records_which(tmp_path):
    """``hwq train --quant bitat`` alone runs (no block objective); with ``--teacher`` the objective is on."""
    import json

    from hwq.train import TrainConfig, run_train
    from hwq.train.loop import attach_teacher

    alone = _model(bitat_aggregate=None)
    attach_teacher(alone, None)
    assert bitat_layers(alone)[0].schedule.aggregate is False
    taught = _model(bitat_aggregate=None)
    attach_teacher(taught, _model(bitat_aggregate=False))
    assert bitat_layers(taught)[0].schedule.aggregate is True
    run = tmp_path / "alone"
    run_train(TrainConfig(model="tfc", dataset="digits", quant="bitat", epochs=1, threads=1), run, progress=False)
    options = json.loads((run / "metrics.json").read_text())["model_spec"]["options"]
    assert options["bitat_design"] == "second" and options["bitat_aggregate"] is False


def test_the_block_objective_pulls_the_block_towards_the_teacher(digits):
    from hwq.train import TrainConfig
    from hwq.train.loop import attach_teacher

    teacher = build_model(ModelSpec("tfc", 32, 32, quant="float", image_shape=DIGITS_SHAPE,
                                    options={"float_act": "hardtanh"})).eval()

    def block_distance(weight):
        """The block objective (divided by its weight) after 12 steps of task loss + weight * objective."""
        model = _model(bitat_aggregate=True, bitat_aggregate_weight=weight, bitat_max_eigen_dim=0)
        model.load_state_dict(teacher.state_dict(), strict=False)
        attach_teacher(model, teacher)
        optimizer = make_optimizer(model, TrainConfig(lr=0.02))
        gen = torch.Generator().manual_seed(0)
        model.train()
        for step in range(12):
            call_hooks(model, "hwq_on_step", (step + 1) / 40)   # 12 of 40 steps: inside the first block
            idx = torch.randint(0, 1000, (64,), generator=gen)
            x = Dataset.to_float(digits.train_x[idx])
            loss = torch.nn.functional.cross_entropy(model(x), digits.train_y[idx])
            with torch.no_grad():
                teacher(x)
            extra = sum(call_hooks(model, "hwq_extra_loss"))
            optimizer.zero_grad(set_to_none=True)
            (loss + extra).backward()
            optimizer.step()
        assert sum(layer.aggregating() for layer in bitat_layers(model)) == 2   # both layers of block 0
        return float(extra.detach()) / weight

    assert block_distance(1.0) < 0.8 * block_distance(1e-6)


@pytest.fixture(scope="module")
def second_design_run(tmp_path_factory):
    """TFC W1A1, second design, trained 3 epochs on digits with a 2-epoch full-precision teacher."""
    from hwq.train import TrainConfig, run_train

    root = tmp_path_factory.mktemp("bitat2")
    run_train(TrainConfig(model="tfc", dataset="digits", quant="float", wbits=32, abits=32, epochs=2, lr=0.01,
                          model_options={"float_act": "hardtanh"}, threads=1), root / "fp", progress=False)
    run_train(TrainConfig(model="tfc", dataset="digits", quant="bitat", epochs=3, lr=0.01, threads=1,
                          init_from=str(root / "fp"), teacher=str(root / "fp")), root / "bitat2", progress=False)
    return root / "bitat2"


def test_second_design_trains_and_exports_a_plain_binary_network(second_design_run):
    import json

    from hwq.export import run_export
    from hwq.train.loop import load_trained_model

    metrics = json.loads((second_design_run / "metrics.json").read_text())
    assert len(metrics["history"]) == 3 and metrics["history"][-1]["test_acc"] > 0.3
    trained = load_trained_model(second_design_run)[0]
    check_deployable(trained)
    report = run_export(second_design_run)
    assert report["verification"]["passed"] and report["verification"]["argmax_match"] == 1.0


@pytest.fixture(scope="module")
def second_design_reactnet(tmp_path_factory):
    """reactnet_tiny (width 0.25) W1A1, second design, 3 epochs on digits from a 2-epoch float teacher; exported."""
    from hwq.export import run_export
    from hwq.train import TrainConfig, run_train

    root = tmp_path_factory.mktemp("bitat2-reactnet")
    common = dict(model="reactnet_tiny", dataset="digits", lr=0.01, threads=1)
    run_train(TrainConfig(**common, quant="float", wbits=32, abits=32, epochs=2,
                          model_options={"float_act": "hardtanh", "width": 0.25}), root / "fp", progress=False)
    run_train(TrainConfig(**common, quant="bitat", epochs=3, model_options={"width": 0.25},
                          init_from=str(root / "fp"), teacher=str(root / "fp")), root / "b2", progress=False)
    assert run_export(root / "b2")["verification"]["passed"]
    return root / "b2"


@pytest.mark.slow
def test_second_design_reactnet_builds_bit_exact_on_both_backends(second_design_reactnet):
    """FINN (both gates) and the open backend's simulation; a few minutes on the shared 2-core machine. Its sign
    thresholds on a k-bit stream can round to {-1, 0}, which needs finn_compat's workaround 9."""
    from hwq.dataflow import BuildConfig, run_build
    from hwq.rtl.build import OpenBuildConfig, run_open_build

    finn = run_build(second_design_reactnet, BuildConfig(board="pynq-z2", verify_samples=20,
                                                         out_dir=str(second_design_reactnet / "build-pynq-z2")),
                     progress=False)
    assert finn["status"] == "done", finn.get("error")
    assert finn["bit_exact"]["passed"] and finn["bit_exact"]["classes_match"] == 1.0
    opened = run_open_build(second_design_reactnet, OpenBuildConfig(
        board="ulx3s-85f", verify_samples=2, synthesise=False, out_dir=str(second_design_reactnet / "build-open")))
    assert opened["status"] == "done", opened.get("error")
    assert opened["bit_exact"]["passed"] and opened["simulation"]["bit_exact"]


def test_a_bitat_run_recorded_before_the_second_design_still_loads_as_the_first(tmp_path):
    """Runs trained before 2026-12-02 name no design in metrics.json: they are first-design runs."""
    import json

    from hwq.train import TrainConfig, run_train
    from hwq.train.loop import load_trained_model

    run = tmp_path / "old"
    run_train(TrainConfig(model="tfc", dataset="digits", quant="bitat", epochs=1, threads=1,
                          model_options={"bitat_design": "first"}), run, progress=False)
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["model_spec"]["options"]["bitat_design"] == "first"
    for record in (metrics["model_spec"]["options"], metrics["config"]["model_options"]):
        del record["bitat_design"]                          # as an old run recorded it
    (run / "metrics.json").write_text(json.dumps(metrics))
    model, _, spec = load_trained_model(run)
    assert spec.options["bitat_design"] == "first" and not isinstance(bitat_layers(model)[0], SecondDesignLinear)
    new = tmp_path / "new"
    run_train(TrainConfig(model="tfc", dataset="digits", quant="bitat", epochs=1, threads=1,
                          model_options={"bitat_aggregate": False}), new, progress=False)
    assert json.loads((new / "metrics.json").read_text())["model_spec"]["options"]["bitat_design"] == "second"
