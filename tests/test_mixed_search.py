# SPDX-License-Identifier: BSD-3-Clause
"""Bit-width search under a hardware budget (issue 18): the shared allocator against brute force, the BMPQ and
SAQ sensitivities on hand-made layers, and digits TFC runs of ``--method bmpq`` / ``saq-gen`` whose chosen map is
within the budget, recorded as the run's precision, exported and built bit-exactly."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from hwq.cli import main
from hwq.cost import cost_under_budget, describe_model, parse_budget
from hwq.errors import ConfigError
from hwq.mixed.allocate import allocate, searched_layers
from hwq.mixed.sensitivity import bit_gradient_sensitivity, dropped_bit_planes, sharpness_sensitivity
from hwq.train import TrainConfig

BITS = (1, 2, 4, 8)


def _brute_force(layers, scores, budget):
    """The least total score over every choice the full cost model puts within ``budget``."""
    names = list(scores)
    best = None
    for combo in itertools.product(BITS, repeat=len(names)):
        precision = dict(zip(names, combo))
        if cost_under_budget(layers, precision, "pynq-z2", budget)["within_budget"]:
            total = sum(scores[n][b] for n, b in precision.items())
            best = total if best is None or total < best else best
    return best


@pytest.mark.parametrize("budget_text,seed", [("lut=9000,fps=1e6", 0), ("lut=12000,fps=1e6", 1),
                                              ("lut=14000,fps=2e6", 2), ("lut=24000", 3)])
def test_the_allocator_finds_the_brute_force_optimum(budget_text, seed):
    """Random scores, falling with the bits; digits TFC's 4 weight layers x 4 bit-widths = 256 choices, each
    checked with the full cost model. With fps the costs are additive; LUTs alone need the lazy cuts."""
    layers = describe_model("tfc", "digits", 2, 2)
    rng = np.random.default_rng(seed)
    scores = {name: {b: float(rng.uniform(0, 1) * (9 - b)) for b in BITS} for name in searched_layers(layers)}
    budget = parse_budget(budget_text)
    chosen = allocate(layers, scores, "pynq-z2", budget)
    assert chosen.cost["within_budget"]
    assert cost_under_budget(layers, chosen.precision, "pynq-z2", budget)["within_budget"]
    assert chosen.sensitivity == pytest.approx(sum(scores[n][b] for n, b in chosen.precision.items()))
    assert chosen.sensitivity == pytest.approx(_brute_force(layers, scores, budget))
    assert set(chosen.precision.values()) != {8}  # the budget binds: not every layer at the lowest score


def test_a_budget_nothing_meets_is_one_line_naming_it_and_the_cheapest_cost():
    layers = describe_model("tfc", "digits", 2, 2)
    scores = {name: {b: 8.0 - b for b in BITS} for name in searched_layers(layers)}
    with pytest.raises(ConfigError, match=r"^--budget lut=3000,fps=1e\+06: no choice of weight bits \[1, 2, 4, 8\] "
                                          r"for features.2, .* fits on pynq-z2; the cheapest \(W1/W1/W1/W1\) costs "
                                          r"lut 6,585, fps 1,250,000 \(lut 6,585 > 3,000\)$"):
        allocate(layers, scores, "pynq-z2", parse_budget("lut=3000,fps=1e6"))
    with pytest.raises(ConfigError, match=r"sensitivity: 'features.4' is not a weight layer of model 'tfc'"):
        allocate(layers, {"features.4": {2: 1.0}}, "pynq-z2", parse_budget("lut=9000"))


class TwoBranches(nn.Module):
    """``a(x) + 0.01 * b(x)``: the same layer twice, ``a``'s weights 100 times as important to the output."""

    def __init__(self) -> None:
        from brevitas.nn import QuantLinear

        super().__init__()
        torch.manual_seed(0)
        self.a = QuantLinear(16, 4, bias=False, weight_bit_width=8)
        self.b = QuantLinear(16, 4, bias=False, weight_bit_width=8)
        with torch.no_grad():
            self.b.weight.copy_(self.a.weight)

    def forward(self, x):
        return self.a(x) + 0.01 * self.b(x)


def _batches():
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(64, 16, generator=generator)
    y = torch.randint(0, 4, (64,), generator=generator)
    return [(x[:32], y[:32]), (x[32:], y[32:])]


