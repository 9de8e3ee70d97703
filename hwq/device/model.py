# SPDX-License-Identifier: BSD-3-Clause
"""Old home of the build's functional model; the names live on where they are now defined, so that neither
``hwq.device`` nor ``hwq.harness`` has to import the other:

* :class:`BuildModel` (the HW graph of a build, executed): :mod:`hwq.accelerator_model`, read from the manifest's
  ``accelerator`` section (:mod:`hwq.accelerator`, which also holds :data:`HW_GRAPH_STEPS`);
* :class:`VirtualClock` (the emulated board's timer): :mod:`hwq.device.clock`.
"""

from hwq.accelerator import HW_GRAPH_STEPS
from hwq.accelerator_model import BuildModel
from hwq.device.clock import VirtualClock

__all__ = ["HW_GRAPH_STEPS", "BuildModel", "VirtualClock"]
