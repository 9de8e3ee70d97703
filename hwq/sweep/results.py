# SPDX-License-Identifier: BSD-3-Clause
"""A sweep's results: one row per point (``sweep.csv``, ``sweep.json``) and the Pareto fronts of accuracy
against LUTs and against frames per second, per board (``pareto-<board>.png``), dominated points marked."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import hwq
from hwq import manifest as records
from hwq.sweep.spec import Point, SweepSpec

#: The columns of ``sweep.csv``, in order.
COLUMNS = ("point", "status", "error", "model", "dataset", "method", "wbits", "abits", "precision", "backend",
           "board", "budget", "accuracy", "qonnx_accuracy", "bit_exact", "lut", "bram18", "dsp", "fps",
           "within_budget", "lut_front", "fps_front", "seconds", "run_dir")


def row(spec: SweepSpec, point: Point) -> dict[str, Any]:
    """The point's row: its settings and what its record holds (empty where it did not get that far)."""
    from hwq.sweep.runner import POINT_FILE, point_dir

    directory = point_dir(spec, point)
    record = records.read(directory / POINT_FILE) or {}
    train, build = point.recipe["train"], point.recipe.get("build") or {}
    budget = point.budget
    out: dict[str, Any] = {
        "point": point.id, "status": record.get("status", "not run"), "error": record.get("error", ""),
        "model": train.get("model", "tfc"), "dataset": train.get("dataset", "digits"),
        "method": train.get("method") or train.get("quant", "uniform"), "wbits": train.get("wbits", 1),
        "abits": train.get("abits", 1), "precision": "mixed" if train.get("precision") else "uniform",
        "backend": build.get("backend", "finn") if build else "", "board": build.get("board", "pynq-z2") if build
        else "", "budget": ",".join(f"{k}={v:g}" for k, v in budget.items()) if budget else "",
        "seconds": record.get("seconds"), "run_dir": str(directory)}
    results = record.get("results") or {}
    accuracy = results.get("accuracy") or {}
    estimated = results.get("estimated") or {}
    out.update(accuracy=accuracy.get("pytorch_test"), qonnx_accuracy=accuracy.get("qonnx_verified_subset"),
               bit_exact=results.get("bit_exact"), lut=estimated.get("LUT"), bram18=estimated.get("BRAM_18K"),
               dsp=estimated.get("DSP"), fps=estimated.get("fps"))
    open_build = results.get("build") or {}
    if open_build.get("backend") == "open" and open_build.get("lut") is not None:  # the synthesized numbers
        out.update(lut=open_build["lut"], fps=open_build.get("fps"), board=open_build.get("board", out["board"]))
    out["within_budget"] = _within_budget(out, budget)
    return out


def _within_budget(row_: dict[str, Any], budget: dict[str, float] | None) -> bool | None:
    if budget is None or row_["lut"] is None:
        return None
    if "lut" in budget:
        return row_["lut"] <= budget["lut"]
    return row_["fps"] is not None and row_["fps"] >= budget["fps"]


def pareto_front(rows: list[dict[str, Any]], cost: str, higher_is_better: bool = False) -> set[str]:
    """The points no other point dominates: at least as accurate and at least as cheap (``cost``, or as fast
    when ``higher_is_better``), and better in one of the two. Rows without accuracy or cost take no part."""
    def better_or_equal(a, b):
        return a >= b if higher_is_better else a <= b

    scored = [r for r in rows if r["accuracy"] is not None and r[cost] is not None]
    front = set()
    for r in scored:
        dominated = any(o is not r and o["accuracy"] >= r["accuracy"] and better_or_equal(o[cost], r[cost])
                        and (o["accuracy"] > r["accuracy"] or o[cost] != r[cost]) for o in scored)
        if not dominated:
            front.add(r["point"])
    return front


def write_results(spec: SweepSpec, points: list[Point], seconds: float, workers: int | None,
                  address: str | None) -> dict[str, Any]:
    """Write ``sweep.json``, ``sweep.csv`` and the plots; returns the ``sweep.json`` record."""
    out = Path(spec.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = [row(spec, p) for p in points]
    for board in sorted({r["board"] for r in rows}):
        on_board = [r for r in rows if r["board"] == board]
        lut_front, fps_front = pareto_front(on_board, "lut"), pareto_front(on_board, "fps", higher_is_better=True)
        for r in on_board:
            scored = r["accuracy"] is not None and r["lut"] is not None
            r["lut_front"] = r["point"] in lut_front if scored else None
            r["fps_front"] = r["point"] in fps_front if scored else None
    plots = [plot_pareto(out, board, [r for r in rows if r["board"] == board])
             for board in sorted({r["board"] for r in rows if r["lut"] is not None})]
    with (out / "sweep.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, COLUMNS)
        writer.writeheader()
        writer.writerows({k: ("" if r.get(k) is None else r.get(k)) for k in COLUMNS} for r in rows)
    counts = {status: sum(r["status"] == status for r in rows) for status in ("done", "failed", "not run")}
    record = records.start("sweep", {"name": spec.name, "source": spec.source, "out_dir": spec.out_dir,
                                     "workers": workers,
                                     "address": address}, {"sweep": spec.source}, {"hwq": hwq.__version__})
    record["outputs"] = {"csv": "sweep.csv", **{f"pareto_{Path(p).stem[7:]}": Path(p).name for p in plots}}
    record["results"] = {"points": len(rows), **counts, "wall_seconds": seconds}
    record["rows"] = rows
    if counts["failed"] or counts["not run"]:
        records.fail(record, out / "sweep.json", RuntimeError(f"{counts['failed']} of {len(rows)} points failed"))
    else:
        records.finish(record, out / "sweep.json")
    return record


def plot_pareto(out: Path, board: str, rows: list[dict[str, Any]]) -> str:
    """Accuracy against LUTs and against fps on one board: the front joined and labelled, dominated points grey."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, cost, label, front_key in ((axes[0], "lut", "LUT (FINN estimate)", "lut_front"),
                                       (axes[1], "fps", "frames/s", "fps_front")):
        scored = [r for r in rows if r["accuracy"] is not None and r[cost] is not None]
        front = sorted((r for r in scored if r.get(front_key)), key=lambda r: r[cost])
        rest = [r for r in scored if not r.get(front_key)]
        ax.scatter([r[cost] for r in rest], [100 * r["accuracy"] for r in rest], color="0.6", label="dominated")
        ax.plot([r[cost] for r in front], [100 * r["accuracy"] for r in front], "o-", color="C0",
                label="Pareto front")
        for r in scored:
            ax.annotate(r["point"].rsplit("-", 1)[0], (r[cost], 100 * r["accuracy"]), fontsize=7,
                        xytext=(3, 3), textcoords="offset points")
        ax.set_xscale("log")
        ax.set_xlabel(label)
        ax.set_ylabel("test accuracy %")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"sweep points on {board}")
    fig.tight_layout()
    path = out / f"pareto-{board}.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return str(path)


def read_results(out_dir: str | Path) -> dict[str, Any] | None:
    """A sweep's ``sweep.json`` (None when there is none)."""
    path = Path(out_dir) / "sweep.json"
    return json.loads(path.read_text()) if path.exists() else None
