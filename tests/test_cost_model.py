# SPDX-License-Identifier: BSD-3-Clause
"""The cost model (hwq.cost) against FINN's own estimates of built models, and its checks.

Each comparison exports an untrained digits TFC (random BatchNorm statistics, so its thresholds differ) and runs
hwq's FINN build up to its ``estimate`` step: the per-layer estimates there are the ground truth. The cost model
must choose the same folding (PE/SIMD per layer), the same cycles and BRAM18 and, per layer, LUTs within
LUT_TOLERANCE (FINN derives the accumulator width from the weights, the cost model from the bit-widths).
"""

from __future__ import annotations

import json
import time

import pytest

from hwq.cli import main
from hwq.cost import describe_model, layer_cost, model_cost
from hwq.cost.reference import finn_reference
from hwq.errors import ConfigError

#: Largest relative LUT difference per layer against FINN's estimate (measured: 1.0 %, benchmarks/cost_model.md).
LUT_TOLERANCE = 0.02
#: digits TFC at W1/W2/W4 weights and A1/A2/A4 activations (the mixed map of tests/test_precision.py, 4-bit classifier).
MIXED_TFC = {"features.2": 1, "features.4": 4, "features.6": 4, "features.8": 1, "features.14": 4}
FINN_KIND = {"mvau": "MVAU", "window": "ConvolutionInputGenerator", "pool": "Pool", "label_select": "LabelSelect"}


def finn_estimate(tmp_path, model: str, wbits: int, abits: int, precision: dict, board: str,
                  target_fps: float | None = None) -> dict:
    dataset = "digits" if model == "tfc" else "cifar10"
    return finn_reference(tmp_path / "run", model, dataset, wbits, abits, precision, board, target_fps)


def assert_matches(cost: dict, finn: dict) -> None:
    assert len(cost["layers"]) == len(finn["layers"])
    for ours, theirs in zip(cost["layers"], finn["layers"]):
        where = f"{ours['name']} / {theirs['node']}"
        assert theirs["op_type"].startswith(FINN_KIND[ours["kind"]]), where
        assert ("rtl" if ours.get("impl") == "rtl" else "hls") in theirs["op_type"] or ours["kind"] == "window", where
        for attr in ("PE", "SIMD"):
            if attr in theirs["folding"]:
                assert ours[attr] == theirs["folding"][attr], f"{where}: {attr}"
        assert ours["cycles"] == theirs["cycles"], where
        assert ours["bram18"] == theirs["BRAM_18K"], where
        assert ours["dsp"] == theirs["DSP"], where
        assert abs(ours["lut"] - theirs["LUT"]) <= LUT_TOLERANCE * max(theirs["LUT"], 1), \
            f"{where}: {ours['lut']} LUT, FINN {theirs['LUT']}"
    assert cost["total"]["max_cycles"] == finn["total"]["max_cycles"]
    assert abs(cost["total"]["lut"] - finn["total"]["LUT"]) <= LUT_TOLERANCE * finn["total"]["LUT"]


@pytest.mark.parametrize("wbits, abits, precision, board, target_fps", [
    (1, 1, {}, "pynq-z2", None),                 # XNOR-popcount layers behind an 8-bit first layer
    (2, 2, {}, "pynq-z2", None),
    (2, 2, MIXED_TFC, "pynq-z2", None),          # W1/W2/W4 weights, A1/A2/A4 activations
    (4, 4, {}, "zcu104", 2e6),                   # a target; the 4-bit classifier is FINN's DSP-based MVAU_rtl
], ids=["w1a1", "w2a2", "mixed", "w4a4-zcu104-2Mfps"])
def test_the_cost_model_matches_finns_estimate_of_the_built_tfc(tmp_path, wbits, abits, precision, board,
                                                                 target_fps):
    finn = finn_estimate(tmp_path, "tfc", wbits, abits, precision, board, target_fps)
    cost = model_cost(describe_model("tfc", "digits", wbits, abits), precision, board=board, target_fps=target_fps)
    assert_matches(cost, finn)


