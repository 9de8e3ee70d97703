# SPDX-License-Identifier: BSD-3-Clause
"""Every finn-plus 1.6.1 workaround hwq needs, in one place (see ../shared/docs/FINDINGS.md).

finn-plus expects to be started by its ``finn`` command, which first looks for Vivado's simulator. Used as a
library without Xilinx tools it needs three things, each applied here and undone again:

1. Settings: ``finn.util.settings`` holds a global settings object that the ``finn`` command would create. We
   create one for the duration of a build, with the build's own code-generation folder, and restore the previous
   one afterwards (:func:`finn_session`).
2. The simulator import: ``finn.builder.build_dataflow_steps`` does ``from finn.xsi import SimEngine``, whose lazy
   lookup raises without ``XILINX_VIVADO``. :func:`import_finn_steps` sets ``finn.xsi.SimEngine = None`` only for
   that import and removes it again (nothing in the estimate/codegen steps uses the simulator).
3. Vivado's path: a few estimate routines read ``XILINX_VIVADO`` (e.g. OuterShuffle cycle estimates).
   :func:`finn_session` sets a dummy value only where none is set, and removes it again on exit.

4. Bit-width minimisation of XNOR-popcount layers: finn-plus's ``_minimize_bit_width`` (behind
   ``step_minimize_bit_width_initial`` and ``step_minimize_bit_width``) gives a thresholded popcount a signed
   accumulator range and clips its thresholds to it, so a channel that always fires keeps a negative threshold
   and the HLS MVAU asserts. :func:`minimize_bit_width` is the same sequence of transforms with hwq's
   :class:`~hwq.dataflow.passes.ClampPopcountThresholds` around it (docs/dataflow.md), and a standalone
   Thresholding's thresholds clipped to its integer input range first
   (:class:`~hwq.dataflow.passes_branches.ClipThresholdsToInputRange`: finn-plus asserts non-negative thresholds on
   an unsigned input, e.g. a pool's sum, before its own clipping).

5. Streamlining of padded binary convolutions: finn-plus's ``step_streamline`` converts every bipolar MatMul to
   XNOR-popcount, also a binary depthwise convolution's block-sparse one (whose zeros are not bipolar), and it
   leaves an explicit ``Pad`` node that its ``InferFMPadding`` cannot read (it indexes a fourth ``axes`` input
   that a three-input Pad lacks). :func:`streamline` is the same sequence of transforms with hwq's passes for
   padded binary convolutions between lowering and the XNOR conversion (docs/dataflow.md, "Binary MobileNet").
   It also converts a float ``GlobalAveragePool`` into finn-plus's ``GlobalAccPool`` before the last
   ``Streamline``, which absorbs the ``1/(H*W)`` Mul finn-plus's ``convert_to_hw`` would leave behind, and on a
   graph with a residual ``Add`` or a ``Concat`` runs finn-plus's ``StreamlinePlus`` (scales through forks and
   joins), without its final rounding of the thresholds and with its ``MoveMulPastJoinAdd`` comparing
   per-channel constants without raising (``passes_branches.streamline_plus_unrounded``); docs/dataflow.md,
   "Pools, residual adds, concatenations".
6. Code generation of a VVAU with BINARY (0/1) inputs: finn-plus's ``VVAU_hls.get_template_param_values`` raises
   "True binary (non-bipolar) inputs not yet supported" for any BINARY input outside XNOR mode, although the
   finn-hlslib types it would choose for any other unsigned input (``Slice<ap_uint<1>>`` activations,
   ``Recast<Binary>`` for bipolar weights, ``Identity`` for integer ones) compute exactly what the layer's Python
   execution computes, ``sum_k w_k b_k``. :func:`finn_session` lets that case through, for VVAU only, and puts
   finn-plus's method back on exit (:func:`_vvau_template_params`).
7. Console output: finn-plus's builder steps ``print()`` what they do ("Converting quantized matmul layers...")
   and FINN and qonnx raise Python warnings; finn-plus's own ``build_dataflow`` replaces ``sys.stdout`` for the
   rest of the process. :func:`finn_output_to` sends both to a build's ``build.log`` for the duration of one build
   only, and restores them on exit. It is the one place hwq redirects stdout.

8. HW layers that register only when their module is imported: ``finn.custom_op.fpgadataflow`` registers its
   layers in its ``__init__``, except ``Reshape`` (``reshape.py`` registers itself with ``@register_custom_op``
   and only FINN's conversion passes import it). A HW graph holding a ``Reshape`` (any 28x28 input) then executes
   inside a build but fails elsewhere (the emulated board: "No opset import for domain
   'finn.custom_op.fpgadataflow'"). :func:`import_finn_layers` imports them all; whatever executes a HW graph calls
   it first.
9. Threshold types: finn-plus's ``Thresholding.minimize_weight_bit_width`` picks the smallest type for the
   thresholds' most negative value when it outweighs the largest, so thresholds {-1, 0} (a sign on a k-bit
   shortcut stream whose thresholds all round to -1 or 0) get ``BIPOLAR``, which cannot hold 0, and the build stops
   with "Thresholds can't be expressed with type BIPOLAR". :func:`finn_session` gives that one case ``INT2``
   (holds -2..1) and leaves every other to finn-plus (:func:`_threshold_width`).

10. Streamlining time: finn-plus's ``Streamline`` and ``StreamlinePlus`` (qonnx's ``ComposedTransformation``)
   follow each transformation with qonnx's tidy-ups, which mostly run on a graph they already tidied, and qonnx
   renames tensors one search of the whole graph per tensor; ReActNet's streamlining took 5 to 18 minutes
   (digits). ``step_streamline`` skips a tidy-up on a graph it has returned unchanged before
   (:mod:`hwq.dataflow.fixed_points`, wrapping ``ModelWrapper.transform`` and ``cleanup`` while it runs) and
   renames in one pass (:mod:`hwq.dataflow.fast_renames`, qonnx's ``GiveUniqueTensorNames`` and
   ``GiveReadableTensorNames`` with the same renames); the streamlined graph is the same, byte for byte
   (docs/dataflow.md, "Streamline time").

Nothing here runs at import time. :data:`FORKS` records the finn-plus (and qonnx) code that workarounds 4 to 6, 9
and 10 copy or wrap;
``tests/test_finn_compat.py`` fails, naming the workaround, when an installed finn-plus differs from it.

>>> with finn_session("runs/demo/build-pynq-z2/codegen"):   # doctest: +SKIP
...     steps = import_finn_steps()
...     model = steps.step_tidy_up(model, cfg)
"""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Iterator, TextIO

