# SPDX-License-Identifier: BSD-3-Clause
"""``--method saq|hero|lns-madam``: a digits TFC-W2A2 trained with each exports and builds with FINN bit-exactly."""

import pytest

from hwq.export import run_export
from hwq.train import TrainConfig, run_train


@pytest.mark.parametrize("method,quant", [("saq", None), ("hero", "uniform"), ("lns-madam", None)])
def test_digits_tfc_w2a2_trained_with_the_method_exports_and_builds_bit_exactly(tmp_path, method, quant):
    from hwq.dataflow import BuildConfig, run_build

    run = tmp_path / method
    config = TrainConfig(method=method, quant=quant, wbits=2, abits=2, epochs=2, lr=0.01, threads=1)
    metrics = run_train(config, run, progress=False)
    assert metrics["config"]["method"] == method and metrics["config"]["quant"] == "uniform"
    assert metrics["test_acc"] > 0.5
    assert run_export(run)["verification"]["passed"]
    manifest = run_build(run, BuildConfig(board="pynq-z2", verify_samples=40), progress=False)
    assert manifest["status"] == "done"
    assert manifest["bit_exact"]["passed"] and manifest["bit_exact"]["n"] == 40
    assert manifest["integer_range"]["passed"]


@pytest.mark.parametrize("method,quant", [("saq", None), ("hero", "uniform")])
def test_a_resumed_run_equals_an_uninterrupted_one(tmp_path, train_then_stop, method, quant):
    """The objectives' second passes draw from the run's random state like the first: a resumed run is the same
    bits. W1A1: a uniform W2A2 run does not resume bit-exactly on main either (its first layer's weight scale
    differs), so it would test that, not the objective. Madam's state round-trips in tests/test_lns_madam.py."""
    import torch

    from hwq.train.checkpoint import load_checkpoint

    config = TrainConfig(method=method, quant=quant, wbits=1, abits=1, epochs=2, threads=1, train_subset=300)
    run_train(config, tmp_path / "straight", progress=False)
    train_then_stop(tmp_path / "resumed", config, stop_after=1)
    run_train(config, tmp_path / "resumed", resume=True, progress=False)
    straight, resumed = (load_checkpoint(tmp_path / name / "model.pt") for name in ("straight", "resumed"))
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)
