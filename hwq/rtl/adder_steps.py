# SPDX-License-Identifier: BSD-3-Clause
"""The open backend's steps for an adder network (``--method adder``): FINN has no adder layer, so none of FINN's
steps run. The QONNX graph is read straight into layers (:mod:`hwq.rtl.adder_import`), checked against qonnx's
execution of the graph, then generated, simulated and synthesised by the open backend's own steps.

The folding is :data:`ADDER_FOLDING` (PE and SIMD, each cut to the largest divisor of the layer's size). A folding
file or a target FPS is not read yet.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from qonnx.core.modelwrapper import ModelWrapper

from hwq.dataflow.driver import Step
from hwq.errors import ConfigError, VerificationError
from hwq.rtl.adder_import import read_adder_chain
from hwq.rtl.config import OpenBuildConfig
from hwq.rtl.generate import generate_verilog
from hwq.rtl.layers import run_layers
from hwq.rtl.mvau_form import layers_in_form
from hwq.rtl.steps import (OpenBuildContext, design_record, sim_inputs, simulate_against_reference,
                           step_place_and_route, step_synth_xilinx, step_synthesise)

StepResult = tuple[ModelWrapper, dict[str, Any]]
#: PE x SIMD of every layer: the digits TFC's RTL_SMALL_FOLDING of the tests (128 cycles per image).
ADDER_FOLDING = {"PE": 4, "SIMD": 8}


def _layers(model: ModelWrapper, ctx: OpenBuildContext) -> list:
    """The adder chain, its integer MVAUs in the build's ``mvau_form`` (the adder MVAUs have no plane form)."""
    chain = read_adder_chain(model, pe=ADDER_FOLDING["PE"], simd=ADDER_FOLDING["SIMD"])
    return list(layers_in_form(chain, ctx.open_config.mvau_form)[0])


def _reference(model: ModelWrapper, ctx: OpenBuildContext) -> tuple[list, np.ndarray, np.ndarray]:
    layers = _layers(model, ctx)
    x = sim_inputs(ctx.images, layers[0].in_elems)
    return layers, x, run_layers(layers, x)


def step_read_adder_layers(model: ModelWrapper, ctx: OpenBuildContext) -> StepResult:
    """Read the QONNX graph into MVAU and adder MVAU layers and a label selector (:data:`ADDER_FOLDING`); reports
    each layer's folding (``layers``)."""
    if ctx.config.folding_file is not None or ctx.config.target_fps is not None:
        raise ConfigError("folding_file / target_fps: an adder network's open build folds every layer by "
                          f"PE={ADDER_FOLDING['PE']}, SIMD={ADDER_FOLDING['SIMD']} for now; give neither")
    convention = ctx.convention()
    if not (np.isclose(convention.scale, 1 / 255, rtol=1e-6, atol=0) and convention.offset == 0):
        raise ConfigError(f"input: an adder network's open build takes pixels / 255, got {convention.to_dict()}")
    report = {layer.name: {**{key: getattr(layer, key.lower()) for key in ("PE", "SIMD")
                              if hasattr(layer, key.lower())},
                           "cycles": layer.cycles, "adder": bool(getattr(layer, "adder", False))}
              for layer in _layers(model, ctx)}
    # no accelerator section (emulate, measure): it describes FINN's HW graph, which an adder build has not
    return model, {"layers": report, "adder_network": True}


def step_check_adder_reference(model: ModelWrapper, ctx: OpenBuildContext) -> StepResult:
    """The layers' NumPy reference against qonnx's execution of the QONNX graph on the test images: the integer
    classifier scores equal, or a VerificationError naming the first image."""
    from hwq.export.scores import qonnx_scores

    layers, x, classes = _reference(model, ctx)
    shape = model.get_tensor_shape(model.graph.input[0].name)[1:]
    scores, _ = qonnx_scores(model, (x / 255.0).astype(np.float32).reshape(len(x), *shape))
    if scores.integer is None:
        raise VerificationError("check_reference: the QONNX graph gives no integer classifier scores to compare")
    ours = run_layers(layers[:-1], x)
    bad = np.flatnonzero((ours != scores.integer).any(axis=1) | (classes[:, 0] != scores.classes()))
    if len(bad):
        raise VerificationError(f"check_reference: NumPy reference differs from qonnx's execution on image {bad[0]}")
    return model, {"reference": {"n": int(len(x)), "passed": True,
                                 "checked": "hwq.rtl.reference == qonnx execution of the QONNX graph (integer "
                                            "classifier scores and classes)"}}


def step_generate_adder_verilog(model: ModelWrapper, ctx: OpenBuildContext) -> StepResult:
    """One Verilog module per layer and the top level ``accel`` (``rtl/accel.v``); reports the ``design``."""
    design = generate_verilog(_layers(model, ctx), ctx.out_dir / "rtl", top="accel",
                              tree_levels_per_stage=ctx.open_config.tree_levels_per_stage)
    return model, {"design": design_record(design, ctx.out_dir)}


def step_simulate_adder(model: ModelWrapper, ctx: OpenBuildContext) -> StepResult:
    """As the open backend's ``simulate``: every test image under random gaps and back-pressure, each output equal
    to the reference (which ``check_reference`` compared with qonnx)."""
    return simulate_against_reference(model, ctx, _reference, "hwq.rtl.reference == qonnx execution")


def adder_open_steps(config: OpenBuildConfig, xilinx: bool) -> list[Step]:
    """The steps of an adder network's open build: read, check, generate, simulate, then synthesis as
    :func:`hwq.rtl.steps.open_steps` chooses it."""
    steps = [Step("read_layers", step_read_adder_layers), Step("check_reference", step_check_adder_reference),
             Step("generate_verilog", step_generate_adder_verilog), Step("simulate", step_simulate_adder)]
    if config.synthesise and (xilinx or config.xilinx_estimate):
        steps.append(Step("synth_xilinx", step_synth_xilinx))
    if config.synthesise and not xilinx:
        steps += [Step("synthesise", step_synthesise), Step("place_and_route", step_place_and_route)]
    return steps