#: The dummy ``XILINX_VIVADO`` value: it parses as a Vivado version, and no file lies behind it.
DUMMY_VIVADO = "/nonexistent/hwq-no-vivado/2024.2"

_STEPS_MODULE = "finn.builder.build_dataflow_steps"


#: finn-plus modules whose HW layers register only when imported (workaround 8).
SELF_REGISTERING_LAYERS = ("finn.custom_op.fpgadataflow.reshape",)


def import_finn_layers() -> None:
    """Make every FINN HW layer executable by qonnx (workaround 8)."""
    importlib.import_module("finn.custom_op.fpgadataflow")
    for name in SELF_REGISTERING_LAYERS:
        importlib.import_module(name)


def import_finn_steps() -> ModuleType:
    """Import ``finn.builder.build_dataflow_steps`` without Vivado (workaround 2); returns the module."""
    if _STEPS_MODULE in sys.modules:
        return sys.modules[_STEPS_MODULE]
    import finn.xsi

    had = "SimEngine" in vars(finn.xsi)
    previous = vars(finn.xsi).get("SimEngine")
    finn.xsi.SimEngine = None
    try:
        return importlib.import_module(_STEPS_MODULE)
    finally:
        if had:
            finn.xsi.SimEngine = previous
        else:
            del finn.xsi.SimEngine


@contextlib.contextmanager
def keeping_process_output() -> Iterator[None]:
    """Give back ``sys.stdout``, ``sys.stderr`` and the root logger's handlers on exit: FINN's own builder
    (``build_dataflow_cfg``) takes them over for the rest of the process (hwq's build never calls it; scripts
    that run it next to hwq's build do)."""
    import logging
    import sys

    saved = sys.stdout, sys.stderr, logging.getLogger().handlers[:]
    try:
        yield
    finally:
        sys.stdout, sys.stderr = saved[0], saved[1]
        logging.getLogger().handlers[:] = saved[2]


