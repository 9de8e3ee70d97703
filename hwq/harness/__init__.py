# SPDX-License-Identifier: BSD-3-Clause
"""The measurement harness, in layers: protocol (framing, parsers) -> transport (pyserial, transcript) -> device
(typed verbs) -> measure (performance, accuracy and energy runs: config, inputs, windows, report, plots). See
``docs/harness.md``.

>>> from hwq.harness import Device
>>> with Device.open("/dev/pts/3") as dut:      # doctest: +SKIP
...     dut.name()
'hwq-emulator'
"""

from hwq.harness.device import Device
from hwq.harness.protocol import InferResult, LoadProgress, ProfileReply, Results
from hwq.harness.transport import SerialTransport

__all__ = ["Device", "InferResult", "LoadProgress", "ProfileReply", "Results", "SerialTransport"]
