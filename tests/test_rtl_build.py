# SPDX-License-Identifier: BSD-3-Clause
"""The open backend end to end on the digits TFC-w1a1: generate, simulate bit-exactly, synthesise, manifest."""

from __future__ import annotations

import json

import numpy as np
import pytest
from qonnx.core.modelwrapper import ModelWrapper

from hwq.dataflow.driver import step_checkpoint
from hwq.rtl.build import OpenBuildConfig, run_open_build
from hwq.rtl.layers import layers_from_model, run_layers
from hwq.rtl.steps import finn_execution
from tests.conftest import RTL_SMALL_FOLDING, RTL_UP5K_CYCLES


def test_layers_of_the_folded_graph_compute_what_finn_computes(digits_tfc_build):
    """The NumPy chain of the folded graph equals finn's execution of the abstract HW graph, on random pixels."""
    layers = layers_from_model(ModelWrapper(str(step_checkpoint(digits_tfc_build, "correct_datatypes"))))
    assert [type(layer).__name__ for layer in layers] == ["MVAULayer"] * 4 + ["LabelSelectLayer"]
    x = np.random.default_rng(0).integers(0, 256, (30, layers[0].in_elems))
    software = finn_execution(step_checkpoint(digits_tfc_build, "create_dataflow_partition"), x)
    np.testing.assert_array_equal(software.reshape(-1, 1), run_layers(layers, x))


def test_open_build_on_up5k_is_bit_exact_and_measured(open_build_tfc_up5k):
    m = json.loads((open_build_tfc_up5k / "manifest.json").read_text())
    assert m["status"] == "done" and m["backend"] == "open" and m["board"]["name"] == "icebreaker"
    sim = m["simulation"]
    assert sim["bit_exact"] and sim["n"] == 20 and sim["back_pressure"]["p_stall"] > 0
    assert sim["cycles_per_image"] == sim["folding_bound_cycles"] == RTL_UP5K_CYCLES
    syn, meas = m["synthesis"], m["measured"]
    assert 0 < syn["lut"]["used"] <= syn["lut"]["available"] == 5280
    assert meas["fmax_mhz"] > 12 and meas["fps"] == pytest.approx(meas["fmax_mhz"] * 1e6 / RTL_UP5K_CYCLES)
    assert (open_build_tfc_up5k / "synth" / "design.bin").stat().st_size > 100_000
    assert m["finn_estimate"]["max_cycles"] == RTL_UP5K_CYCLES and "estimate" in m["finn_estimate"]["label"]
    assert (open_build_tfc_up5k / "rtl" / "accel.v").read_text().count("module ") == 6


def test_open_build_config_names_a_wrong_simulator():
    from hwq.errors import ConfigError

    with pytest.raises(ConfigError, match="^simulator 'vcs': expected one of auto, icarus, verilator$"):
        OpenBuildConfig(simulator="vcs")


def test_open_build_for_pynq_z2_on_verilator_is_bit_exact_with_xilinx_estimates(exported_tfc_w1a1, tmp_path):
    """A Xilinx board: generate, simulate on Verilator, synth_xilinx (no place and route); FINN's estimate beside."""
    from hwq.cli import main

    folding = tmp_path / "small_folding.json"
    folding.write_text(json.dumps(RTL_SMALL_FOLDING))
    out = tmp_path / "build-pynq-z2"
    assert main(["build", str(exported_tfc_w1a1), "--backend", "open", "--board", "pynq-z2", "--folding",
                 str(folding), "--out", str(out), "--verify-samples", "20", "--simulator", "verilator",
                 "--no-progress"]) == 0
    m = json.loads((out / "manifest.json").read_text())
    assert m["status"] == "done" and "synthesis" not in m and "measured" not in m
    sim = m["simulation"]
    assert sim["simulator"] == "verilator" and sim["bit_exact"] and sim["n"] == 20
    assert sim["back_pressure"]["p_stall"] > 0 and sim["cycles_per_image"] == sim["folding_bound_cycles"] == 128
    assert m["tool_versions"]["verilator"] == sim["simulator_version"]
    x, finn = m["xilinx_estimate"], m["finn_estimate"]
    assert x["kind"] == "yosys synth_xilinx estimate (no place and route, no timing)" and x["family"] == "xc7"
    assert x["part"] == m["board"]["part"] == "xc7z020clg400-1" and finn["board"] == "pynq-z2"
    assert 0 < x["counts"]["lut"] < x["available"]["lut"] and x["counts"]["ff"] > 0
    assert x["fps"] == pytest.approx(100e6 / 128) and "estimate" in x["fps_label"]
    assert finn["max_cycles"] == 128


@pytest.mark.slow
def test_fastest_folding_on_ecp5_85f(exported_tfc_w1a1, tmp_path):
    """The pynq-z2 fastest folding (8 cycles per image) on the ULX3S: minutes of Yosys and nextpnr."""
    m = run_open_build(exported_tfc_w1a1, OpenBuildConfig(board="ulx3s-85f", out_dir=str(tmp_path / "b")))
    assert m["simulation"]["cycles_per_image"] == 8 and m["measured"]["fps"] > 1e6


def test_n2uq_learned_thresholds_simulate_bit_exact(tmp_path):
    """N2UQ's learned, non-uniform thresholds (absorbed into the MVAUs by FINN) through generation and simulation."""
    from hwq.export import run_export
    from hwq.train import TrainConfig, run_train

    run = tmp_path / "n2uq"
    run_train(TrainConfig(model="tfc", dataset="digits", quant="n2uq", wbits=2, abits=2, epochs=2, lr=0.01), run,
              progress=False)
    run_export(run)
    m = run_open_build(run, OpenBuildConfig(board="ulx3s-85f", synthesise=False, verify_samples=10))
    sim = m["simulation"]
    assert m["status"] == "done" and sim["bit_exact"] and sim["n"] == 10
    assert sim["cycles_per_image"] == sim["folding_bound_cycles"]
    layers = layers_from_model(ModelWrapper(str(step_checkpoint(run / "build-ulx3s-85f", "correct_datatypes"))))
    gaps = [np.diff(layer.thresholds, axis=-1) for layer in layers if getattr(layer, "thresholds", None) is not None]
    assert gaps and any(len(np.unique(g)) > 1 for g in gaps)        # not a uniform quantizer's evenly spaced steps