def test_bit_gradients_rank_the_layer_that_matters_more_higher():
    """BMPQ: a layer whose weights move the loss more has larger bit gradients, so dropping its bits costs more;
    no bits dropped at 8, more dropped at fewer bits."""
    model = TwoBranches()
    scores = bit_gradient_sensitivity(model, _batches(), F.cross_entropy, BITS)
    assert set(scores) == {"a", "b"}
    for b in (1, 2, 4):
        assert scores["a"][b] == pytest.approx(100 * scores["b"][b], rel=1e-3)  # same weights, 100x the gradient
    assert scores["a"][8] == 0.0
    assert scores["a"][1] > scores["a"][2] > scores["a"][4] > 0
    assert all(p.grad is None for p in model.parameters())  # the measurement leaves no gradients behind
    dropped, scale = dropped_bit_planes(torch.tensor([1.0, -0.5, 0.25]), 4)
    assert scale == pytest.approx(1 / 127) and dropped.tolist() == [127 % 16, 64 % 16, 32 % 16]


def test_sharpness_is_lower_where_the_loss_is_flat():
    """SAQ's generator: the same rounding-sized SAM step raises the loss far less through the flat branch ``b``;
    a coarser rounding is a larger step."""
    model = TwoBranches()
    scores = sharpness_sensitivity(model, _batches(), F.cross_entropy, BITS)
    for b in (1, 2, 4):
        assert scores["a"][b] > 10 * abs(scores["b"][b])
    assert scores["a"][1] > scores["a"][2] > scores["a"][4] > scores["a"][8]


def test_search_methods_need_a_budget_and_others_refuse_one():
    with pytest.raises(ConfigError, match=r"^budget: --method bmpq searches per-layer bit-widths .* give --budget"):
        TrainConfig(method="bmpq")
    with pytest.raises(ConfigError, match=r"^budget: --method uniform does not search bit-widths; --budget is for "
                                          r"bmpq, saq-gen$"):
        TrainConfig(budget="lut=9000")
    with pytest.raises(ConfigError, match=r"^board: --board is the board a --budget is for"):
        TrainConfig(board="pynq-z2")
    with pytest.raises(ConfigError, match=r"^--budget 'luts=1'"):
        TrainConfig(method="bmpq", budget="luts=1")
    with pytest.raises(ConfigError, match=r"method_options.search_every: not an option of --method saq-gen"):
        TrainConfig(method="saq-gen", budget="lut=9000", method_options={"search_every": 2})
    from hwq.mixed.search import SearchPlan

    with pytest.raises(ConfigError, match=r"^method_options.search_bits: expected whole bit-widths 1..8, got \[2.5\]"):
        SearchPlan.for_run(TrainConfig(method="bmpq", budget="lut=9000", method_options={"search_bits": [2.5]}))

    with pytest.raises(ConfigError, match=r"^method_options.search_warmup: expected fewer epochs than --epochs 2"):
        SearchPlan.for_run(TrainConfig(method="saq-gen", budget="lut=9000", epochs=2,
                                       method_options={"search_warmup": 2}))


