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
   :func:`finn_session` sets a dummy value only where none is set, and restores the environment on exit.

4. Bit-width minimisation of XNOR-popcount layers: finn-plus's ``_minimize_bit_width`` (behind
   ``step_minimize_bit_width_initial`` and ``step_minimize_bit_width``) gives a thresholded popcount a signed
   accumulator range and clips its thresholds to it, so a channel that always fires keeps a negative threshold
   and the HLS MVAU asserts. :func:`minimize_bit_width` is the same sequence of transforms with hwq's
   :class:`~hwq.dataflow.passes.ClampPopcountThresholds` around it (docs/dataflow.md).

Nothing here runs at import time.

>>> with finn_session("runs/demo/build-pynq-z2/codegen"):   # doctest: +SKIP
...     steps = import_finn_steps()
...     model = steps.step_tidy_up(model, cfg)
"""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
from pathlib import Path
from types import ModuleType
from typing import Any, Iterator

#: The dummy ``XILINX_VIVADO`` value: it parses as a Vivado version, and no file lies behind it.
DUMMY_VIVADO = "/nonexistent/hwq-no-vivado/2024.2"

_STEPS_MODULE = "finn.builder.build_dataflow_steps"


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
def finn_session(codegen_dir: str | Path) -> Iterator[None]:
    """Run finn-plus transforms with settings whose build folder is ``codegen_dir`` (workarounds 1 and 3).

    The previous global settings, ``os.environ`` and the FINN logger's level are restored on exit, also on error.
    """
    from finn.interface.settings import FINNSettings
    from finn.util import settings as finn_settings
    from finn.util.logging import log

    codegen_dir = Path(codegen_dir).resolve()
    codegen_dir.mkdir(parents=True, exist_ok=True)
    saved_settings = finn_settings._SETTINGS
    saved_env = dict(os.environ)
    saved_level, saved_propagate = log.level, log.propagate
    try:
        finn_settings._SETTINGS = FINNSettings.init(
            flow_config=codegen_dir / "hwq-flow.yaml", finn_build_dir=str(codegen_dir),
            auto_set_environment_vars=False,
        )
        os.environ.setdefault("XILINX_VIVADO", DUMMY_VIVADO)
        log.setLevel("ERROR")  # FINN's own warnings go to build.log via the captured stdout, not the terminal
        log.propagate = False
        yield
    finally:
        finn_settings._SETTINGS = saved_settings
        os.environ.clear()
        os.environ.update(saved_env)
        log.setLevel(saved_level)
        log.propagate = saved_propagate


def vivado_is_real() -> bool:
    """True when ``XILINX_VIVADO`` points at an installed Vivado (not our dummy)."""
    path = os.environ.get("XILINX_VIVADO")
    return bool(path) and path != DUMMY_VIVADO and Path(path).is_dir()


def minimize_bit_width(model, cfg, clamp: Any = None):
    """finn-plus 1.6.1's ``_minimize_bit_width`` (workaround 4), with the popcount ranges corrected.

    The transforms and their order are finn-plus's own; ``clamp`` (a
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

    clamp = clamp if clamp is not None else ClampPopcountThresholds()
    model = model.transform(clamp)
    if cfg.minimize_bit_width:
        model = model.transform(MinimizeWeightBitWidth(), apply_to_subgraphs=True)
        model = model.transform(MinimizeAccumulatorWidth(), apply_to_subgraphs=True)
        model = model.transform(InferDataTypes(), apply_to_subgraphs=True)
    model = model.transform(clamp)
    model = model.transform(RoundAndClipThresholds(), apply_to_subgraphs=True)
    model = model.transform(InferDataTypes(), apply_to_subgraphs=True)
    if cfg.minimize_bit_width:
        model = model.transform(MinimizeWeightBitWidth(), apply_to_subgraphs=True)
        model = model.transform(InferDataTypes(), apply_to_subgraphs=True)
    return model