@contextlib.contextmanager
def finn_session(codegen_dir: str | Path) -> Iterator[None]:
    """Run finn-plus transforms with settings whose build folder is ``codegen_dir`` (workarounds 1, 3 and 6).

    The previous global settings, the FINN logger's level and ``VVAU_hls``'s code-generation types (workaround 6)
    are restored on exit, also on error; of ``os.environ`` only the key this session set (``XILINX_VIVADO``, when it
    was unset) is removed again, so the rest of the environment is never cleared, not even for a moment (another
    thread may read it), and what other code sets meanwhile stays.
    """
    from finn.custom_op.fpgadataflow.hls.vectorvectoractivation_hls import VVAU_hls
    from finn.custom_op.fpgadataflow.thresholding import Thresholding
    from finn.interface.settings import FINNSettings
    from finn.util import settings as finn_settings
    from finn.util.logging import log

    codegen_dir = Path(codegen_dir).resolve()
    codegen_dir.mkdir(parents=True, exist_ok=True)
    saved_settings = finn_settings._SETTINGS
    set_vivado = "XILINX_VIVADO" not in os.environ
    saved_level, saved_propagate = log.level, log.propagate
    saved_vvau = vars(VVAU_hls)["get_template_param_values"]
    saved_threshold_width = vars(Thresholding)["minimize_weight_bit_width"]
    try:
        VVAU_hls.get_template_param_values = _vvau_template_params(saved_vvau)  # workaround 6
        Thresholding.minimize_weight_bit_width = _threshold_width(saved_threshold_width)  # workaround 9
        finn_settings._SETTINGS = FINNSettings.init(
            flow_config=codegen_dir / "hwq-flow.yaml", finn_build_dir=str(codegen_dir),
            auto_set_environment_vars=False,
        )
        if set_vivado:
            os.environ["XILINX_VIVADO"] = DUMMY_VIVADO
        log.setLevel("ERROR")  # FINN's own warnings go to build.log via the captured stdout, not the terminal
        log.propagate = False
        yield
    finally:
        finn_settings._SETTINGS = saved_settings
        if set_vivado and os.environ.get("XILINX_VIVADO") == DUMMY_VIVADO:
            del os.environ["XILINX_VIVADO"]
        log.setLevel(saved_level)
        log.propagate = saved_propagate
        VVAU_hls.get_template_param_values = saved_vvau
        Thresholding.minimize_weight_bit_width = saved_threshold_width


@contextlib.contextmanager
def finn_output_to(log: TextIO) -> Iterator[None]:
    """Send what FINN prints (``sys.stdout``) and every Python warning to ``log`` while a build runs (workaround 7).

    A warning becomes a line ``warning: <message>``. ``sys.stdout``, the warning filters and
    ``warnings.showwarning`` are restored on exit, also on error. Enter it inside a progress bar (rich's bar
    redirects stdout itself while it is shown), so that FINN's lines go to the log, not above the bar.

    >>> with open("build.log", "w") as log, finn_output_to(log):     # doctest: +SKIP
    ...     model = import_finn_steps().step_convert_to_hw(model, cfg)
    """
    def to_log(message, category, filename, lineno, file=None, line=None) -> None:
        log.write(f"warning: {message}\n")

    with contextlib.redirect_stdout(log), warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = to_log
        yield


def _vvau_template_params(original):
    """finn-plus's ``VVAU_hls.get_template_param_values``, extended to BINARY (0/1) inputs outside XNOR mode.

    finn-hlslib's ``Slice<ap_uint<1>>`` reads each input bit as the unsigned integer 0 or 1; a ``Recast<Binary>``
    weight multiplies it by +1 (bit 1) or -1 (bit 0) (``interpret.hpp``: ``m_val? b : -b``), an ``Identity``
    (integer) weight by its value. That is the layer's Python execution (``np.matmul`` of the 0/1 inputs with the
    weights), so the generated C++ computes what the bit-exactness gate checked. Every other case is finn-plus's.
    """
    def get_template_param_values(self):
        from qonnx.core.datatype import DataType

        if (self.get_input_datatype(0) == DataType["BINARY"] and not self.get_nodeattr("binaryXnorMode")
                and self.get_input_datatype(1) != DataType["BINARY"]):
            bipolar = self.get_input_datatype(1) == DataType["BIPOLAR"]
            return {"TSrcI": "Slice<ap_uint<1>>", "TWeightI": "Recast<Binary>" if bipolar else "Identity",
                    "TDstI": "Slice<%s>" % self.get_output_datatype().get_hls_datatype_str()}
        return original(self)

    get_template_param_values.__doc__ = original.__doc__
    return get_template_param_values


