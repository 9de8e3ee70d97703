# SPDX-License-Identifier: BSD-3-Clause
"""Device side of the harness: the protocol session every device shares (``dut``), the emulated board
(``emulator``), the PYNQ on-board agent (``pynq_agent``). What they share with the host lives outside both packages,
so that ``hwq.device`` and ``hwq.harness`` never import each other: the wire codec (:mod:`hwq.wire`), the build's
accelerator section and functional model (:mod:`hwq.accelerator`, :mod:`hwq.accelerator_model`), the power model
(:mod:`hwq.power_model`); ``BuildModel`` and ``PowerModel`` are re-exported here.

Names are imported on first use, so that the on-board agent, which imports ``hwq.device.dut`` and
``hwq.device.pynq_agent`` on a board's small Python, does not pull in QONNX or the emulator.

>>> from hwq.device import BuildModel, Emulator
>>> emu = Emulator(BuildModel.from_build_dir("runs/tfc-digits/build-pynq-z2")).start()   # doctest: +SKIP
>>> emu.port                                                                              # doctest: +SKIP
'/dev/pts/4'
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "AcceleratorError": "hwq.device.dut", "DutSession": "hwq.device.dut", "Window": "hwq.device.dut",
    "EmulatedAccelerator": "hwq.device.emulator", "Emulator": "hwq.device.emulator",
    "FaultConfig": "hwq.device.emulator", "BuildModel": "hwq.accelerator_model", "VirtualClock": "hwq.device.clock",
    "EmulatedLpm01a": "hwq.device.power", "PowerModel": "hwq.power_model", "PowerTimeline": "hwq.device.power",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'hwq.device' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
