# SPDX-License-Identifier: BSD-3-Clause
"""hwq: from quantization-aware training to a measured FPGA accelerator.

The pipeline has one subpackage per stage (``train``, ``export``, ...); each stage reads the
previous stage's output directory and writes its own, with a small JSON manifest.
"""

__version__ = "0.1.0"
