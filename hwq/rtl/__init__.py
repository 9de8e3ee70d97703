# SPDX-License-Identifier: BSD-3-Clause
"""The open synthesis backend: Verilog generation, cocotb simulation and Yosys/nextpnr synthesis (docs/rtl.md).

>>> from hwq.rtl import run_open_build                                       # doctest: +SKIP
>>> run_open_build("runs/tfc-digits", OpenBuildConfig(board="ulx3s-85f"))["measured"]["fps"]   # doctest: +SKIP
"""

from hwq.rtl.generate import Design, generate_verilog
from hwq.rtl.graph import LayerGraph, Source
from hwq.rtl.layers import layers_from_model, run_layers

__all__ = ["Design", "LayerGraph", "Source", "generate_verilog", "layers_from_model", "run_layers"]