@pytest.mark.slow
def test_the_cost_model_matches_finns_estimate_of_the_built_cnv(tmp_path):
    """CNV at W2A2 on the Pynq-Z2: sliding windows, pools, BRAM-bound folding (about 30 s)."""
    finn = finn_estimate(tmp_path, "cnv", 2, 2, {}, "pynq-z2")
    assert_matches(model_cost(describe_model("cnv", "cifar10", 2, 2), board="pynq-z2"), finn)


def test_the_layers_come_from_the_pytorch_model():
    tfc = describe_model("tfc", "mnist", 2, 2)
    assert [(l.name, l.kind, l.mw, l.mh, l.input, l.output) for l in tfc.layers] == [
        ("features.2", "mvau", 784, 64, None, "features.4"), ("features.6", "mvau", 64, 64, "features.4", "features.8"),
        ("features.10", "mvau", 64, 64, "features.8", "features.12"),
        ("features.14", "mvau", 64, 10, "features.12", None),
        ("label_select", "label_select", 0, 0, "features.14", None)]
    cnv = describe_model("cnv", "cifar10", 1, 1)
    first_fc = next(l for l in cnv.layers if l.name == "linear_features.0")
    conv = next(l for l in cnv.layers if l.name == "conv_features.4")
    assert (conv.mw, conv.mh, conv.vectors) == (64 * 9, 64, 28 * 28) and first_fc.mw == 256
    assert sum(l.kind == "pool" for l in cnv.layers) == 2 and sum(l.kind == "window" for l in cnv.layers) == 8


@pytest.mark.parametrize("model, dataset", [("tfc", "mnist"), ("cnv", "cifar10")])
def test_cost_grows_with_each_layers_bits_at_a_fixed_folding(model, dataset):
    layers = describe_model(model, dataset, 1, 1)
    folding = {l["name"]: {k: l[k] for k in ("PE", "SIMD") if k in l}
               for l in model_cost(layers, board="zcu104", target_cycles=4096)["layers"]}
    for name, role in layers.roles.items():
        luts, brams = [], []
        for bits in (1, 2, 4, 8):
            total = model_cost(layers, {name: bits}, board="zcu104", folding=folding)["total"]
            luts.append(total["lut"] + 1000 * total["dsp"])
            brams.append(total["bram18"])
        assert luts == sorted(luts) and luts[-1] > luts[0], f"{name} ({role}): {luts}"
        if role == "weight":
            assert brams == sorted(brams), f"{name}: {brams}"


def test_layer_cost_is_finns_formula_for_one_layer():
    tfc = describe_model("tfc", "digits", 2, 2)
    # FINN's estimate of this layer in a built digits TFC-w2a2 at PE 16, SIMD 16: 16 cycles, 3,749 LUT, 15 BRAM18
    # (its accumulator INT8 from the weights; the bit-widths give INT9, one LUT per PE more)
    assert layer_cost(tfc.layers[1], tfc.bits, pe=16, simd=16) == {"cycles": 16, "lut": 3767, "bram18": 15, "dsp": 0}
    assert layer_cost(tfc.layers[1], {**tfc.bits, "features.6": 4}, pe=16, simd=16)["lut"] > 3767
    assert layer_cost(tfc.layers[1], tfc.bits, pe=16, simd=16, wbits=4) == \
        layer_cost(tfc.layers[1], {**tfc.bits, "features.6": 4}, pe=16, simd=16)
    assert layer_cost(tfc.layers[1], tfc.bits, pe=16, simd=16, abits=1)["lut"] < 3767


def test_a_query_takes_milliseconds():
    layers = describe_model("cnv", "cifar10", 2, 2)
    model_cost(layers, board="pynq-z2")  # loads the board
    start = time.perf_counter()
    for bits in (1, 2, 4):
        model_cost(layers, {"conv_features.4": bits}, board="pynq-z2", target_fps=1000)
    assert (time.perf_counter() - start) / 3 < 0.5  # about 2 ms on the 2-core machine; the bound allows for load


