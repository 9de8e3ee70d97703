# SPDX-License-Identifier: BSD-3-Clause
"""The convolutional layers of a folded HW-layer graph (CNV): sliding window generators and max-pool.

FINN lowers a convolution to a ``ConvolutionInputGenerator`` (the sliding window generator, SWG, which turns the
pixel stream into one vector per output pixel) followed by an MVAU with ``numInputVectors`` = the output pixels,
and a max-pool to a depthwise SWG followed by ``Pool`` (``Function=MaxPool``). Like :mod:`hwq.rtl.layers`, a
layer here holds integers only and runs itself with :mod:`hwq.rtl.reference`.

>>> from hwq.rtl.layers import ElemType
>>> swg = SlidingWindowLayer("swg", (32, 32), 3, (3, 3), (1, 1), 1, ElemType(8, False))
>>> swg.ofm, swg.out_elems, swg.cycles          # 30x30 windows of 27 elements, one element a cycle
((30, 30), 24300, 24300)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hwq.rtl import reference
from hwq.rtl.layers import ElemType, UnsupportedLayerError, WindowReduction, _elem_type


@dataclass(frozen=True, eq=False)
class SlidingWindowLayer:
    """KH x KW windows with stride (SH, SW) over an H x W x C image (NHWC), ``simd`` channels per output beat."""

    name: str
    ifm: tuple[int, int]
    channels: int
    kernel: tuple[int, int]
    stride: tuple[int, int]
    simd: int
    in_type: ElemType

    @property
    def out_type(self) -> ElemType:
        return self.in_type

    @property
    def ofm(self) -> tuple[int, int]:
        return tuple((i - k) // s + 1 for i, k, s in zip(self.ifm, self.kernel, self.stride))

    @property
    def window(self) -> int:
        """Pixels per window."""
        return self.kernel[0] * self.kernel[1]

    @property
    def in_elems(self) -> int:
        return self.ifm[0] * self.ifm[1] * self.channels

    @property
    def out_elems(self) -> int:
        return self.ofm[0] * self.ofm[1] * self.window * self.channels

    @property
    def out_beat(self) -> int:
        return self.simd

    @property
    def cycles(self) -> int:
        """The folding bound: one SIMD-wide beat per cycle, in or out, whichever stream is longer."""
        return max(self.in_elems, self.out_elems) // self.simd

    @property
    def buffer_elems(self) -> int:
        """The line buffer's pixels, the pixel being assembled and the pixel word being sent."""
        from hwq.rtl.window import line_buffer_depth   # window.py imports this module

        return (line_buffer_depth(self) + 2) * self.channels

    def run(self, x: np.ndarray) -> np.ndarray:
        return reference.sliding_window(x, self.ifm, self.channels, self.kernel, self.stride)


@dataclass(frozen=True, eq=False)
class PoolLayer(WindowReduction):
    """Max-pool of ``windows`` windows of ``window`` pixels x ``channels`` (from a SWG), ``pe`` channels a cycle."""

    name: str
    channels: int
    window: int
    windows: int
    pe: int
    in_type: ElemType

    @property
    def out_type(self) -> ElemType:
        return self.in_type

    @property
    def buffer_elems(self) -> int:
        """The window being collected, the one being reduced, and its output register."""
        return 3 * self.window * self.channels

    def run(self, x: np.ndarray) -> np.ndarray:
        return reference.max_pool(x, self.channels, self.window)


def _unfolded_stream(node, attr, fold: str, total: str, in_dtype: str, out_dtype: str) -> ElemType:
    """The element type of a layer that passes values through unchanged (sliding window, max pool): the
    ``fold`` attribute must divide ``total``, and the input and output datatypes must be the same."""
    if attr(total) % attr(fold):
        raise UnsupportedLayerError(f"{node.name}: {fold}={attr(fold)} must divide {total}={attr(total)}")
    in_type, out_type = _elem_type(attr(in_dtype), node.name), _elem_type(attr(out_dtype), node.name)
    if in_type != out_type:
        raise UnsupportedLayerError(f"{node.name}: {in_dtype} {attr(in_dtype)} differs from "
                                    f"{out_dtype} {attr(out_dtype)}")
    return in_type


def sliding_window_layer(node) -> SlidingWindowLayer:
    """Read a ``ConvolutionInputGenerator`` node (hls or rtl) of a folded graph."""
    from qonnx.custom_op.registry import getCustomOp

    attr = getCustomOp(node).get_nodeattr
    if list(attr("Dilation")) != [1, 1]:
        raise UnsupportedLayerError(f"{node.name}: Dilation {list(attr('Dilation'))} (only 1 supported)")
    if attr("is1D") or attr("parallel_window"):
        raise UnsupportedLayerError(f"{node.name}: is1D / parallel_window are not supported")
    channels, simd = attr("IFMChannels"), attr("SIMD")
    in_type = _unfolded_stream(node, attr, "SIMD", "IFMChannels", "inputDataType", "outputDataType")
    layer = SlidingWindowLayer(name=node.name, ifm=tuple(attr("IFMDim")), channels=channels,
                               kernel=tuple(attr("ConvKernelDim")), stride=tuple(attr("Stride")), simd=simd,
                               in_type=in_type)
    if list(layer.ofm) != list(attr("OFMDim")):
        raise UnsupportedLayerError(f"{node.name}: OFMDim {list(attr('OFMDim'))} implies padding "
                                    f"(without padding it is {list(layer.ofm)})")
    return layer


def pool_layer(node) -> PoolLayer:
    """Read a ``Pool`` node (hls) with ``Function=MaxPool`` (``QuantAvgPool``: :mod:`hwq.rtl.layers_stream`)."""
    from qonnx.custom_op.registry import getCustomOp

    attr = getCustomOp(node).get_nodeattr
    if attr("Function") == "QuantAvgPool":
        from hwq.rtl.layers_stream import quant_avg_pool_layer

        return quant_avg_pool_layer(node)
    if attr("Function") != "MaxPool":
        raise UnsupportedLayerError(f"{node.name}: Pool Function {attr('Function')} (only MaxPool and "
                                    f"QuantAvgPool supported)")
    channels, pe = attr("Channels"), attr("PE")
    in_type = _unfolded_stream(node, attr, "PE", "Channels", "InputDataType", "OutputDataType")
    windows = int(np.prod(attr("OutImgDims"))) * int(attr("BatchSize"))
    return PoolLayer(name=node.name, channels=channels, window=int(np.prod(attr("KernelSize"))), windows=windows,
                     pe=pe, in_type=in_type)
