# SPDX-License-Identifier: BSD-3-Clause
"""scripts/bench_bitat2.py's table from run folders (no training, no data): gaps, skipped, unfinished, build errors."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))

import bench_bitat2  # noqa: E402


def _tabulate(tmp_path: Path, *extra: str) -> dict:
    bench_bitat2.main(["--runs", str(tmp_path / "runs"), "--results", str(tmp_path / "out"), "--epochs", "2", *extra])
    return json.loads((tmp_path / "out.json").read_text())


def _run(tmp_path: Path, name: str, accs: list[float]) -> Path:
    run = tmp_path / "runs" / name
    run.mkdir(parents=True)
    history = [{"epoch": i + 1, "test_acc": a, "seconds": 1.5} for i, a in enumerate(accs)]
    (run / "metrics.json").write_text(json.dumps({"history": history, "dataset": {"n_train": 40, "n_test": 360}}))
    return run


def test_table_gaps_skipped_unfinished_and_build_errors(tmp_path, monkeypatch):
    monkeypatch.setitem(bench_bitat2.ROWS, "bogus", bench_bitat2.Row("reactnet", "bitat", {"bitat_nonexistent": 1},
                                                                      fp="fp_reactnet"))
    _run(tmp_path, "fp_mobilenet", [0.4, 0.5])
    _run(tmp_path, "plain_mobilenet", [0.1, 0.2])
    _run(tmp_path, "fp_reactnet", [0.5, 0.6])
    _run(tmp_path, "plain_reactnet", [0.3])  # cut short: 1 of 2 epochs
    two_step = _run(tmp_path, "two_step_reactnet", [0.35, 0.45])
    failed = two_step / "build-pynq-z2.failed"
    failed.mkdir()
    (failed / "manifest.json").write_text(json.dumps({"status": "failed", "error": "streamline: node 'Add_3' | x"}))
    (two_step / "bench-export.log").write_text("exported\n")
    (two_step / "bench-build.log").write_text("... failed (exit 1)\n")
    rows_arg = "fp_mobilenet,plain_mobilenet,fp_reactnet,plain_reactnet,two_step_reactnet,bogus"
    results = _tabulate(tmp_path, "--collect", "--rows", rows_arg)
    rows = results["rows"]
    assert rows["two_step_reactnet"]["gap_vs_fp_mobilenet"] == pytest.approx(0.833, abs=1e-3)
    assert rows["two_step_reactnet"]["gap_vs_fp_reactnet"] == pytest.approx(0.625, abs=1e-3)
    assert rows["plain_mobilenet"]["gap_vs_fp_mobilenet"] == 0.0 and rows["fp_mobilenet"]["gap_vs_fp_mobilenet"] == 1.0
    assert rows["two_step_reactnet"]["mean_last"] == pytest.approx(0.40)
    assert rows["plain_reactnet"]["status"] == "unfinished" and rows["plain_reactnet"]["gap_vs_fp_reactnet"] is None
    assert rows["two_step_reactnet"]["estimate"] == {"error": "build: streamline: node 'Add_3' | x"}
    assert rows["bogus"]["status"] == "skipped" and "bitat_nonexistent" in rows["bogus"]["reason"]
    assert rows["fp_reactnet"]["history"][1]["test_acc"] == 0.6  # the per-epoch history is copied
    table = (tmp_path / "out.md").read_text()
    assert "| 1/2 (unfinished) |" in table and "| bogus | reactnet | bitat (bitat_nonexistent=1) | skipped: " in table
    assert "build: streamline: node 'Add_3' &#124; x" in table  # a pipe in an error does not break the table
    assert (tmp_path / "out.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    (tmp_path / "out.md").unlink()
    bench_bitat2.main(["--results", str(tmp_path / "out"), "--from-json"])
    assert (tmp_path / "out.md").read_text() == table


def test_binary_rows_start_from_and_distil_from_their_fp_row(tmp_path):
    args = bench_bitat2.argparse.Namespace(runs=str(tmp_path), epochs=3, seed=0, batch_size=50, data_dir=None, train_subset=500,
                                           fp_lr=5e-3, lr=2e-3, distill_weight=0.5, width=0.25)
    cmd = bench_bitat2.train_command(args, "two_step_reactnet")
    fp = str(tmp_path / "fp_reactnet")
    assert cmd[cmd.index("--init-from") + 1] == fp and cmd[cmd.index("--teacher") + 1] == fp
    assert cmd[cmd.index("--recipe") + 1] == "two-step" and "width=0.25" in cmd
    fp_cmd = bench_bitat2.train_command(args, "fp_mobilenet")
    assert "--init-from" not in fp_cmd and "float_act=\"hardtanh\"" in fp_cmd and fp_cmd[fp_cmd.index("--lr") + 1] == "0.005"


def test_update_adds_rows_and_recomputes_gaps_from_the_whole_table(tmp_path):
    _run(tmp_path, "fp_mobilenet", [0.4, 0.5])
    _run(tmp_path, "plain_mobilenet", [0.1, 0.2])
    _run(tmp_path, "fp_reactnet", [0.5, 0.6])
    _tabulate(tmp_path, "--collect", "--rows", "fp_mobilenet,plain_mobilenet,fp_reactnet")
    later = tmp_path / "later"                                  # a later session: only the new row's run is there
    (later / "runs").mkdir(parents=True)
    _run(later, "two_step_reactnet", [0.35, 0.45])
    bench_bitat2.main(["--runs", str(later / "runs"), "--results", str(tmp_path / "out"), "--epochs", "2",
                       "--collect", "--rows", "two_step_reactnet", "--update", "--limit-note", "the missing row"])
    results = json.loads((tmp_path / "out.json").read_text())
    assert list(results["rows"]) == ["fp_mobilenet", "plain_mobilenet", "fp_reactnet", "two_step_reactnet"]
    assert results["rows"]["two_step_reactnet"]["gap_vs_fp_reactnet"] == pytest.approx(0.625, abs=1e-3)
    assert results["updates"][0]["rows"] == ["two_step_reactnet"]
    assert "Update (rows two_step_reactnet): `" in (tmp_path / "out.md").read_text()
    with pytest.raises(SystemExit, match=r"settings differ from the table's \(epochs 2 vs 3\)"):
        bench_bitat2.main(["--runs", str(later / "runs"), "--results", str(tmp_path / "out"), "--epochs", "3",
                           "--collect", "--rows", "two_step_reactnet", "--update"])