@pytest.mark.parametrize("call, message", [
    (lambda l: model_cost(l, board="no-such-board"), "unknown board 'no-such-board'"),
    (lambda l: model_cost(l, {"features.3": 2}), r"precision.features.3: not a quantized layer of model 'tfc' "
                                                 r"\(did you mean features.8\?\)"),
    (lambda l: model_cost(l, {"features.2": 9}), r"precision.features.2: expected an integer number of bits 1..8"),
    (lambda l: model_cost(l, folding={"features.2": {"PE": 3}}), "folding: features.2: PE=3 does not divide 64"),
    (lambda l: model_cost(l, folding={"fc1": {"PE": 1}}), "folding: 'fc1' is not a layer of the cost model"),
    (lambda l: describe_model("mobilenet", "cifar10"), "model 'mobilenet': the cost model covers"),
    (lambda l: describe_model("tfc", "imagenet"), "dataset: unknown 'imagenet'"),
    (lambda l: model_cost(l, fit_fraction=1.5), r"fit_fraction 1.5: expected a number in \[0, 1\]"),
    (lambda l: model_cost(l, target_fps=float("nan")), "target_fps nan: expected a number > 0"),
])
def test_bad_input_is_a_one_line_error(call, message):
    with pytest.raises(ConfigError, match=message) as err:
        call(describe_model("tfc", "mnist", 2, 2))
    assert "\n" not in str(err.value)


def test_the_calibration_file_is_its_fit_and_the_calibrated_model_reproduces_its_residuals():
    from hwq.cost.calibration import CALIBRATION_FILE, fit

    stored = json.loads(CALIBRATION_FILE.read_text())
    refit = fit([{k: v for k, v in p.items() if k != "finn_lut"} for p in stored["points"]])
    assert refit["targets"] == stored["targets"]
    ecp5 = stored["targets"]["ecp5"]
    assert ecp5["builds"] >= 5 and ecp5["loo_error_max_pct"] is not None
    residuals = []
    for point in stored["points"]:
        if point["target"] != "ecp5":
            continue
        kw = {"folding": point["folding"]} if "folding" in point else {"target_cycles": point["target_cycles"]}
        cost = model_cost(describe_model(point["model"], point["dataset"], point["wbits"], point["abits"]),
                          point.get("precision"), board=point["board"], calibrated=True, **kw)
        assert cost["total"]["lut"] == point["finn_lut"]  # the folding of the build, so FINN's estimate of it
        residuals.append(100 * (cost["total"]["lut_calibrated"] - point["synth_lut"]) / point["synth_lut"])
    assert residuals == pytest.approx(ecp5["residuals_pct"], abs=0.1)
    assert max(abs(r) for r in ecp5["residuals_pct"]) == pytest.approx(ecp5["fit_error_max_pct"], abs=0.1)