def _threshold_width(original):
    """finn-plus's ``Thresholding.minimize_weight_bit_width``, with ``INT2`` for integer thresholds {-1, 0}.

    finn-plus chooses ``DataType.get_smallest_possible(-1)`` there, which is ``BIPOLAR`` (no 0) and then raises;
    ``INT2`` is the smallest type that holds both values. Every other case is finn-plus's.
    """
    def minimize_weight_bit_width(self, model, datatype_only=False):
        from qonnx.core.datatype import DataType

        thresholds = model.get_initializer(self.onnx_node.input[1])
        if (not datatype_only and thresholds is not None and thresholds.size
                and not self.get_nodeattr("runtime_writeable_weights") and not self.get_nodeattr("mlo_max_iter")
                and self.get_input_datatype(0).is_integer() and self.get_input_datatype(1).is_integer()
                and thresholds.min() == -1 and thresholds.max() == 0):
            self.set_nodeattr("weightDataType", "INT2")
            model.set_tensor_datatype(self.onnx_node.input[1], DataType["INT2"])
            return DataType["INT2"]
        return original(self, model, datatype_only)

    minimize_weight_bit_width.__doc__ = original.__doc__
    return minimize_weight_bit_width


def vivado_is_real() -> bool:
    """True when ``XILINX_VIVADO`` points at an installed Vivado (not our dummy)."""
    path = os.environ.get("XILINX_VIVADO")
    return bool(path) and path != DUMMY_VIVADO and Path(path).is_dir()


def minimize_bit_width(model, cfg, clamp: Any = None):
    """finn-plus 1.6.1's ``_minimize_bit_width`` (workaround 4), with the popcount ranges corrected.

    The transforms and their order are finn-plus's own, and each line hwq adds ends with ``# hwq``; ``clamp`` (a
    :class:`~hwq.dataflow.passes.ClampPopcountThresholds`, whose ``corrections`` the caller may report) runs
    first, because the HLS MVAU's ``MinimizeWeightBitWidth`` asserts non-negative XNOR thresholds, and again
    right after ``MinimizeAccumulatorWidth``, which re-derives the signed accumulator, so that
    ``RoundAndClipThresholds`` and the threshold-type minimisation see the popcount's range ``0..MW``.
    ``cfg.minimize_bit_width`` is honoured as in finn-plus. (finn-plus's step additionally prepares cppsim when
    that verification is requested; hwq's builds never request it.)
    """
    from finn.transformation.fpgadataflow.minimize_accumulator_width import MinimizeAccumulatorWidth
    from finn.transformation.fpgadataflow.minimize_weight_bit_width import MinimizeWeightBitWidth
    from finn.transformation.streamline.round_thresholds import RoundAndClipThresholds
    from qonnx.transformation.infer_datatypes import InferDataTypes

    from hwq.dataflow.passes import ClampPopcountThresholds
    from hwq.dataflow.passes_branches import ClipThresholdsToInputRange

    clamp = clamp if clamp is not None else ClampPopcountThresholds()
    model = model.transform(ClipThresholdsToInputRange())  # hwq: Thresholding asserts t >= 0 on unsigned inputs
    model = model.transform(clamp)  # hwq
    if cfg.minimize_bit_width:
        model = model.transform(MinimizeWeightBitWidth(), apply_to_subgraphs=True)
        model = model.transform(MinimizeAccumulatorWidth(), apply_to_subgraphs=True)
        model = model.transform(InferDataTypes(), apply_to_subgraphs=True)
    model = model.transform(clamp)  # hwq
    model = model.transform(RoundAndClipThresholds(), apply_to_subgraphs=True)
    model = model.transform(InferDataTypes(), apply_to_subgraphs=True)
    if cfg.minimize_bit_width:
        model = model.transform(MinimizeWeightBitWidth(), apply_to_subgraphs=True)
        model = model.transform(InferDataTypes(), apply_to_subgraphs=True)
    return model


