# SPDX-License-Identifier: BSD-3-Clause
"""``hwq cost``'s table: one line per layer, then the totals."""

from __future__ import annotations

from typing import Any


def _bits(row: dict[str, Any]) -> str:
    if row["kind"] == "mvau":
        out = "-" if row["out_bits"] is None else str(row["out_bits"])
        return f"W{row['wbits']} A{row['in_bits']} O{out}"
    return f"A{row['in_bits']}"


def cost_table(result: dict[str, Any]) -> str:
    """The per-layer rows and the totals of a :func:`hwq.cost.model_cost` result."""
    rows = result["layers"]
    width = max(len("layer"), *(len(r["name"]) for r in rows))
    fold = "" if result["fold_board"] == result["board"] else f" for {result['fold_board']}"
    lines = [f"{result['model']} on {result['board']} ({result['part']}), folding: {result['folding_mode']}{fold}",
             f"{'layer':<{width}}  {'kind':<12} {'bits':<11} {'PE':>4} {'SIMD':>5} {'cycles':>9} {'LUT':>8} "
             f"{'BRAM18':>6} {'DSP':>5}"]
    for r in rows:
        lines.append(f"{r['name']:<{width}}  {r['kind'] + (' (rtl)' if r.get('impl') == 'rtl' else ''):<12} "
                     f"{_bits(r):<11} {r.get('PE', '-'):>4} {r.get('SIMD', '-'):>5} {r['cycles']:>9,} "
                     f"{r['lut']:>8,} {r['bram18']:>6} {r['dsp']:>5}")
    t = result["total"]
    lines.append(f"{'total':<{width}}  {'':<12} {'':<11} {'':>4} {'':>5} {t['max_cycles']:>9,} {t['lut']:>8,} "
                 f"{t['bram18']:>6} {t['dsp']:>5}")
    lines.append(f"{t['fps']:,.0f} fps at {t['clock_mhz']:g} MHz (bottleneck {t['bottleneck']}), latency "
                 f"{t['latency_us']:.2f} us; {result['fold_board']} utilisation "
                 f"LUT {100 * t['utilisation']['lut']:.0f} %, BRAM18 {100 * t['utilisation']['bram18']:.0f} %, "
                 f"DSP {100 * t['utilisation']['dsp']:.0f} %"
                 f"{'' if t['fits'] else ' (does not fit)'}")
    if "lut_calibrated" in t:
        c = result["calibration"]
        lines.append(f"calibrated ({c['target']} synthesis): {t['lut_calibrated']:,} LUT (fit error on "
                     f"{c['builds']} build{'s' if c['builds'] != 1 else ''}: max {c['fit_error_max_pct']} %)")
    if "budget" in result:
        budget = ", ".join(f"{k}={v:g}" for k, v in result["budget"].items())
        lines.append(f"budget {budget}: " + ("within" if result["within_budget"] else
                                              "over: " + "; ".join(result["over_budget"])))
    return "\n".join(lines)