def test_hwq_cost_prints_per_layer_and_total(tmp_path, capsys):
    path = tmp_path / "mixed.yaml"
    path.write_text("".join(f"{name}: {bits}\n" for name, bits in MIXED_TFC.items()))
    assert main(["cost", "--model", "tfc", "--dataset", "digits", "--precision", str(path), "--target-fps", "1e6",
                 "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert [r["wbits"] for r in result["layers"][:4]] == [2, 4, 2, 4]  # 1-bit weights on 8-bit pixels are INT2
    assert result["total"]["fps"] >= 1e6 and result["folding_mode"] == "target_fps"
    assert main(["cost", "--model", "tfc", "--board", "ulx3s-85f", "--calibrated"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].startswith("tfc on ulx3s-85f") and "calibrated (ecp5 synthesis)" in out
    assert main(["cost", "--model", "tfc", "--target-fps", "1e6", "--target-cycles", "10"]) == 2
    assert "exclude each other" in capsys.readouterr().err


def test_the_trained_digits_tfc_matches_finns_estimate_of_its_build(exported_tfc_w1a1, tmp_path):
    """A trained model (the session's exported digits TFC-w1a1): FINN sizes its accumulators from the trained
    weights, the cost model from the bit-widths."""
    import shutil

    from hwq.dataflow import BuildConfig, run_build

    run = tmp_path / "run"
    shutil.copytree(exported_tfc_w1a1, run)
    manifest = run_build(run, BuildConfig(board="pynq-z2", verify_samples=5), progress=False, stop_step="estimate")
    assert_matches(model_cost(describe_model("tfc", "digits", 1, 1), board="pynq-z2"), manifest["estimates"])


def test_a_budget_folds_for_its_speed_and_names_what_it_exceeds(capsys):
    from hwq.cost import cost_under_budget, parse_budget

    layers = describe_model("tfc", "mnist", 2, 2)
    assert parse_budget("lut=20000, fps=1e6") == {"lut": 20000.0, "fps": 1e6}
    over = cost_under_budget(layers, {}, "pynq-z2", parse_budget("lut=20000,fps=1e6"))
    assert over["total"]["fps"] >= 1e6 and not over["within_budget"]
    assert over["over_budget"] == [f"lut {over['total']['lut']:,} > 20,000"]
    within = cost_under_budget(layers, {"features.2": 1}, "pynq-z2", parse_budget("lut=20000,fps=1e5,bram18=40"))
    assert within["within_budget"] and within["total"]["lut"] <= 20000
    for text, message in (("lut", "expected KEY=VALUE"), ("luts=3", "expected KEY=VALUE"), ("lut=-1", "> 0"),
                          ("fps=1e6,cycles=10", "exclude each other"), ("lut=big", "'big' is not a number")):
        with pytest.raises(ConfigError, match=message):
            parse_budget(text)
    assert main(["cost", "--model", "tfc", "--budget", "lut=20000,fps=1e6"]) == 1
    assert "budget lut=20000, fps=1e+06: over: lut" in capsys.readouterr().out


def test_the_formula_module_examples_hold():
    import doctest

    from hwq.cost import budget, finn_formulas

    assert doctest.testmod(finn_formulas).failed == 0 and doctest.testmod(budget).failed == 0


def test_the_calibration_ships_as_package_data():
    import tomllib
    from pathlib import Path

    from hwq.cost.calibration import CALIBRATION_FILE

    config = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())
    assert CALIBRATION_FILE.name in config["tool"]["setuptools"]["package-data"]["hwq.cost"]
    assert CALIBRATION_FILE.parent.name == "cost" and CALIBRATION_FILE.is_file()


def test_an_open_board_folds_as_the_open_build_does_unless_calibrated():
    """``hwq build --backend open`` folds for the Pynq-Z2 (its ``fold_board``); a calibrated query fits the ULX3S's
    own LUTs with the ECP5 calibration instead."""
    layers = describe_model("tfc", "mnist", 1, 1)
    open_board = model_cost(layers, board="ulx3s-85f")
    pynq = model_cost(layers, board="pynq-z2")
    assert open_board["fold_board"] == "pynq-z2" and open_board["layers"] == pynq["layers"]
    calibrated = model_cost(layers, board="ulx3s-85f", calibrated=True)
    assert calibrated["fold_board"] == "ulx3s-85f" and calibrated["total"]["fits"]
    assert calibrated["total"]["utilisation"]["lut"] == calibrated["total"]["lut_calibrated"] / 83640


def test_a_cost_query_checks_what_the_cli_checks_and_gives_what_it_prints(capsys):
    """The Python API and ``hwq cost`` share one path: the same one-line errors, the same result."""
    from hwq.cost.query import CostQuery, run_cost

    for settings, message in (({"target_fps": 1e6, "target_cycles": 10}, "exclude each other"),
                              ({"fit_fraction": 0}, "--fit-fraction 0"),
                              ({"budget": "lut=1", "target_fps": 1e6}, "--budget sets the speed itself"),
                              ({"budget": "luts=1"}, "expected KEY=VALUE")):
        with pytest.raises(ConfigError, match=message):
            CostQuery("tfc", **settings)
    result = run_cost(CostQuery("tfc", budget="lut=20000,fps=1e6"))
    assert main(["cost", "--model", "tfc", "--budget", "lut=20000,fps=1e6", "--json"]) == 1
    assert json.loads(capsys.readouterr().out) == json.loads(json.dumps(result))