def streamline(model, cfg):
    """finn-plus 1.6.1's ``step_streamline`` (workaround 5), with hwq's passes for padded binary convolutions.

    The transforms and their order are finn-plus's own; each line hwq adds ends with ``# hwq`` (so that
    ``tests/test_finn_compat.py`` can compare the rest with the installed finn-plus). Between lowering the
    convolutions and ``ConvertBipolarMatMulToXnorPopcount`` hwq inserts (all in :mod:`hwq.dataflow.passes`)
    ``AbsorbPadIntoIm2Col`` (an explicit Pad becomes the Im2Col's ``pad_amount``/``pad_value``; then
    ``AbsorbConsecutiveTransposes`` again, for the Transposes the Pad stood between),
    ``ConvertBipolarDepthwiseToBinaryInput``
    (binary depthwise convolutions get 0/1 inputs and become VVAUs rather than XNOR layers) and
    ``check_bipolar_pads``; right after the XNOR conversion, ``BinaryPadsForXnorConvs``. On a network without
    padded binary convolutions (TFC, CNV) none of them changes anything. Before the last ``Streamline``,
    finn-plus's ``InferGlobalAccPoolLayer`` (a float GlobalAveragePool becomes the integer sum and a Mul, which
    that Streamline absorbs into the next thresholds); after it, on a graph that joins two computed tensors
    (:func:`~hwq.dataflow.passes_branches.has_joins`), finn-plus's ``StreamlinePlus``. Neither changes a graph
    without a global pool or a join. After the first ``Streamline``, hwq's ``AbsorbPReluIntoMultiThreshold``
    (ReActNet's RPReLU, :mod:`hwq.dataflow.prelu`; no change without a PRelu). They run inside this one step because the
    XNOR conversion does, and the step keeps its place and name in the flow. (finn-plus's step additionally
    verifies the streamlined model when asked to; hwq's builds never ask.)
    """
    import finn.transformation.streamline.absorb as absorb
    from finn.transformation.streamline import Streamline
    from finn.transformation.fpgadataflow.convert_to_hw.global_acc_pool import InferGlobalAccPoolLayer
    from finn.transformation.streamline.reorder import MakeMaxPoolNHWC
    from qonnx.transformation.bipolar_to_xnor import ConvertBipolarMatMulToXnorPopcount
    from qonnx.transformation.general import RemoveUnusedTensors
    from qonnx.transformation.infer_data_layouts import InferDataLayouts
    from qonnx.transformation.lower_convs_to_matmul import LowerConvsToMatMul

    from hwq.dataflow.passes import (AbsorbPadIntoIm2Col, BinaryPadsForXnorConvs,
                                     ConvertBipolarDepthwiseToBinaryInput, check_bipolar_pads)
    from hwq.dataflow.passes_branches import has_joins, streamline_plus_unrounded
    from hwq.dataflow.prelu import AbsorbPReluIntoMultiThreshold

    model = model.transform(absorb.AbsorbScalarBiasIntoMultiThreshold())
    model = model.transform(Streamline())
    model = model.transform(AbsorbPReluIntoMultiThreshold())          # hwq: RPReLU (its shifts: next Streamline)
    if len(model.get_nodes_by_op_type("Conv")) > 0:
        model = model.transform(LowerConvsToMatMul())
        model = model.transform(MakeMaxPoolNHWC())
        model = model.transform(absorb.AbsorbTransposeIntoMultiThreshold())
        model = model.transform(MakeMaxPoolNHWC())
        model = model.transform(absorb.AbsorbConsecutiveTransposes())
    model = model.transform(AbsorbPadIntoIm2Col())                    # hwq
    model = model.transform(absorb.AbsorbConsecutiveTransposes())     # hwq: the Transposes a Pad stood between
    model = model.transform(ConvertBipolarDepthwiseToBinaryInput())  # hwq
    check_bipolar_pads(model)                                         # hwq
    model = model.transform(ConvertBipolarMatMulToXnorPopcount())
    model = model.transform(BinaryPadsForXnorConvs())                 # hwq
    model = model.transform(InferGlobalAccPoolLayer())                # hwq: its 1/(H*W) Mul into the thresholds
    model = model.transform(absorb.AbsorbConsecutiveTransposes())     # hwq
    model = model.transform(Streamline())
    if has_joins(model):                                              # hwq
        model = model.transform(streamline_plus_unrounded())         # hwq: scales through forks and joins
    model = model.transform(absorb.AbsorbScalarMulAddIntoTopK())
    model = model.transform(InferDataLayouts())
    model = model.transform(RemoveUnusedTensors())
    return model


