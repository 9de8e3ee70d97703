# SPDX-License-Identifier: BSD-3-Clause
"""scripts/bench_bitat.py end to end on the bundled digits: the table it writes, and --collect on runs cut short."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _bench(tmp_path: Path, *extra: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, str(ROOT / "scripts" / "bench_bitat.py"), "--device", "cpu", "--suites", "digits",
           "--methods", "plain,bitat_no_progressive", "--train-subset", "400", "--runs", str(tmp_path / "runs"),
           "--results", str(tmp_path / "bitat"), "--limit-note", "test", *extra]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=True)


# slow (about 30 s: trains and exports real runs); test_bench_methods.py tests the shared table code
@pytest.mark.slow
def test_bench_writes_a_complete_table_and_collect_marks_unfinished_runs(tmp_path):
    _bench(tmp_path, "--epochs", "1", "--fp-epochs", "1", "--jobs", "2")
    results = json.loads((tmp_path / "bitat.json").read_text())
    suite = results["suites"]["digits"]
    rows = suite["rows"]
    assert list(rows) == ["fp", "plain", "bitat_no_progressive"] and suite["train_subset"] == 400
    assert all(row["complete"] and row["epochs"] == 1 for row in rows.values())
    # the gap is measured from plain (0) to full precision (1)
    assert rows["plain"]["gap_recovered"] == 0.0 and rows["fp"]["gap_recovered"] == 1.0
    fp, plain, other = (rows[m]["test_acc"] for m in ("fp", "plain", "bitat_no_progressive"))
    assert rows["bitat_no_progressive"]["gap_recovered"] == round((other - plain) / (fp - plain), 3)
    for method in rows:  # every run trained on the subset and was evaluated on the whole test set
        metrics = json.loads((tmp_path / "runs" / "digits" / method / "metrics.json").read_text())
        assert metrics["dataset"]["n_train"] == 400 and metrics["dataset"]["n_test"] == 360
    table = (tmp_path / "bitat.md").read_text()
    assert "### tfc on digits, 400 training images" in table and "| plain | " in table
    assert (tmp_path / "bitat.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"  # the per-epoch curves
    (tmp_path / "bitat.md").unlink()
    _bench(tmp_path, "--from-json")  # the table is rewritten from the JSON alone
    assert (tmp_path / "bitat.md").read_text() == table

    # Tabulating the same runs as if 3 epochs had been planned: all are unfinished, and no gap is claimed.
    _bench(tmp_path, "--epochs", "3", "--fp-epochs", "3", "--collect")
    rows = json.loads((tmp_path / "bitat.json").read_text())["suites"]["digits"]["rows"]
    assert not any(row["complete"] for row in rows.values())
    table = (tmp_path / "bitat.md").read_text()
    assert "| 1/3 (unfinished) |" in table and "cut short" in table
    assert all(line.split(" | ")[3] == "-" for line in table.splitlines() if "(unfinished)" in line)
    _bench(tmp_path, "--epochs", "1", "--fp-epochs", "1", "--collect")  # the same runs, tabulated as planned
    assert "tabulated from the runs" in (tmp_path / "bitat.md").read_text()
