# SPDX-License-Identifier: BSD-3-Clause
"""Device side of the harness: the emulated board, and what it shares with the host (the build's HW graph).

>>> from hwq.device import BuildModel, Emulator
>>> emu = Emulator(BuildModel.from_build_dir("runs/tfc-digits/build-pynq-z2")).start()   # doctest: +SKIP
>>> emu.port                                                                              # doctest: +SKIP
'/dev/pts/4'
"""

from hwq.device.emulator import Emulator, FaultConfig
from hwq.device.model import BuildModel, VirtualClock
from hwq.device.power import EmulatedLpm01a, PowerModel, PowerTimeline

__all__ = ["BuildModel", "EmulatedLpm01a", "Emulator", "FaultConfig", "PowerModel", "PowerTimeline", "VirtualClock"]
