# SPDX-License-Identifier: BSD-3-Clause
"""Typed model and family options: each declared once (hwq.options), checked when a config is made, read by the
families and builders through the same ``Option.read``; an unknown or mistyped one is a one-line error."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import yaml

from hwq import catalog
from hwq.cli import main
from hwq.errors import ConfigError
from hwq.models import MODEL_OPTIONS, ModelSpec, build_model
from hwq.options import BITAT_OPTIONS, N2UQ_OPTIONS, Option, Range, check_options
from hwq.quant import FAMILIES, get_family
from hwq.train import TrainConfig

ROOT = Path(__file__).resolve().parents[1]
DIGITS = (1, 8, 8)
MISSING = "/nonexistent/hwq-options"

#: A value of the wrong type for each option type.
WRONG = {"bool": "yes", "number": "x", "integer": 1.5, "choice": "nope", "numbers": "x", "number or numbers": [True]}


def _every_option():
    """(model, quant, option) for every declared option, on a model and family that read it."""
    for quant, declared in catalog.FAMILY_OPTIONS.items():
        for option in declared:
            yield pytest.param("tfc", quant, option, id=f"{quant}-{option.name}")
    for model in ("mobilenet_tiny",):
        for option in catalog.MODEL_OPTIONS[model]:
            yield pytest.param(model, "uniform", option, id=f"{model}-{option.name}")


def _bits(quant: str) -> tuple[int, int]:
    return (1, 1) if quant in ("bitat", "dirnet") else (2, 2)  # the binarization families take W1A1 only


def test_the_catalog_declares_what_the_registries_read():
    assert catalog.MODEL_OPTIONS == MODEL_OPTIONS
    assert catalog.FAMILY_OPTIONS == {name: cls.declared_options for name, cls in FAMILIES.items()}
    for declared in [*catalog.MODEL_OPTIONS.values(), *catalog.FAMILY_OPTIONS.values()]:
        names = [o.name for o in declared]
        assert len(names) == len(set(names)) and all(o.help and len(o.help) < 120 for o in declared)
    # a model's and a family's options never share a name, so a key has one meaning
    model_names = {o.name for d in catalog.MODEL_OPTIONS.values() for o in d}
    assert not model_names & {o.name for d in catalog.FAMILY_OPTIONS.values() for o in d}


@pytest.mark.parametrize("model,quant,option", list(_every_option()))
def test_every_option_takes_its_default_and_rejects_a_wrong_type_at_config_and_build_time(model, quant, option):
    wbits, abits = _bits(quant)
    build_model(ModelSpec(model, wbits, abits, quant=quant, image_shape=DIGITS,
                          options={option.name: option.default}))
    bad = {option.name: WRONG[option.type]}
    with pytest.raises(ConfigError) as at_config:
        TrainConfig(model=model, quant=quant, wbits=wbits, abits=abits, model_options=bad)
    with pytest.raises(ConfigError) as at_build:
        build_model(ModelSpec(model, wbits, abits, quant=quant, image_shape=DIGITS, options=bad))
    expected = f"model_options.{option.name}: expected {option.expected()}, got {WRONG[option.type]!r}"
    assert str(at_config.value) == str(at_build.value) == expected


def test_family_defaults_are_the_declared_ones():
    bitat = get_family("bitat")
    assert (bitat.design, bitat.transform, bitat.penalty, bitat.codes, bitat.codes_every,
            bitat.plan.final_fraction) == ("second", "eigen", 0.01, "importance", 0, 0.25)
    assert get_family("bitat", {"bitat_design": "first"}).codes == "sign"   # unset codes: each design's own
    n2uq = get_family("n2uq").act(2, channels=4)
    assert n2uq.start.shape == (1,) and abs(n2uq.step - 2.0 / 3) < 1e-9
    assert get_family("n2uq")._option("n2uq_weight_per_channel") is True


def test_an_unknown_option_names_it_and_lists_the_known_ones_with_a_hint():
    with pytest.raises(ConfigError) as err:
        TrainConfig(model="tfc", quant="bitat", model_options={"bitat_penalti": 0.1})
    known = ", ".join(sorted(o.name for o in BITAT_OPTIONS))
    assert str(err.value) == ("model_options.bitat_penalti: not an option of model 'tfc' with --quant bitat "
                              f"(did you mean bitat_penalty?); known: {known}")
    with pytest.raises(ConfigError, match=r"^model_options.width: not an option of model 'tfc' with --quant n2uq "
                                          r"\(width is an option of model 'mobilenet' and model 'mobilenet_tiny' and model "
                                          r"'reactnet' and model 'reactnet_tiny'\)"):
        TrainConfig(model="tfc", quant="n2uq", model_options={"width": 0.5})
    with pytest.raises(ConfigError, match=r"n2uq_range is an option of --quant n2uq\); known: act_signed, weight_scale$"):
        TrainConfig(model="tfc", quant="uniform", model_options={"n2uq_range": 1.0})
    # the model and the family together: mobilenet's width and N2UQ's options
    TrainConfig(model="mobilenet_tiny", quant="n2uq", wbits=2, abits=2,
                model_options={"width": 0.5, "n2uq_per_channel": True})


def test_values_out_of_range_fail_when_the_config_is_made():
    for options, message in [({"width": 0}, "width: expected a number in (0, 4], got 0"),
                             ({"bitat_final": 1.0}, "bitat_final: expected a number in [0, 1), got 1.0"),
                             ({"bitat_stages": 0}, "bitat_stages: expected an integer >= 1 or null, got 0"),
                             ({"n2uq_gaps": [1.0, -1.0]}, "n2uq_gaps: expected a number or a list of numbers, each > 0 "
                                                           "or null, got [1.0, -1.0]")]:
        model = "mobilenet_tiny" if "width" in options else "tfc"
        quant = "bitat" if "bitat_final" in options or "bitat_stages" in options else "n2uq"
        with pytest.raises(ConfigError) as err:
            TrainConfig(model=model, quant=quant, wbits=1, abits=1, model_options=options)
        assert str(err.value) == f"model_options.{message}"


def test_cli_option_typo_is_one_line_before_any_data_is_read(tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["train", "--model", "tfc", "--quant", "bitat", "--dataset", "mnist", "--data-dir", MISSING,
            "--option", "bitat_penalti=0.1", "--out", str(out), "--no-progress"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("hwq train: error: model_options.bitat_penalti: not an option of model 'tfc' with "
                          "--quant bitat (did you mean bitat_penalty?); known: bitat_aggregate, ")
    assert len(err.splitlines()) == 1 and not out.exists()


def test_config_file_and_recipe_typos_name_the_file(tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"quant": "n2uq", "wbits": 2, "abits": 2, "model_options": {"n2uq_rnage": 1}}))
    assert main(["train", "--config", str(config), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"hwq train: error: {config}: model_options.n2uq_rnage: not an option of model 'tfc' "
                          "with --quant n2uq (did you mean n2uq_range?)")
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({"run_dir": str(tmp_path / "run"), "train": {
        "model": "mobilenet_tiny", "dataset": "mnist", "data_dir": MISSING, "model_options": {"widht": 0.5}}}))
    assert main(["run", str(recipe), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert "model_options.widht: not an option of model 'mobilenet_tiny' with --quant uniform (did you mean width?)" \
        in err and str(recipe) in err and len(err.splitlines()) == 1


def test_recorded_runs_model_options_still_load():
    """Every ``model_options`` the benchmarks recorded (with their run's family) and the benchmark scripts pass."""
    found = []

    def walk(node, model="tfc"):
        if isinstance(node, dict):
            if "model_options" in node:
                found.append((node.get("model") or model, node.get("quant", "uniform"), node["model_options"]))
            for value in node.values():
                walk(value, model)
        elif isinstance(node, list):
            for value in node:
                walk(value, model)

    for path in sorted((ROOT / "benchmarks").glob("*.json")):
        walk(json.loads(path.read_text()))
    spec = importlib.util.spec_from_file_location("bench_bitat", ROOT / "scripts" / "bench_bitat.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    for model, _, suite_options, _ in bench.SUITES.values():
        found.append((model, "float", {**suite_options, "float_act": "hardtanh"}))
        for quant, options, _ in bench.METHODS.values():
            found.append((model, quant, {**suite_options, **options}))
    found.append(("cnv", "n2uq", {"n2uq_classifier_per_channel": True}))  # scripts/bench_n2uq.py
    assert len(found) > 20
    for model, quant, options in found:
        catalog.check_model_options(model, quant, options)


def test_hwq_models_lists_the_options(capsys):
    assert main(["models"]) == 0
    table = capsys.readouterr().out
    assert "      bitat_penalty = 0.01" in table and "a number >= 0: first design: weight of the" in table
    assert "      width = 0.5" in table and "      pad_value = unset" in table
    assert main(["models", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    (width,) = [o for o in data["models"]["mobilenet"]["options"] if o["name"] == "width"]
    assert width == {"name": "width", "type": "a number in (0, 4]", "default": 0.5,
                     "help": "channel multiplier of MobileNet-v1's widths"}
    assert [o["name"] for o in data["quant"]["n2uq"]["options"]] == [o.name for o in N2UQ_OPTIONS]
    assert [o["name"] for o in data["quant"]["uniform"]["options"]] == ["weight_scale", "act_signed"]
    assert data["models"]["tfc"]["options"] == []


def test_option_and_range_as_data():
    opt = Option("k", "number", None, "help", range=Range(0, 1, high_open=True))
    assert opt.read({}) is None and opt.read({"k": 0}) == 0.0 and opt.expected() == "a number in [0, 1) or null"
    with pytest.raises(ConfigError, match=r"^model_options.k: expected a number in \[0, 1\) or null, got 1$"):
        opt.read({"k": 1})
    for bad in (True, float("nan"), float("inf"), "0.5"):
        assert not opt.accepts(bad)
    with pytest.raises(ValueError):
        Option("c", "choice", "a", "help")  # a choice without choices is a declaration bug
    check_options({}, (), "nothing")


def test_the_docs_tables_are_the_declarations():
    n2uq, bitat = (ROOT / "docs" / "n2uq.md").read_text(), (ROOT / "docs" / "bitat.md").read_text()
    assert catalog.options_markdown(catalog.FAMILY_OPTIONS["n2uq"]) in n2uq
    assert catalog.options_markdown(catalog.FAMILY_OPTIONS["bitat"]) in bitat
    assert catalog.options_markdown(catalog.MODEL_OPTIONS["mobilenet"]) in bitat
