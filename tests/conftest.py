# SPDX-License-Identifier: BSD-3-Clause
"""Shared fixtures: small trained (and exported) runs on sklearn digits, made once per test session.

Append new fixtures here; other test files rely on the ones below. A test that writes into a run directory
copies it first (``shutil.copytree``), so the session's runs stay as trained.
"""

from __future__ import annotations

import shutil

import pytest

from hwq.train import TrainConfig, run_train

#: 20 epochs of TFC-w1a1 on digits take a few seconds on 2 cores and reach about 92 % (a test asks for 85 %).
DIGITS_EPOCHS = 20


def _train(tmp_path_factory, name: str, **settings):
    out = tmp_path_factory.mktemp("runs") / name
    # One thread: the fixtures are then the same bits on every machine (and fastest on a loaded one).
    config = TrainConfig(model="tfc", dataset="digits", epochs=DIGITS_EPOCHS, threads=1, **settings)
    run_train(config, out, progress=False)
    return out


def random_bn_statistics(model) -> None:
    """Give an untrained model's BatchNorms random running statistics, so its thresholds are not all alike (the
    builds of untrained networks check the gates on them)."""
    import torch

    for module in model.modules():
        if isinstance(module, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
            module.running_mean.uniform_(-3.3, 3.3)
            module.running_var.uniform_(0.5, 2.0)


@pytest.fixture(scope="session")
def digits_tfc_w1a1(tmp_path_factory):
    """A run directory holding a trained digits TFC-w1a1 (config.yaml, model.pt, metrics.json ...)."""
    return _train(tmp_path_factory, "tfc-w1a1-digits", wbits=1, abits=1)


@pytest.fixture(scope="session")
def digits_tfc_w2a2(tmp_path_factory):
    """A run directory holding a trained digits TFC-w2a2 (learned-scale uniform quantizers)."""
    return _train(tmp_path_factory, "tfc-w2a2-digits", wbits=2, abits=2)


@pytest.fixture(scope="session")
def exported_tfc_w1a1(digits_tfc_w1a1, tmp_path_factory):
    """A copy of ``digits_tfc_w1a1`` after ``hwq export``: model.onnx and export.json are there too."""
    from hwq.export import run_export

    run = tmp_path_factory.mktemp("runs") / "tfc-w1a1-digits-exported"
    shutil.copytree(digits_tfc_w1a1, run)
    run_export(run)
    return run


@pytest.fixture(scope="session")
def trained_tfc_digits(exported_tfc_w1a1):
    """The exported binary digits TFC that the build tests start from (the run directory)."""
    return exported_tfc_w1a1


@pytest.fixture(scope="session")
def digits_tfc_build(exported_tfc_w1a1, tmp_path_factory):
    """A FINN build of ``exported_tfc_w1a1`` for the Pynq-Z2 (the build directory: manifest.json, intermediate/)."""
    from hwq.dataflow import BuildConfig, run_build

    out = tmp_path_factory.mktemp("builds") / "build-pynq-z2"
    run_build(exported_tfc_w1a1, BuildConfig(board="pynq-z2", out_dir=str(out), verify_samples=20), progress=False)
    return out


#: A slow folding of the digits TFC (128 cycles per image) whose accelerator fits an iCE40 UP5K.
RTL_SMALL_FOLDING = {
    "Defaults": {},
    "MVAU_hls_0": {"PE": 4, "SIMD": 8, "ram_style": "auto", "mem_mode": "internal_decoupled"},
    "MVAU_hls_1": {"PE": 4, "SIMD": 16, "ram_style": "auto", "mem_mode": "internal_decoupled"},
    "MVAU_hls_2": {"PE": 4, "SIMD": 16, "ram_style": "auto", "mem_mode": "internal_decoupled"},
    "MVAU_hls_3": {"PE": 2, "SIMD": 16, "ram_style": "auto", "mem_mode": "internal_decoupled"},
    "LabelSelect_hls_0": {"PE": 1},
}


#: The folding of the UP5K build: RTL_SMALL_FOLDING with half the PEs in the hidden layers (256 cycles per image),
#: so the pipelined design keeps a margin on the 5,280 logic cells whatever the trained weights (the small folding
#: itself needs 98-100% of them).
RTL_UP5K_FOLDING = {**RTL_SMALL_FOLDING, **{f"MVAU_hls_{i}": {**RTL_SMALL_FOLDING[f"MVAU_hls_{i}"], "PE": 2}
                                            for i in range(3)}}
RTL_UP5K_CYCLES = 256


def make_unsynthesised_open_build(run_dir, out, board: str, folding: dict):
    """``run_dir``'s open build for ``board`` at ``folding`` into ``out``, generated and simulated (cocotb, 5 test
    images) but not synthesised (``hwq build --backend open --no-synth``): its accelerator section holds the
    bench's cycles at the board clock."""
    import json

    from hwq.cli import main

    folding_file = out.parent / f"{out.name}_folding.json"
    folding_file.write_text(json.dumps(folding))
    assert main(["build", str(run_dir), "--backend", "open", "--board", board, "--folding", str(folding_file),
                 "--out", str(out), "--verify-samples", "5", "--no-synth", "--no-progress"]) == 0
    return out


@pytest.fixture(scope="session")
def open_build_tfc_up5k(exported_tfc_w1a1, tmp_path_factory):
    """``hwq build --backend open --board icebreaker`` of ``exported_tfc_w1a1`` with ``RTL_UP5K_FOLDING``
    (generated, simulated bit-exactly, synthesised for the UP5K): the build directory."""
    import json

    from hwq.cli import main

    out = tmp_path_factory.mktemp("builds") / "build-icebreaker"
    folding = out.parent / "up5k_folding.json"
    folding.write_text(json.dumps(RTL_UP5K_FOLDING))
    assert main(["build", str(exported_tfc_w1a1), "--backend", "open", "--board", "icebreaker", "--folding",
                 str(folding), "--out", str(out), "--verify-samples", "20", "--no-progress"]) == 0
    return out


@pytest.fixture
def train_then_stop(monkeypatch):
    """``train_then_stop(out, config, stop_after)``: run ``config`` but stop right after epoch ``stop_after``'s
    checkpoint is written, as an interrupted run would (the test then resumes it)."""
    from hwq.train import loop

    class Stop(Exception):
        pass

    original = loop.save_checkpoint

    def save_then_maybe_stop(path, state):
        original(path, state)
        if path.name == loop.CHECKPOINT_FILE and state["epoch"] == train_then_stop.stop_after:
            raise Stop

    def train_then_stop(out, config, stop_after: int) -> None:
        train_then_stop.stop_after = stop_after
        monkeypatch.setattr(loop, "save_checkpoint", save_then_maybe_stop)
        try:
            with pytest.raises(Stop):
                run_train(config, out, progress=False)
        finally:
            monkeypatch.setattr(loop, "save_checkpoint", original)

    return train_then_stop


@pytest.fixture(scope="session")
def exported_lqnet_tfc_w2a2(tmp_path_factory):
    """A digits TFC trained for 1 epoch with ``--method lqnet --wbits 2 --abits 2`` and exported (model.onnx,
    export.json): integer MVAU weights ``m^T e`` with a learned 2-value basis per channel."""
    from hwq.export import run_export

    out = tmp_path_factory.mktemp("runs") / "tfc-lqnet-w2a2-digits"
    run_train(TrainConfig(model="tfc", dataset="digits", method="lqnet", wbits=2, abits=2, epochs=1, lr=0.01,
                          threads=1), out, progress=False)
    run_export(out)
    return out
