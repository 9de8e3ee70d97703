# SPDX-License-Identifier: BSD-3-Clause
"""Per-layer bit-widths (``precision:``): the map reaches the layers it names, is checked name by name, and a
mixed W1/W2/W4 network trains, exports and builds (FINN and the open backend) bit-exactly."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.custom_op.registry import getCustomOp

from hwq.catalog import DATASET_SHAPES
from hwq.cli import main
from hwq.errors import ConfigError
from hwq.models import ModelSpec, build_model, model_and_layers
from hwq.models.precision import quantized_layers
from hwq.options import PRECISION_BITS
from hwq.quant.spec import MAX_BITS, MIN_BITS
from hwq.train import TrainConfig

DIGITS = (1, 8, 8)
#: A TFC with every hidden layer at another width: W1 on the pixels, A4, W4, A1 (a BIPOLAR stream into the next
#: integer layer), W2 / A2 from --wbits/--abits, a W4 classifier.
MIXED_TFC = {"features.2": 1, "features.4": 4, "features.6": 4, "features.8": 1, "features.14": 4}


def _bits(model):
    f = model.features
    return ([int(f[i].quant_weight().bit_width) for i in (2, 6, 10, 14)],
            [int(f[i].act_quant.bit_width()) for i in (4, 8, 12)])


def test_the_map_gives_each_named_layer_its_bits_and_the_others_keep_wbits_abits():
    model = build_model(ModelSpec("tfc", 2, 2, image_shape=DIGITS, precision=MIXED_TFC))
    assert _bits(model) == ([1, 4, 2, 4], [4, 1, 2])
    assert _bits(build_model(ModelSpec("tfc", 2, 2, image_shape=DIGITS))) == ([2, 2, 2, 2], [2, 2, 2])


def test_a_map_that_changes_nothing_draws_the_same_weights_as_no_map():
    """The recording build runs with the random state forked: the model is the one a run without a map gets."""
    torch.manual_seed(3)
    plain = build_model(ModelSpec("tfc", 2, 2, image_shape=DIGITS)).state_dict()
    torch.manual_seed(3)
    mapped = build_model(ModelSpec("tfc", 2, 2, image_shape=DIGITS, precision={"features.6": 2})).state_dict()
    assert plain.keys() == mapped.keys() and all(torch.equal(plain[k], mapped[k]) for k in plain)


def test_without_a_map_model_and_layers_is_build_model():
    """Training builds through ``model_and_layers``: without a map, one build with the very random draws of
    ``build_model`` (the weights, and the random state training goes on from), and no tags left on the modules."""
    spec = ModelSpec("tfc", 2, 2, image_shape=DIGITS)
    torch.manual_seed(5)
    plain, after_plain = build_model(spec).state_dict(), torch.rand(4)
    torch.manual_seed(5)
    model, layers = model_and_layers(spec)
    assert torch.equal(torch.rand(4), after_plain) and len(layers) == 7
    state = model.state_dict()
    assert plain.keys() == state.keys() and all(torch.equal(plain[k], state[k]) for k in plain)
    mapped, _ = model_and_layers(ModelSpec("tfc", 2, 2, image_shape=DIGITS, precision={"features.6": 4}))
    assert not any(hasattr(m, "hwq_precision_call") for net in (model, mapped) for m in net.modules())


def test_layers_list_every_quantizer_with_its_role_and_shared_modules_with_every_name():
    layers = quantized_layers(ModelSpec("tfc", 1, 1, image_shape=DIGITS))
    assert [(layer.name, layer.role) for layer in layers] == [
        ("features.2", "weight"), ("features.4", "act"), ("features.6", "weight"), ("features.8", "act"),
        ("features.10", "weight"), ("features.12", "act"), ("features.14", "weight")]
    react = quantized_layers(ModelSpec("reactnet_tiny", 1, 1, image_shape=DIGITS, options={"width": 0.5}))
    by_name = {name: layer for layer in react for name in layer.names}
    assert by_name["stem.1"].bits == 8                                # the model's own fixed width
    assert by_name["stem.3"] is by_name["blocks.0.quant_in"]          # one module, two paths


@pytest.mark.parametrize("precision, match", [
    ({"features.3": 2}, r"precision\.features\.3: not a quantized layer of model 'tfc' \(did you mean .*\); its "
                        r"quantized layers are features\.2 \(weights\), features\.4 \(activations\)"),
    ({"features.2": 9}, r"precision\.features\.2: expected a bit-width, an integer 1\.\.8, got 9"),
    ({"features.2": 2.0}, r"precision\.features\.2: expected a bit-width"),
    ({"features.2": True}, r"precision\.features\.2: expected a bit-width"),
    (["features.2"], r"precision: expected a mapping of layer names to bit-widths"),
])
def test_bad_maps_are_one_line_errors_naming_the_layer(precision, match):
    with pytest.raises(ConfigError, match=match):
        build_model(ModelSpec("tfc", 1, 1, image_shape=DIGITS, precision=precision))


def test_the_family_and_the_method_check_each_named_layer():
    with pytest.raises(ConfigError, match=r"precision\.features\.4: 2-bit activations are not supported by the "
                                          r"'bitat' quantizer family; expected one of 1"):
        build_model(ModelSpec("tfc", 1, 1, quant="bitat", image_shape=DIGITS, precision={"features.4": 2}))
    with pytest.raises(ConfigError, match=r"precision\.blocks\.0\.quant_in: stem\.3 and blocks\.0\.quant_in are one quantizer, "
                                          r"given 4 and 2 bits"):
        build_model(ModelSpec("reactnet_tiny", 1, 1, image_shape=DIGITS, options={"width": 0.5},
                              precision={"stem.3": 4, "blocks.0.quant_in": 2}))
    from hwq.train.layers import config_layers

    with pytest.raises(ConfigError, match=r"precision\.features\.2: --method lns-madam trains 2 or more weight "
                                          r"bits, got 1"):
        config_layers(TrainConfig(method="lns-madam", wbits=2, abits=2, precision={"features.2": 1}))
    with pytest.raises(ConfigError, match=r"precision: the two-step recipe .* not supported"):
        TrainConfig(recipe="two-step", epochs=2, precision={"features.2": 1})


def test_a_precision_file_is_read_into_the_config(tmp_path):
    plain, nested = tmp_path / "p.yaml", tmp_path / "nested.yaml"
    plain.write_text("features.2: 4\nfeatures.4: 2\n")
    nested.write_text("precision:\n  features.2: 4\n")
    assert TrainConfig(precision=str(plain)).precision == {"features.2": 4, "features.4": 2}
    assert TrainConfig(precision=str(nested)).precision == {"features.2": 4}
    (tmp_path / "bad.yaml").write_text("features.2: four\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml\.features\.2: expected a bit-width"):
        TrainConfig(precision=str(tmp_path / "bad.yaml"))
    with pytest.raises(ConfigError, match=r"missing\.yaml: precision file not found"):
        TrainConfig(precision=str(tmp_path / "missing.yaml"))
    config = TrainConfig(precision=str(plain))
    assert TrainConfig.from_dict(config.to_dict()).precision == config.precision   # config.yaml holds the map


def test_catalog_shapes_and_bit_range_agree_with_the_code():
    from hwq.data import load_dataset

    digits = load_dataset("digits")
    assert DATASET_SHAPES["digits"] == (digits.image_shape, digits.num_classes)
    assert PRECISION_BITS == tuple(range(MIN_BITS, MAX_BITS + 1))


def test_hwq_layers_prints_the_names_a_map_takes(tmp_path, capsys):
    path = tmp_path / "p.yaml"
    path.write_text("features.2: 4\n")
    assert main(["layers", "--model", "tfc", "--wbits", "2", "--abits", "2", "--precision", str(path), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["name"], r["role"], r["bits"]) for r in rows[:2]] == [("features.2", "weight", 4),
                                                                      ("features.4", "act", 2)]
    assert main(["layers", "--model", "cnv", "--dataset", "cifar10"]) == 0
    assert "linear_features.8" in capsys.readouterr().out
    path.write_text("features.9: 4\n")
    assert main(["layers", "--precision", str(path)]) == 2
    assert "precision.features.9: not a quantized layer" in capsys.readouterr().err


def _weight_types(build_dir, step: str) -> list[str]:
    from hwq.dataflow.driver import step_checkpoint

    model = ModelWrapper(str(step_checkpoint(build_dir, step)))
    return [getCustomOp(n).get_nodeattr("weightDataType") for n in model.graph.node if n.op_type.startswith("MVAU")]


def test_mixed_w1_w2_w4_tfc_trains_exports_and_builds_bit_exactly(tmp_path, capsys):
    """Digits TFC with MIXED_TFC: ``hwq train --precision``, ``hwq export``, ``hwq build`` for the Pynq-Z2 (FINN,
    both gates) and ``--backend open`` simulated in Icarus; each MVAU has the weight type its layer was given."""
    from hwq.dataflow import BuildConfig, run_build
    from hwq.export import run_export
    from hwq.rtl.build import OpenBuildConfig, run_open_build

    path, run = tmp_path / "mixed.yaml", tmp_path / "run"
    path.write_text("".join(f"{name}: {bits}\n" for name, bits in MIXED_TFC.items()))
    assert main(["train", "--wbits", "2", "--abits", "2", "--precision", str(path), "--epochs", "6", "--threads", "1",
                 "--out", str(run), "--no-progress"]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["model_spec"]["precision"] == MIXED_TFC and metrics["test_acc"] > 0.8
    capsys.readouterr()
    assert main(["layers", str(run), "--json"]) == 0
    assert [r["bits"] for r in json.loads(capsys.readouterr().out)] == [1, 4, 4, 1, 2, 2, 4]
    export = run_export(run)
    assert export["verification"]["argmax_match"] == 1.0
    m = run_build(run, BuildConfig(board="pynq-z2", verify_samples=40), progress=False)
    assert m["bit_exact"]["passed"] and m["bit_exact"]["layerwise"] and m["integer_range"]["passed"]
    finn_types = _weight_types(run / "build-pynq-z2", "convert_to_hw")
    assert finn_types[:3] == ["BIPOLAR", "INT4", "INT2"] and finn_types[3].startswith("INT")
    o = run_open_build(run, OpenBuildConfig(board="ulx3s-85f", synthesise=False, verify_samples=10))
    assert o["status"] == "done" and o["simulation"]["bit_exact"] and o["simulation"]["n"] == 10


@pytest.mark.slow
def test_mixed_cnv_exports_and_builds_bit_exactly(tmp_path):
    """An untrained CNV with W1/W2/W4 convolutions and A1/A2/A4 activations (random BN statistics) exports
    bit-exactly and builds for the ZCU104 with both gates passing (several minutes)."""
    from hwq._io import write_json
    from hwq.dataflow import BuildConfig, run_build
    from hwq.export import ExportConfig, export_qonnx_model
    from hwq.export.qonnx_export import verify_qonnx
    from tests.conftest import random_bn_statistics

    precision = {"conv_features.1": 2, "conv_features.3": 2, "conv_features.4": 4, "conv_features.6": 1,
                 "conv_features.11": 2, "conv_features.13": 4, "conv_features.15": 4, "linear_features.0": 2,
                 "linear_features.8": 4}
    torch.manual_seed(0)
    spec = ModelSpec("cnv", 1, 1, image_shape=(3, 32, 32), precision=precision)
    model, layers = model_and_layers(spec)
    model.eval()
    assert sorted({layer.bits for layer in layers}) == [1, 2, 4]
    random_bn_statistics(model)
    run = tmp_path / "cnv"
    run.mkdir()
    export_qonnx_model(model, run / "model.onnx")
    images = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (8, 3, 32, 32)).astype(np.float32) / 255)
    verification, _, _ = verify_qonnx(run / "model.onnx", model, images, ExportConfig(batch=4))
    assert verification["argmax_match"] == 1.0
    write_json(run / "metrics.json", {"config": {"dataset": "cifar10"}})
    m = run_build(run, BuildConfig(board="zcu104", verify_samples=3, force=True), progress=False)
    assert m["status"] == "done" and m["bit_exact"]["passed"] and m["integer_range"]["passed"]
