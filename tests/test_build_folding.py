# SPDX-License-Identifier: BSD-3-Clause
"""Honest folding: the default is the fastest folding FINN's SetFolding reaches that fits the board (checked
against every reachable folding), and a missed --target-fps is a warning and a manifest field."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from qonnx.core.modelwrapper import ModelWrapper

from hwq.boards import load_board
from hwq.dataflow import STEPS, BuildConfig, estimates, run_build
from hwq.dataflow.driver import step_checkpoint
from hwq.dataflow.finn_compat import finn_session

_NAMES = [name for name, _ in STEPS]
UP_TO_SPECIALIZE = STEPS[:_NAMES.index("specialize_layers") + 1]
UP_TO_FOLD = STEPS[:_NAMES.index("fold") + 1]


@pytest.fixture(scope="module")
def mnist_tfc(tmp_path_factory):
    """An untrained TFC-w1a1 with MNIST's 784 inputs (the folding depends on the shapes, not on the weights), as
    a run directory, and its specialised HW graph. No export.json (no training run): built with force=True;
    the gate, which would need MNIST images, is not among the steps."""
    import torch

    from hwq._io import write_json
    from hwq.export import export_qonnx_model
    from hwq.models import ModelSpec, build_model

    torch.manual_seed(0)
    run = tmp_path_factory.mktemp("runs") / "tfc-mnist-shape"
    run.mkdir()
    export_qonnx_model(build_model(ModelSpec("tfc", 1, 1, image_shape=(1, 28, 28))).eval(), run / "model.onnx")
    write_json(run / "metrics.json", {"config": {"dataset": "mnist"}})   # its images: the calibration file below
    np.savez(run / "images.npz", images=np.zeros((1, 1, 28, 28), np.uint8))  # for the input checks only
    m = run_build(run, BuildConfig(force=True, verify_samples=1, out_dir=str(run / "hw"),
                                   calibration=str(run / "images.npz")), progress=False, steps=UP_TO_SPECIALIZE)
    return run, ModelWrapper(str(run / "hw" / m["steps"][-1]["onnx"]))


def _fastest_fitting_by_exhaustion(points, board, fit_fraction):
    return min(p.max_cycles for p in points if estimates.fits(estimates.estimate(p.model, board), fit_fraction))


def test_default_folding_is_the_fastest_that_fits_not_a_power_of_two(mnist_tfc, tmp_path):
    _, model = mnist_tfc
    board = load_board("pynq-z2")
    with finn_session(tmp_path / "codegen"):
        points = estimates.lattice(model, board)
        assert {128, 98, 64} <= {p.max_cycles for p in points}   # 784 inputs: 98 = 784 / 8 is reachable
        found = estimates.fold_fastest_fitting(model, board, 0.8)
        assert found.max_cycles == _fastest_fitting_by_exhaustion(points, board, 0.8) == 98
        assert found.fps == pytest.approx(100e6 / 98) and estimates.fits(found.summary, 0.8)
        # the old search over powers of two stopped at 128 cycles (781,250 fps): 64 does not fit
        assert estimates.fits(estimates.fold_to_cycles(model, board, 128).summary, 0.8)
        assert not estimates.fits(estimates.fold_to_cycles(model, board, 64).summary, 0.8)


@pytest.mark.parametrize("board_name", ["pynq-z2", "zcu104"])
def test_search_agrees_with_every_reachable_folding(digits_tfc_build, tmp_path, board_name):
    model = ModelWrapper(str(step_checkpoint(digits_tfc_build, "specialize_layers")))
    board = load_board(board_name)
    with finn_session(tmp_path / "codegen"):
        points = estimates.lattice(model, board)
        assert len(points) > 10 and all(a.max_cycles > b.max_cycles for a, b in zip(points, points[1:]))
        for fit_fraction in (0.03, 0.05, 0.1, 0.2, 0.5, 0.8):
            found = estimates.fold_fastest_fitting(model, board, fit_fraction)
            assert found.max_cycles == _fastest_fitting_by_exhaustion(points, board, fit_fraction), fit_fraction


def test_no_folding_fits_names_what_is_missing(digits_tfc_build, tmp_path):
    from hwq.dataflow.errors import FoldingError

    model = ModelWrapper(str(step_checkpoint(digits_tfc_build, "specialize_layers")))
    with finn_session(tmp_path / "codegen"), pytest.raises(FoldingError) as err:
        estimates.fold_fastest_fitting(model, load_board("pynq-z2"), 0.01)
    assert re.fullmatch(r"no folding fits 1 % of pynq-z2, even fully folded \(4,096 cycles per frame\): "
                        r"needs 1,\d{3} LUT, may use 532 \(1 % of 53,200\): over by \d+ %; "
                        r"needs \d+ BRAM18, may use 2 \(1 % of 280\): over by \d+ %", str(err.value)), str(err.value)


def test_missed_target_fps_is_a_warning_and_a_manifest_field(mnist_tfc, capsys):
    run, _ = mnist_tfc
    images = str(run / "images.npz")
    m = run_build(run, BuildConfig(board="zcu104", target_fps=3_000_000, force=True, verify_samples=1,
                                   out_dir=str(run / "zcu"), calibration=images), progress=False, steps=UP_TO_FOLD)
    folding = m["folding"]
    assert folding["target_fps"] == 3_000_000 and folding["met"] is False and folding["fits"]
    assert folding["max_cycles"] == 49 and round(folding["achieved_fps"]) == 2_040_816
    err = capsys.readouterr().err
    assert ("warning: --target-fps 3e+06 not met on zcu104: the fastest folding FINN's SetFolding reaches for it "
            "gives 2,040,816 fps (49 cycles per frame at 100 MHz, bottleneck MVAU_hls_0)") in err
    met = run_build(run, BuildConfig(board="zcu104", target_fps=1_000_000, force=True, verify_samples=1,
                                     out_dir=str(run / "zcu"), calibration=images), progress=False,
                    steps=UP_TO_FOLD)["folding"]
    assert met["met"] is True and met["achieved_fps"] >= 1_000_000
    assert json.loads((run / "zcu" / "manifest.json").read_text())["folding"] == met


def test_a_lut_budget_gives_the_fastest_folding_within_it(digits_tfc_build, tmp_path):
    from hwq.dataflow.errors import FoldingError

    model = ModelWrapper(str(step_checkpoint(digits_tfc_build, "specialize_layers")))
    board = load_board("pynq-z2")
    with finn_session(tmp_path / "codegen"):
        points = estimates.lattice(model, board)
        luts = sorted({p.summary["total"]["LUT"] for p in points})
        for budget in (luts[1], luts[len(luts) // 2], luts[-1] - 1):
            found = estimates.fold_fastest_fitting(model, board, 0.8, max_lut=budget)
            within = [p.max_cycles for p in points if estimates.fits(p.summary, 0.8) and
                      p.summary["total"]["LUT"] <= budget]
            assert found.summary["total"]["LUT"] <= budget and found.max_cycles == min(within), budget
        with pytest.raises(FoldingError, match=rf"no folding fits 80 % of pynq-z2 and {luts[0] - 1:,} LUT "
                                               rf"\(--max-lut\), even fully folded .*: needs {luts[0]:,} LUT, the "
                                               rf"budget \(--max-lut\) is {luts[0] - 1:,}$"):
            estimates.fold_fastest_fitting(model, board, 0.8, max_lut=luts[0] - 1)
    with pytest.raises(Exception, match=r"max_lut \(--max-lut\): expected an integer >= 1, got 0"):
        BuildConfig(max_lut=0)
