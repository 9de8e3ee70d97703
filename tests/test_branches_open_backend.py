# SPDX-License-Identifier: BSD-3-Clause
"""The networks of tests/test_dataflow_branches.py (global and k x k average pools, a residual add, a channel
concat), trained briefly and exported like ``hwq export``, through the open backend too: FINN's steps (the gate
layer-wise against the QONNX graph), then hwq's Verilog, simulated bit-exactly against the NumPy reference, which
check_reference compared with finn's execution of the HW graph."""

from __future__ import annotations

import pytest
import torch

from hwq.rtl.build import OpenBuildConfig, run_open_build
from tests.test_dataflow_branches import AvgPoolNet, ConcatNet, GlobalPoolNet, ResidualNet, _train, make_run

NETWORKS = {
    "global_average_pool": (lambda: GlobalPoolNet("float"), {"GlobalAccPool"}),
    "average_pool": (AvgPoolNet, {"QuantAvgPool"}),
    "residual": (ResidualNet, {"ElementwiseAdd", "DuplicateStreams"}),
    "concat": (ConcatNet, {"StreamingConcat", "DuplicateStreams"}),
}


@pytest.mark.parametrize("name", list(NETWORKS))
def test_branching_and_pooled_networks_build_on_the_open_backend(name, tmp_path):
    make, expected_layers = NETWORKS[name]
    torch.manual_seed(0)
    run = make_run(_train(make()), tmp_path / "run")
    m = run_open_build(run, OpenBuildConfig(board="ulx3s-85f", verify_samples=3, synthesise=False))
    assert m["status"] == "done", m.get("error")
    assert m["bit_exact"]["passed"] and m["simulation"]["bit_exact"] and m["simulation"]["n"] == 3
    kinds = {layer.split("_")[0] for layer in m["layers"]}
    if name == "average_pool":   # a Pool with Function QuantAvgPool is read as its own layer kind
        kinds |= {"QuantAvgPool"} if any("Pool" in layer for layer in m["layers"]) else set()
    assert expected_layers <= kinds, sorted(m["layers"])
    if name == "residual":
        assert m["design"]["fifos"], "the shortcut of a residual gets a FIFO"
    sim = m["simulation"]   # at the folding bound, give or take the stream blocks' per-image overhead
    assert sim["folding_bound_cycles"] <= sim["cycles_per_image"] <= 1.25 * sim["folding_bound_cycles"]
