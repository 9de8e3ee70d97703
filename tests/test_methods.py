# SPDX-License-Identifier: BSD-3-Clause
"""``--method NAME``: the method registry, its resolution against ``--quant`` and where runs record it."""

import subprocess
import sys

import pytest
import yaml

from hwq import catalog
from hwq.errors import ConfigError
from hwq.methods import METHODS
from hwq.train import TrainConfig


@pytest.mark.parametrize("name", ["uniform", "n2uq", "bitat"])
def test_existing_families_are_methods_of_the_same_name(name):
    config = TrainConfig(method=name, wbits=1, abits=1)
    assert (config.method, config.quant) == (name, name)


def test_quant_alone_records_the_method_of_its_name_and_float_none():
    assert TrainConfig(quant="n2uq").method == "n2uq"
    assert TrainConfig().method == "uniform" and TrainConfig().quant == "uniform"
    assert TrainConfig(quant="float").method is None


def test_method_and_quant_that_disagree_is_one_line_naming_both():
    with pytest.raises(ConfigError) as err:
        TrainConfig(method="n2uq", quant="uniform")
    message = str(err.value)
    assert "\n" not in message and "--method n2uq" in message and "--quant uniform" in message


def test_matching_method_and_quant_is_accepted():
    assert TrainConfig(method="bitat", quant="bitat").quant == "bitat"


def test_unknown_method_names_the_known_ones():
    with pytest.raises(ConfigError, match=r"method: unknown method 'n2uqq' \(did you mean n2uq\?\); known: uniform"):
        TrainConfig(method="n2uqq")


def test_replace_with_a_method_or_a_family_alone_brings_the_other():
    # The CLI's flags replace a base config: --method alone must not clash with the base's family.
    assert TrainConfig().replace(method="n2uq").quant == "n2uq"
    assert TrainConfig(method="n2uq").replace(quant="float").method is None
    with pytest.raises(ConfigError, match="--method n2uq"):
        TrainConfig().replace(method="n2uq", quant="uniform")


def test_config_yaml_round_trips_the_method_and_old_files_without_it_load():
    config = TrainConfig(method="n2uq", wbits=2, abits=2)
    data = yaml.safe_load(config.to_yaml())
    assert data["method"] == "n2uq" and TrainConfig.from_dict(data) == config
    old = {k: v for k, v in data.items() if k != "method"}
    assert TrainConfig.from_dict(old).method == "n2uq"


def test_catalog_lists_every_method_with_its_family():
    table = catalog.as_table()
    for name, method in METHODS.items():
        assert method.quant in catalog.FAMILIES
        assert any(line.split()[:3] == [name, "--quant", method.quant] for line in table.splitlines()), name
    assert catalog.as_dict()["methods"]["n2uq"]["quant"] == "n2uq"


def test_cli_method_conflict_is_a_one_line_error(tmp_path):
    result = subprocess.run([sys.executable, "-m", "hwq.cli", "train", "--method", "n2uq", "--quant", "uniform",
                             "--out", str(tmp_path / "run")], capture_output=True, text=True)
    assert result.returncode != 0 and "--method n2uq" in result.stderr and "--quant uniform" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_a_recipe_run_recorded_before_the_method_field_stays_up_to_date(tmp_path):
    import json

    from hwq.flow import Recipe, _train

    recipe_file = tmp_path / "recipe.yaml"
    recipe_file.write_text(yaml.safe_dump({"name": "m", "run_dir": str(tmp_path / "run"),
                                           "train": {"model": "tfc", "wbits": 1, "abits": 1, "epochs": 1}}))
    recipe = Recipe.from_yaml(recipe_file)
    run = tmp_path / "run"
    assert _train(recipe, run, progress=False)[0] is False
    metrics_file = run / "metrics.json"
    metrics = json.loads(metrics_file.read_text())
    metrics["config"].pop("method")  # as an older hwq wrote it
    metrics_file.write_text(json.dumps(metrics))
    assert _train(recipe, run, progress=False)[0] is True


def test_train_help_names_every_method():
    from hwq.cli import build_parser

    train = build_parser()._subparsers._group_actions[0].choices["train"]
    method_help = next(a.help for a in train._actions if a.dest == "method")
    assert method_help.split(": ")[1].split(";")[0].split(", ") == list(METHODS)


# --- the method's pieces: an objective and an optimizer with their options ----------------------------------
def test_method_options_the_method_does_not_read_are_one_line_errors():
    with pytest.raises(ConfigError, match=r"^method_options.rho: not an option of --method lsq; known: none$"):
        TrainConfig(method="lsq", method_options={"rho": 0.05})
    with pytest.raises(ConfigError, match=r"^method_options: given without a method"):
        TrainConfig(quant="float", method_options={"rho": 0.05})


def test_a_methods_objective_and_optimizer_drive_the_train_step(monkeypatch, tmp_path):
    """A method naming a registered objective and optimizer: the step calls the objective with the closure (which
    runs the forward pass) and uses the optimizer the method names, with its options read."""
    import torch

    from hwq import methods, options
    from hwq.options import Option
    from hwq.train import objectives, optimizers, run_train

    seen = {"closures": 0, "optimizer": None}

    class Twice(objectives.Objective):
        def gradients(self, closure, optimizer):
            optimizer.zero_grad(set_to_none=True)
            for _ in range(self.options["repeats"]):
                loss, logits = closure()
                loss.backward()
                seen["closures"] += 1
            assert objectives.trained_parameters(optimizer)
            return loss, logits

    def sgd(model, lr, weight_decay, opts):
        seen["optimizer"] = opts
        return torch.optim.SGD(optimizers.lr_groups(model, lr), lr=lr)

    monkeypatch.setitem(options.OBJECTIVE_OPTIONS, "twice", (Option("repeats", "integer", 2, "closures per step"),))
    monkeypatch.setitem(options.OPTIMIZER_OPTIONS, "sgd", (Option("nesterov", "bool", False, "unused"),))
    monkeypatch.setitem(objectives.OBJECTIVES, "twice", Twice)
    monkeypatch.setitem(optimizers.OPTIMIZERS, "sgd", sgd)
    monkeypatch.setitem(methods.METHODS, "twice", methods.Method("test", "uniform", objective="twice",
                                                                 optimizer="sgd"))
    with pytest.raises(ConfigError, match=r"^method_options.repeats: expected an integer"):
        TrainConfig(method="twice", method_options={"repeats": 1.5})
    config = TrainConfig(method="twice", epochs=1, batch_size=500, threads=1, method_options={"repeats": 3})
    run_train(config, tmp_path / "run", progress=False)
    assert seen["closures"] == 3 * 3 and seen["optimizer"] == {"nesterov": False}   # 1,437 images: 3 steps
    assert yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["method_options"] == {"repeats": 3}
