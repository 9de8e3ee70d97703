# SPDX-License-Identifier: BSD-3-Clause
"""Plane MVAUs: integer weights as K binary weight planes (``hwq.rtl.planes``), their NumPy reference, the Verilog
block in cocotb + Icarus against it, the form pass, and an lqnet run built in plane form end to end."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from hwq.errors import ConfigError
from hwq.rtl import reference
from hwq.rtl.blocks import mvau_pipeline_stages
from hwq.rtl.generate import generate_verilog
from hwq.rtl.layers import ElemType, MVAULayer, UnsupportedLayerError, run_layers
from hwq.rtl.mvau_form import check_mvau_form, to_plane_form
from hwq.rtl.planes import PlaneDecompositionError, plane_decomposition, plane_weights
from hwq.rtl.simulate import simulate
from tests.test_rtl_blocks import _divisor, _inputs


def _random_planes(rng, k: int, mw: int, mh: int, top: int = 5):
    """A random plane form: a basis of ``k`` values in 1..top per column and random sign planes."""
    basis = np.sort(rng.integers(1, top + 1, (mh, k)), axis=1)
    planes = rng.integers(0, 2, (k, mw, mh))
    return planes, basis


@pytest.mark.parametrize("k", [1, 2, 3, 4])
def test_decomposition_is_exact_on_random_bases_and_planes(k):
    rng = np.random.default_rng(k)
    planes, basis = _random_planes(rng, k, 60, 12)
    w = plane_weights(planes, basis)
    form = plane_decomposition(w, "fc")
    assert np.array_equal(plane_weights(form.planes, form.basis), w)
    assert 1 <= form.k <= k                    # never more planes than the weights were made of
    assert set(np.unique(form.planes)) <= {0, 1} and form.basis.min() >= 0
    assert np.all(np.diff(form.basis, axis=1) >= 0)


def test_the_fewest_planes_and_the_smallest_basis_are_found():
    # levels +-1, +-3 need two planes (1, 2); a column of +-3 only needs one, and gets a zero for the unused plane
    w = np.array([[1, 3], [-3, -3], [3, 3], [-1, 3]])
    form = plane_decomposition(w, "fc")
    assert form.k == 2 and form.basis.tolist() == [[1, 2], [0, 3]]
    assert np.array_equal(form.weights(), w)
    assert plane_decomposition(np.array([[2], [-2]]), "fc").basis.tolist() == [[2]]   # a scaled sign: K=1
    assert plane_decomposition(np.zeros((3, 1), dtype=int), "fc").basis.tolist() == [[0]]


@pytest.mark.parametrize("column, why", [([0, 1, 2], "both parities"),
                                         (list(range(1, 19, 2)), "9 magnitudes"),
                                         ([1, 3, 5, 9, 11, 13, 27, 29], "no basis fits"),
                                         ([1, 3, 7, 9, 11, 13, 1999, 2001], "largest |value| 2001 is beyond")])
def test_a_column_that_is_no_sum_of_planes_is_a_one_line_error_naming_layer_and_column(column, why):
    w = np.stack([np.array([1, -1] * 9)[:len(column)], column], axis=1)
    with pytest.raises(PlaneDecompositionError) as error:
        plane_decomposition(w, "MVAU_hls_2")
    message = str(error.value)
    assert "\n" not in message and message.startswith("MVAU_hls_2: column 1") and why in message
    assert isinstance(error.value, ConfigError)


def test_plane_reference_equals_the_integer_reference():
    rng = np.random.default_rng(3)
    planes, basis = _random_planes(rng, 3, 40, 9)
    x = rng.integers(-8, 8, (25, 40))
    w = plane_weights(planes, basis)
    assert np.array_equal(reference.weight_planes(x, planes, basis), reference.matmul(x, w))
    bad = planes.copy()
    bad[1, 0, 0] ^= 1                          # one flipped plane bit changes the product
    assert not np.array_equal(reference.weight_planes(x, bad, basis), reference.matmul(x, w))


def test_a_layer_checks_its_planes_sum_to_its_weights():
    rng = np.random.default_rng(4)
    planes, basis = _random_planes(rng, 2, 8, 4)
    w = plane_weights(planes, basis)
    layer = MVAULayer("fc", 8, 4, 1, 1, False, ElemType(2, False), ElemType(8, True), w, None,
                      planes=planes, plane_basis=basis)
    x = rng.integers(0, 4, (5, 8))
    assert np.array_equal(run_layers([layer], x), x @ w)
    with pytest.raises(UnsupportedLayerError, match="do not sum"):
        dataclasses.replace(layer, weights=w + 2)
    with pytest.raises(UnsupportedLayerError, match="go together"):
        dataclasses.replace(layer, plane_basis=None)


def random_plane_mvau(rng, in_kind: str, k: int) -> MVAULayer:
    """A random integer MVAU made of ``k`` planes (thresholds, or the raw accumulator), random PE/SIMD, in plane
    form; ``in_kind``: signed (INT3), unsigned (UINT4) or bipolar input elements."""
    mw, mh = int(rng.choice([8, 12, 16, 24])), int(rng.choice([4, 6, 8]))
    pe, simd = _divisor(rng, mh), _divisor(rng, mw)
    in_type = {"signed": ElemType(3, True), "unsigned": ElemType(4, False),
               "bipolar": ElemType(1, False, bipolar=True)}[in_kind]
    planes, basis = _random_planes(rng, k, mw, mh)
    basis[rng.random(basis.shape) < 0.2] = 0       # some planes a channel ignores
    w = plane_weights(planes, basis)
    layer = MVAULayer("pmvau", mw, mh, pe, simd, False, in_type, ElemType(2, True), w, None)
    lo, hi = layer.acc_range()
    if rng.random() < 0.5:
        return dataclasses.replace(layer, out_type=ElemType.for_range(lo, hi), planes=planes, plane_basis=basis)
    thr = np.sort(rng.integers(lo // 4, hi // 4 + 1, (mh, 3)), axis=1)
    return dataclasses.replace(layer, thresholds=thr, act_val=-2, planes=planes, plane_basis=basis)


# signed, unsigned and bipolar inputs; 1-3 planes; random folding, tree depth and back-pressure
@pytest.mark.parametrize("in_kind, k, seed", [("unsigned", 2, 0), ("signed", 2, 1), ("bipolar", 2, 2),
                                              ("signed", 3, 3), ("unsigned", 1, 4), ("bipolar", 3, 5)])
def test_plane_block_matches_reference_with_random_folding(tmp_path, in_kind, k, seed):
    rng = np.random.default_rng(seed)
    layer = random_plane_mvau(rng, in_kind, k)
    every = int(rng.integers(0, 4))
    design = generate_verilog([layer], tmp_path / "rtl", top="dut", tree_levels_per_stage=every)
    assert "plane MVAU" in design.files[0].read_text()
    x = _inputs(rng, layer)
    want = run_layers([layer], x)
    integer = dataclasses.replace(layer, planes=None, plane_basis=None)
    assert np.array_equal(want, run_layers([integer], x))          # the two forms compute the same integers
    result = simulate(design, x, want, tmp_path / "sim", p_gap=0.3, p_stall=0.4, seed=seed)
    assert result["cycles_per_image"] == max(layer.cycles, design.in_beats + 1)


def test_pipelined_plane_trees_add_latency_not_cycles(tmp_path):
    rng = np.random.default_rng(6)
    layer = random_plane_mvau(rng, "unsigned", 2)
    layer = dataclasses.replace(layer, pe=layer.mh, simd=layer.mw)    # one cycle per vector: the deepest trees
    x = _inputs(rng, layer)
    want = run_layers([layer], x)
    runs = {every: simulate(generate_verilog([layer], tmp_path / f"rtl{every}", top="dut",
                                             tree_levels_per_stage=every), x, want, tmp_path / f"sim{every}",
                            p_stall=0.3, seed=6) for every in (0, 1)}
    stages = mvau_pipeline_stages(layer, 1)
    assert stages >= 4                          # 8+ lanes, the subtraction and the scaled sum, each registered
    assert runs[1]["cycles_per_image"] == runs[0]["cycles_per_image"]
    assert runs[1]["latency_cycles"] == runs[0]["latency_cycles"] + stages


def test_form_pass_converts_what_decomposes_and_says_why_not():
    rng = np.random.default_rng(8)
    planes, basis = _random_planes(rng, 2, 8, 8)
    lq = MVAULayer("lq", 8, 8, 2, 4, False, ElemType(2, False), ElemType(8, True), plane_weights(planes, basis), None)
    uniform = MVAULayer("uniform", 8, 4, 2, 4, False, ElemType(8, True), ElemType(8, True),
                        rng.integers(-1, 2, (8, 4)), None)                         # -1, 0, 1: both parities
    xnor = MVAULayer("xnor", 4, 4, 1, 1, True, ElemType(1, False), ElemType(3, False), rng.integers(0, 2, (4, 4)),
                     None)
    graph, report = to_plane_form([lq, uniform, xnor])
    assert report["lq"] == {"form": "planes", "planes": 2} and graph[0].planes is not None
    assert report["uniform"]["form"] == "integer" and report["uniform"]["reason"].startswith("column")
    assert report["xnor"]["form"] == "integer" and "XNOR" in report["xnor"]["reason"]
    assert graph[1] is uniform and graph[2] is xnor
    with pytest.raises(ConfigError, match="mvau_form .*'bits' is not one of integer, planes"):
        check_mvau_form("bits")


def test_mvau_form_is_checked_in_config_and_cli(capsys):
    from hwq.cli import main
    from hwq.rtl.config import OpenBuildConfig

    with pytest.raises(ConfigError) as error:
        OpenBuildConfig(mvau_form="plane")
    assert "\n" not in str(error.value) and "mvau_form" in str(error.value)
    with pytest.raises(SystemExit):
        main(["build", "RUN", "--backend", "open", "--mvau-form", "plane"])
    capsys.readouterr()
    assert main(["build", "RUN", "--mvau-form", "planes"]) == 2
    assert capsys.readouterr().err == "hwq build: error: --mvau-form: only for --backend open\n"


def test_lqnet_run_builds_in_plane_form_and_simulates_bit_exactly(exported_lqnet_tfc_w2a2, tmp_path):
    """``hwq build --backend open --mvau-form planes`` of a W2A2 lqnet run (1 epoch): every MVAU decomposes into
    K = 2 (the weight bits) planes, the plane reference equals finn's execution, and the RTL is bit-exact.
    About 10 s (training 3 s, FINN's steps, generation, 10 images in Icarus; no synthesis)."""
    from qonnx.core.modelwrapper import ModelWrapper

    from hwq.cli import main
    from hwq.dataflow.driver import step_checkpoint
    from hwq.rtl.layers import layers_from_model

    out = tmp_path / "build-planes"
    assert main(["build", str(exported_lqnet_tfc_w2a2), "--backend", "open", "--board", "pynq-z2", "--mvau-form",
                 "planes", "--out", str(out), "--verify-samples", "10", "--stop-step", "simulate",
                 "--no-progress"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    forms = manifest["mvau_form"]["layers"]
    assert len(forms) == 4 and all(f == {"form": "planes", "planes": 2} for f in forms.values())
    assert manifest["reference"]["passed"] and manifest["simulation"]["bit_exact"]
    assert manifest["simulation"]["n"] == 10
    assert manifest["config"]["mvau_form"] == "planes"
    text = (out / manifest["design"]["files"][0]).read_text()
    assert text.count("plane MVAU: 2 binary weight planes") == 4
    # the integers themselves (not the quantizer) give the planes: K is the weight bits, not more
    for layer in layers_from_model(ModelWrapper(str(step_checkpoint(out, "correct_datatypes")))):
        if isinstance(layer, MVAULayer):
            assert layer.weights.max() > 1                 # integer weights m^T e, not +-1
            assert plane_decomposition(layer.weights, layer.name).k == 2


def test_mvaus_without_planes_stay_integer_with_one_warning_line_each(digits_tfc_w2a2, tmp_path, capsys):
    """A uniform W2A2 run's narrow INT2 weights (-1, 0, 1: both parities) have no planes: the build keeps them as
    integer MVAUs and says so, one line per layer naming it and the column."""
    import shutil

    from hwq.cli import main
    from hwq.export import run_export

    run = tmp_path / "uniform"
    shutil.copytree(digits_tfc_w2a2, run)
    run_export(run)
    out = tmp_path / "build"
    capsys.readouterr()
    assert main(["build", str(run), "--backend", "open", "--board", "pynq-z2", "--mvau-form", "planes", "--out",
                 str(out), "--verify-samples", "5", "--stop-step", "read_layers", "--no-progress"]) == 0
    forms = json.loads((out / "manifest.json").read_text())["mvau_form"]["layers"]
    kept = [name for name, f in forms.items() if f["form"] == "integer"]
    warnings = [line for line in capsys.readouterr().err.splitlines() if "--mvau-form planes" in line]
    assert kept and len(warnings) == len(kept)
    for name, line in zip(kept, warnings):
        assert f"{name} stays an integer MVAU: column " in line and "both parities" in line


def test_docstring_examples():
    import doctest

    from hwq.rtl import mvau_form, planes

    for module in (planes, mvau_form, reference):
        assert doctest.testmod(module).failed == 0, module.__name__