def test_hwq_models_lists_the_search_methods(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "bmpq" in out and "saq-gen" in out and "search_bits" in out


@pytest.fixture(scope="module")
def bmpq_run(tmp_path_factory):
    """Digits TFC, ``hwq train --method bmpq --budget lut=9000,fps=1e6`` (uniform W2A2 at 1e6 fps: 6,585 LUT;
    W4A2: 8,261), 4 epochs."""
    run = tmp_path_factory.mktemp("bmpq") / "run"
    assert main(["train", "--method", "bmpq", "--wbits", "2", "--abits", "2", "--budget", "lut=9000,fps=1e6",
                 "--board", "pynq-z2", "--epochs", "4", "--threads", "1", "--out", str(run), "--no-progress"]) == 0
    return run


def test_a_bmpq_run_ends_within_its_budget_and_exports_bit_exactly(bmpq_run, capsys):
    """Every solve within the budget, the last one's map the run's precision in config.yaml and metrics.json, its
    cost recomputed within the budget, ``hwq export`` verified."""
    import yaml

    metrics = json.loads((bmpq_run / "metrics.json").read_text())
    search = metrics["search"]
    assert [s["epochs_done"] for s in search["solves"]] == [0, 1, 2, 3]
    assert all(s["within_budget"] and s["lut"] <= 9000 for s in search["solves"])
    precision = search["precision"]
    assert set(precision) == {"features.2", "features.6", "features.10", "features.14"}
    assert metrics["model_spec"]["precision"] == precision == metrics["config"]["precision"]
    assert yaml.safe_load((bmpq_run / "config.yaml").read_text())["precision"] == precision
    assert set(precision.values()) != {2}  # the budget allows more than uniform W2 and the search takes it
    cost = cost_under_budget(describe_model("tfc", "digits", 2, 2), precision, "pynq-z2",
                             parse_budget("lut=9000,fps=1e6"))
    assert cost["within_budget"] and cost["total"]["lut"] == search["solves"][-1]["lut"]
    assert metrics["test_acc"] > 0.8
    assert main(["export", str(bmpq_run)]) == 0
    assert "verified" in capsys.readouterr().out
    export = json.loads((bmpq_run / "export.json").read_text())
    assert export["verification"]["passed"] and export["verification"]["argmax_match"] == 1.0


@pytest.mark.slow
def test_a_bmpq_run_builds_with_finn_bit_exactly(bmpq_run):
    """``hwq build`` of the search's map for the Pynq-Z2 at 1e6 fps: bit-exact layer by layer (about 10 s)."""
    from hwq.dataflow import BuildConfig, run_build

    if not (bmpq_run / "model.onnx").exists():
        assert main(["export", str(bmpq_run)]) == 0
    built = run_build(bmpq_run, BuildConfig(board="pynq-z2", target_fps=1e6, verify_samples=20), progress=False)
    assert built["bit_exact"]["passed"] and built["bit_exact"]["layerwise"]


def test_a_saq_generator_run_solves_once_after_its_warmup(tmp_path):
    from hwq.train import run_train

    run = tmp_path / "saq"
    config = TrainConfig(method="saq-gen", wbits=2, abits=2, budget="lut=9000,fps=1e6", epochs=3, threads=1)
    metrics = run_train(config, run, progress=False)
    solves = metrics["search"]["solves"]
    assert [s["epochs_done"] for s in solves] == [1] and solves[0]["within_budget"]
    assert metrics["model_spec"]["precision"] == solves[0]["precision"]
    assert metrics["config"]["method"] == "saq-gen" and metrics["test_acc"] > 0.5


def test_rebuilding_the_model_at_its_own_map_changes_nothing(tmp_path, monkeypatch):
    """The rebuild at a new map carries latent weights, BatchNorms, scales and Adam moments and draws nothing from
    the training's random stream: forced at every solve of a saq-gen run whose map stays uniform W2, the run
    trains exactly as ``--method saq`` at W2A2."""
    from hwq.mixed import search
    from hwq.train import run_train

    common = dict(wbits=2, abits=2, epochs=2, threads=1)
    calls = []
    monkeypatch.setattr(search.SearchPlan, "widths", lambda self, precision: calls.append(1) or len(calls))
    searched = run_train(TrainConfig(method="saq-gen", budget="lut=6585,fps=1e6", **common), tmp_path / "a",
                         progress=False)
    monkeypatch.undo()
    assert searched["search"]["precision"] == {f"features.{i}": 2 for i in (2, 6, 10, 14)} and calls
    plain = run_train(TrainConfig(method="saq", **common), tmp_path / "b", progress=False)
    assert [h["loss"] for h in searched["history"]] == [h["loss"] for h in plain["history"]]
    assert searched["test_acc"] == plain["test_acc"]


def test_a_resumed_bmpq_run_goes_on_at_its_map_and_solves_each_epoch_once(tmp_path):
    """A finished 2-epoch run resumed to 3 epochs: it starts at its recorded map (not config.yaml's first one),
    solves after epoch 2 (which the 2-epoch run did not) and repeats no solve."""
    run = tmp_path / "run"
    flags = ["--method", "bmpq", "--wbits", "2", "--abits", "2", "--budget", "lut=13170,fps=1e6", "--threads", "1",
             "--out", str(run), "--no-progress"]
    assert main(["train", *flags, "--epochs", "2"]) == 0
    first = json.loads((run / "metrics.json").read_text())["search"]
    assert main(["train", "--resume", "--epochs", "3", "--out", str(run), "--no-progress"]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert [s["epochs_done"] for s in metrics["search"]["solves"]] == [0, 1, 2]
    assert metrics["search"]["solves"][:2] == first["solves"]
    assert metrics["model_spec"]["precision"] == metrics["search"]["precision"]
