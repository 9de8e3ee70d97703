# SPDX-License-Identifier: BSD-3-Clause
"""Vendor-tool steps (HLS synthesis, stitched IP, bitfile, driver): found tools run them, missing ones skip them.

Detection looks at ``PATH`` and the Xilinx environment variables; a skipped step gets a one-line reason that the
build prints and records in ``manifest.json``, never silence.

>>> status = vendor_status("zynq")                       # doctest: +SKIP
>>> status["hls_synthesis"]
{'status': 'skipped', 'reason': 'vitis_hls not found (looked on PATH and in $XILINX_HLS)'}
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from hwq.dataflow.finn_compat import vivado_is_real

#: step -> the tools it needs, per shell kind.
VENDOR_STEPS = {
    "hls_synthesis": {"zynq": ("vitis_hls",), "alveo": ("vitis_hls",)},
    "stitched_ip": {"zynq": ("vitis_hls", "vivado"), "alveo": ("vitis_hls", "vivado")},
    "bitfile": {"zynq": ("vitis_hls", "vivado"), "alveo": ("vitis_hls", "vivado", "v++")},
    "driver": {"zynq": ("vitis_hls", "vivado"), "alveo": ("vitis_hls", "vivado", "v++")},
}
_ENV = {"vitis_hls": "XILINX_HLS", "vivado": "XILINX_VIVADO", "v++": "XILINX_VITIS"}


def find_tool(tool: str) -> str | None:
    """Path of a vendor tool: on ``PATH``, or under ``$XILINX_*/bin``; None when absent."""
    found = shutil.which(tool)
    if found:
        return found
    env = os.environ.get(_ENV[tool])
    if env and (tool != "vivado" or vivado_is_real()):
        candidate = Path(env) / "bin" / tool
        if candidate.is_file():
            return str(candidate)
    return None


def vendor_status(shell: str) -> dict[str, dict[str, str]]:
    """For each vendor step: ``{"status": "ready"}`` or ``{"status": "skipped", "reason": ...}``."""
    status = {}
    for step, needs in VENDOR_STEPS.items():
        missing = [t for t in needs[shell] if find_tool(t) is None]
        if missing:
            why = (f"{' and '.join(missing)} not found (looked on PATH and in "
                   f"{', '.join('$' + _ENV[t] for t in missing)})")
            status[step] = {"status": "skipped", "reason": why}
        else:
            status[step] = {"status": "ready"}
    return status
