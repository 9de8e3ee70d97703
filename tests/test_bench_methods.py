# SPDX-License-Identifier: BSD-3-Clause
"""scripts/bench_methods.py (issue 17's one table): cells, seeds, relative time, unavailable methods, errors."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))

import bench_methods  # noqa: E402

from hwq.methods import METHODS as REGISTERED  # noqa: E402


def _args(tmp_path: Path, *extra: str) -> list[str]:
    return ["--suites", "digits_tfc", "--runs", str(tmp_path / "runs"), "--results", str(tmp_path / "out"),
            "--epochs", "2", "--seeds", "0,1", *extra]


def _run(tmp_path: Path, name: str, accs: list[float], seconds: float = 2.0) -> Path:
    run = tmp_path / "runs" / "digits_tfc" / name
    run.mkdir(parents=True)
    history = [{"epoch": i + 1, "test_acc": a, "seconds": seconds} for i, a in enumerate(accs)]
    (run / "metrics.json").write_text(json.dumps({"history": history, "complete": True,
                                                  "dataset": {"n_train": 1437, "n_test": 360}}))
    return run


def test_table_from_runs_seeds_relative_time_unavailable_and_errors(tmp_path):
    _run(tmp_path, "uniform-w2a2-s0", [0.5, 0.8])
    _run(tmp_path, "uniform-w2a2-s1", [0.5, 0.9])
    lsq = _run(tmp_path, "lsq-w2a2-s0", [0.6, 0.7], seconds=3.0)
    _run(tmp_path, "lsq-w2a2-s1", [0.6], seconds=3.0)                      # cut short: 1 of 2 epochs
    (lsq / "export.json").write_text(json.dumps({"verification": {"passed": True}}))
    (lsq / "build-pynq-z2.failed").mkdir()
    (lsq / "build-pynq-z2.failed" / "manifest.json").write_text(json.dumps({"error": "fold: node 'MatMul_0' | x"}))
    (lsq / "bench-export.log").write_text("exported\n")
    (lsq / "bench-build.log").write_text("failed\n")
    log = tmp_path / "runs" / "digits_tfc" / "n2uq-w2a2-s0.log"
    log.write_text("Traceback ...\nhwq train: error: model_options.x: not an option\n")
    bench_methods.main(_args(tmp_path, "--collect", "--no-timing", "--methods", "uniform,lsq,n2uq,bitat,adder",
                             "--bits", "2"))
    rows = {r["method"]: r for r in json.loads((tmp_path / "out.json").read_text())["rows"]}
    assert rows["uniform"]["test_acc_mean"] == pytest.approx(0.85)
    assert rows["uniform"]["test_acc_std"] == pytest.approx(0.0707, abs=1e-4)
    assert rows["uniform"]["mean_last"] == pytest.approx(0.675)
    assert rows["lsq"]["status"] == "partial" and rows["lsq"]["seeds_complete"] == 1
    assert rows["lsq"]["time_vs_uniform"] == 1.5 and rows["uniform"]["time_vs_uniform"] == 1.0
    assert rows["lsq"]["estimate"] == {"error": "build: fold: node 'MatMul_0' | x"} and rows["lsq"]["export_passed"]
    assert rows["n2uq"]["status"] == "failed" and "not an option" in rows["n2uq"]["reason"]
    assert rows["bitat"]["status"] == "unavailable" and "takes W1 A1" in rows["bitat"]["reason"]
    if "adder" not in REGISTERED:
        assert rows["adder"]["reason"] == "not in this hwq yet (issue 17 open)"
    table = (tmp_path / "out.md").read_text()
    assert "| lsq | W2A2 | 70.00 ± 0.00 (1 of 2 seeds) |" in table and "fold: node 'MatMul_0' &#124; x" in table
    assert (tmp_path / "out.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    (tmp_path / "out.md").unlink()
    bench_methods.main(["--results", str(tmp_path / "out"), "--from-json"])
    assert (tmp_path / "out.md").read_text() == table


def test_update_replaces_only_its_rows_and_refuses_other_settings(tmp_path):
    _run(tmp_path, "uniform-w2a2-s0", [0.5, 0.8])
    _run(tmp_path, "uniform-w2a2-s1", [0.5, 0.9])
    lsq = _run(tmp_path, "lsq-w2a2-s0", [0.6, 0.7])
    _run(tmp_path, "lsq-w2a2-s1", [0.6, 0.7])
    bench_methods.main(_args(tmp_path, "--collect", "--no-timing", "--methods", "uniform,lsq", "--bits", "2"))
    shutil.rmtree(lsq)                                                 # the rerun of one cell, better this time
    _run(tmp_path, "lsq-w2a2-s0", [0.6, 0.95])
    bench_methods.main(_args(tmp_path, "--collect", "--no-timing", "--methods", "lsq", "--bits", "2", "--update",
                             "--note", "rerun"))
    results = json.loads((tmp_path / "out.json").read_text())
    rows = {r["method"]: r for r in results["rows"]}
    assert rows["lsq"]["test_acc_mean"] == pytest.approx(0.825)
    assert rows["uniform"]["test_acc_mean"] == pytest.approx(0.85)
    assert results["updates"][0]["rows"] == [["digits_tfc", "lsq", 2, 2]] and results["updates"][0]["note"] == "rerun"
    assert "Update (rows lsq W2A2): `" in (tmp_path / "out.md").read_text()
    with pytest.raises(SystemExit, match=r"settings differ from the table's \(epochs 2 vs 3\)"):
        bench_methods.main(_args(tmp_path, "--collect", "--no-timing", "--methods", "lsq", "--bits", "2",
                                 "--update", "--epochs", "3"))


def test_every_registered_method_is_a_row():
    """Except the searches (bmpq, saq-gen): they choose their own bits under a budget, not at a W/A cell
    (docs/mixed_precision.md measures them)."""
    from hwq.methods import SEARCH_METHODS

    assert set(REGISTERED) - set(SEARCH_METHODS) <= set(bench_methods.METHODS)


@pytest.mark.slow
def test_a_real_cell_trains_exports_and_builds(tmp_path):
    """uniform W1A1 on digits, 1 epoch, 1 seed: trained, exported, built to FINN's estimates; a rerun reuses it."""
    argv = _args(tmp_path, "--methods", "uniform", "--bits", "1", "--seeds", "0", "--epochs", "1")
    bench_methods.main(argv)
    row = json.loads((tmp_path / "out.json").read_text())["rows"][0]
    assert row["status"] == "complete" and row["export_passed"] and row["estimate"]["bit_exact"]
    assert row["estimate"]["lut"] > 0
    model = tmp_path / "runs" / "digits_tfc" / "uniform-w1a1-s0" / "model.pt"
    before = model.stat().st_mtime_ns
    bench_methods.main(argv)
    assert model.stat().st_mtime_ns == before


def test_a_family_that_is_uniform_at_1_bit_is_not_trained_again_there():
    assert bench_methods.unavailable(bench_methods.Cell("digits_tfc", "noise", 1, 1)).startswith("= uniform W1A1")
    assert bench_methods.unavailable(bench_methods.Cell("digits_tfc", "noise", 2, 2)) is None
    assert "trains W2 and more" in bench_methods.unavailable(bench_methods.Cell("digits_tfc", "lns-madam", 1, 1))


def test_step_times_time_every_cell_in_one_process():
    """Each available cell's model takes training steps here (no runs needed); the table's ratio comes from these."""
    import argparse

    args = argparse.Namespace(data_dir=None, lr=0.02, batch_size=50)
    cells = [bench_methods.Cell("digits_tfc", m, 2, 2) for m in ("uniform", "saq")]
    ms = bench_methods.step_times(args, "digits_tfc", cells, steps=1, warmup=0)
    assert list(ms) == ["uniform-w2a2", "saq-w2a2"] and all(v > 0 for v in ms.values())