# --- the finn-plus code the workarounds copy or replace -------------------------------------------------------------
@dataclass(frozen=True)
class Fork:
    """A finn-plus (or qonnx) function that a workaround copies (4, 5, 10) or wraps (6, 9, 10), as it was when the
    workaround was written.

    ``tests/test_finn_compat.py`` hashes the installed finn-plus's function (its syntax tree without the docstring:
    signature, decorators and body, not comments or formatting) and compares it with ``code_hash``, and compares
    the transforms it applies with those of hwq's copy; a finn-plus upgrade that changes either fails that test,
    naming the workaround to revisit. After porting the change, put the new hash here.
    """

    #: ``module:qualname`` in finn-plus (or qonnx).
    upstream: str
    #: The code hash in finn-plus 1.6.1 (qonnx 1.0.0).
    code_hash: str
    #: The workaround (its number in this module's docstring) and hwq's function that replaces or wraps it.
    workaround: str


FORKS = (
    Fork("finn.builder.build_dataflow_steps:step_streamline", "e827261cf257076d",
         "5, hwq.dataflow.finn_compat.streamline"),
    Fork("finn.builder.build_dataflow_steps:_minimize_bit_width", "1c11d833f1967b29",
         "4, hwq.dataflow.finn_compat.minimize_bit_width"),
    Fork("finn.builder.build_dataflow_steps:step_minimize_bit_width_initial", "c31ff2993392bca4",
         "4, hwq.dataflow.finn_compat.minimize_bit_width"),
    Fork("finn.builder.build_dataflow_steps:step_minimize_bit_width", "6530ebf35fcd2b1f",
         "4, hwq.dataflow.finn_compat.minimize_bit_width"),
    Fork("finn.custom_op.fpgadataflow.hls.vectorvectoractivation_hls:VVAU_hls.get_template_param_values",
         "3f21a9f158934a6c", "6, hwq.dataflow.finn_compat._vvau_template_params"),
    Fork("finn.custom_op.fpgadataflow.thresholding:Thresholding.minimize_weight_bit_width", "0cf8aaa791d69c99",
         "9, hwq.dataflow.finn_compat._threshold_width"),
    Fork("finn.transformation.streamline.streamline_plus:StreamlinePlus", "342cf3de6d71f96b",
         "5, hwq.dataflow.passes_branches.streamline_plus_unrounded"),
    Fork("finn.transformation.streamline.reorder:MoveMulPastJoinAdd.are_producers_identical", "15562a7d961b65e1",
         "5, hwq.dataflow.passes_branches.streamline_plus_unrounded"),
    Fork("qonnx.transformation.general:GiveUniqueTensorNames.apply", "e9c2489905480bd0",
         "10, hwq.dataflow.fast_renames._unique_tensor_names"),
    Fork("qonnx.transformation.general:GiveReadableTensorNames.apply", "15f71f126de28d7b",
         "10, hwq.dataflow.fast_renames._readable_tensor_names"),
    Fork("qonnx.core.modelwrapper:ModelWrapper.rename_tensor", "74c08848bcbdbd3a",
         "10, hwq.dataflow.fast_renames._Renamer"),
    Fork("qonnx.core.modelwrapper:ModelWrapper.transform", "240e6381bf0d0ed0",
         "10, hwq.dataflow.fixed_points.skipping_known_fixed_points"),
    Fork("qonnx.core.modelwrapper:ModelWrapper.cleanup", "340908d9879e1be6",
         "10, hwq.dataflow.fixed_points.skipping_known_fixed_points"),
)
