# SPDX-License-Identifier: BSD-3-Clause
"""The stream layers of a folded HW-layer graph besides MVAUs and sliding windows: standalone thresholds, padding,
global and windowed average pools, and the reshapes that leave the stream as it is.

- ``Thresholding`` (``_hls`` / ``_rtl``): FINN's multithreshold on its own, e.g. the first layer of a network whose
  input is ``2x - 1`` and a low-bit quantizer (the uint8 pixels are thresholded into INT2 or BINARY values).
- ``FMPadding`` (``_hls`` / ``_rtl``): zeros around an NHWC image, before the sliding window of a padded conv.
- ``GlobalAccPool`` (``_hls``): the per-channel sum over all pixels of an image (a global average pool whose 1/N
  FINN leaves to the next layer's thresholds).
- ``Pool`` with ``Function=QuantAvgPool`` (``_hls``): per window the per-channel sum shifted right (Brevitas'
  ``TruncAvgPool2d``, via qonnx ``QuantAvgPool2d``); read by :func:`hwq.rtl.layers_conv.pool_layer`.
- ``Reshape``: FINN's stream is the tensor in row-major order, which a reshape keeps, so it is no layer at all
  (:func:`reshape_layer` returns None). A ``Shuffle`` (FINN's Transpose) reorders elements and is refused.

Like :mod:`hwq.rtl.layers`, a layer holds integers only and runs itself with :mod:`hwq.rtl.reference`; its
Verilog is in :mod:`hwq.rtl.blocks_stream`.

>>> from hwq.rtl.layers import ElemType
>>> pad = FMPaddingLayer("pad", (4, 4), 2, (1, 1, 1, 1), 1, ElemType(1, False))
>>> pad.ofm, pad.out_elems, pad.cycles            # 6x6 pixels of 2 channels, one channel a cycle
((6, 6), 72, 72)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hwq.rtl import reference
from hwq.rtl.layers import ElemType, ElementwiseStream, UnsupportedLayerError, WindowReduction, _elem_type


@dataclass(frozen=True, eq=False)
class ThresholdingLayer(ElementwiseStream):
    """``vectors`` x ``channels`` values thresholded into ``#{t : x >= thr[c, t]} + act_val``, ``pe`` a beat.

    ``thresholds`` is (channels, T), or (1, T) when every channel has the same ones. With ``bipolar`` the output
    is FINN's BIPOLAR type, which a stream carries as one bit (0 = -1, 1 = +1): ``run`` returns those bits.
    """

    name: str
    channels: int
    pe: int
    vectors: int
    in_type: ElemType
    out_type: ElemType
    #: Integer thresholds (channels or 1, T).
    thresholds: np.ndarray
    act_val: int = 0
    bipolar: bool = False

    def run(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x)
        out = reference.thresholds(x.reshape(-1, self.channels), self.thresholds, self.act_val)
        return out.reshape(len(x), -1)


@dataclass(frozen=True, eq=False)
class FMPaddingLayer:
    """Zeros around an H x W x C image (NHWC): ``padding`` rows/columns ``[top, left, bottom, right]`` (FINN's
    order), ``simd`` channels a beat. On a 1-bit stream of bipolar values the 0 written is -1."""

    name: str
    ifm: tuple[int, int]
    channels: int
    padding: tuple[int, int, int, int]
    simd: int
    in_type: ElemType

    @property
    def out_type(self) -> ElemType:
        return self.in_type

    @property
    def ofm(self) -> tuple[int, int]:
        top, left, bottom, right = self.padding
        return self.ifm[0] + top + bottom, self.ifm[1] + left + right

    @property
    def in_elems(self) -> int:
        return self.ifm[0] * self.ifm[1] * self.channels

    @property
    def out_elems(self) -> int:
        return self.ofm[0] * self.ofm[1] * self.channels

    @property
    def out_beat(self) -> int:
        return self.simd

    @property
    def cycles(self) -> int:
        """The folding bound, as FINN counts it: one SIMD-wide output beat a cycle."""
        return self.out_elems // self.simd

    def run(self, x: np.ndarray) -> np.ndarray:
        return reference.fm_padding(x, self.ifm, self.channels, self.padding)


@dataclass(frozen=True, eq=False)
class GlobalAccPoolLayer:
    """The sum over ``pixels`` pixels of each of ``channels`` channels, ``pe`` channels a beat; ``out_type`` holds
    the sum of ``pixels`` extreme inputs (FINN's output type)."""

    name: str
    channels: int
    pixels: int
    pe: int
    in_type: ElemType
    out_type: ElemType

    @property
    def in_elems(self) -> int:
        return self.pixels * self.channels

    @property
    def out_elems(self) -> int:
        return self.channels

    @property
    def out_beat(self) -> int:
        return self.pe

    @property
    def cycles(self) -> int:
        """The folding bound, as FINN counts it: every input beat, then the C / PE output beats."""
        return (self.pixels + 1) * self.channels // self.pe

    def run(self, x: np.ndarray) -> np.ndarray:
        return reference.global_acc_pool(x, self.channels)


@dataclass(frozen=True, eq=False)
class QuantAvgPoolLayer(WindowReduction):
    """Per window of ``window`` pixels x ``channels`` (from a sliding window generator), the sum of each channel
    shifted right by ``shift``; ``windows`` windows per image, ``pe`` channels a cycle."""

    name: str
    channels: int
    window: int
    windows: int
    pe: int
    shift: int
    in_type: ElemType
    out_type: ElemType

    def sum_range(self) -> tuple[int, int]:
        return self.window * self.in_type.lo, self.window * self.in_type.hi

    def run(self, x: np.ndarray) -> np.ndarray:
        return reference.quant_avg_pool(x, self.channels, self.window, self.shift)


# --- readers -------------------------------------------------------------------------------------------------------
def _attrs(node):
    from qonnx.custom_op.registry import getCustomOp

    return getCustomOp(node).get_nodeattr


def _where(node) -> str:
    return f"{node.name} ({node.op_type})"


def _refuse_set(node, attr, names: tuple[str, ...]) -> None:
    """Refuse FINN features the generated block does not have (runtime-writable weights, multi-layer offload)."""
    for key in names:
        try:
            value = attr(key)
        except AttributeError:   # an attribute only the _hls or the _rtl variant has
            continue
        if value:
            raise UnsupportedLayerError(f"{_where(node)}: {key}={value} is not supported by the Verilog generator")


def _divides(node, fold_name: str, fold: int, total_name: str, total: int) -> None:
    if fold < 1 or total % fold:
        raise UnsupportedLayerError(f"{_where(node)}: {fold_name}={fold} must divide {total_name}={total}")


def thresholding_layer(model, node) -> ThresholdingLayer:
    """Read a ``Thresholding`` node (hls or rtl): NumChannels, PE, numSteps, input/output types, ActVal,
    numInputVectors and the thresholds initializer (rounded up to integers: the inputs are integers)."""
    attr = _attrs(node)
    _refuse_set(node, attr, ("runtime_writeable_weights", "mlo_max_iter", "bodies"))
    channels, pe, steps = int(attr("NumChannels")), int(attr("PE")), int(attr("numSteps"))
    _divides(node, "PE", pe, "NumChannels", channels)
    thr = model.get_initializer(node.input[1]) if len(node.input) > 1 else None
    if thr is None:
        raise UnsupportedLayerError(f"{_where(node)}: thresholds are not an initializer")
    thr = np.asarray(thr)
    if thr.ndim != 2 or thr.shape[0] not in (1, channels) or thr.shape[1] != steps or steps < 1:
        raise UnsupportedLayerError(f"{_where(node)}: thresholds of shape {list(thr.shape)}, expected "
                                    f"[{channels} or 1, numSteps={steps}]")
    if not np.all(np.isfinite(thr)):
        raise UnsupportedLayerError(f"{_where(node)}: thresholds are not all finite")
    in_type = _elem_type(attr("inputDataType"), node.name)
    act_val = int(attr("ActVal"))
    out_name = attr("outputDataType")
    bipolar = out_name == "BIPOLAR"
    if bipolar:   # FINN: y = 2 * (#{x >= t} + ActVal) - 1, so one threshold and ActVal 0 give the bit
        if steps != 1 or act_val != 0:
            raise UnsupportedLayerError(f"{_where(node)}: a BIPOLAR output needs numSteps=1 and ActVal=0, "
                                        f"got {steps} and {act_val}")
        out_type = ElemType(1, False)
    else:
        out_type = _elem_type(out_name, node.name)
        if act_val < out_type.lo or act_val + steps > out_type.hi:
            raise UnsupportedLayerError(f"{_where(node)}: outputs {act_val}..{act_val + steps} (ActVal + "
                                        f"numSteps) do not fit {out_name}")
    vectors = int(np.prod(attr("numInputVectors")))
    return ThresholdingLayer(name=node.name, channels=channels, pe=pe, vectors=vectors, in_type=in_type,
                             out_type=out_type, thresholds=reference.integer_thresholds(thr), act_val=act_val,
                             bipolar=bipolar)


def fm_padding_layer(node) -> FMPaddingLayer:
    """Read an ``FMPadding`` node (hls or rtl): ImgDim, Padding, NumChannels, SIMD, inputDataType."""
    attr = _attrs(node)
    _refuse_set(node, attr, ("dynamic_mode",))
    if int(attr("numInputVectors")) != 1:
        raise UnsupportedLayerError(f"{_where(node)}: numInputVectors={attr('numInputVectors')} (only 1 supported)")
    img, pad = [int(v) for v in attr("ImgDim")], [int(v) for v in attr("Padding")]
    if len(img) != 2 or len(pad) != 4 or min(img) < 1 or min(pad) < 0:
        raise UnsupportedLayerError(f"{_where(node)}: ImgDim {img} / Padding {pad}: expected [H, W] and "
                                    f"[top, left, bottom, right] >= 0")
    channels, simd = int(attr("NumChannels")), int(attr("SIMD"))
    _divides(node, "SIMD", simd, "NumChannels", channels)
    return FMPaddingLayer(name=node.name, ifm=(img[0], img[1]), channels=channels, padding=tuple(pad), simd=simd,
                          in_type=_elem_type(attr("inputDataType"), node.name))


def global_acc_pool_layer(node) -> GlobalAccPoolLayer:
    """Read a ``GlobalAccPool`` node: NumChannels, PE, inputDataType, numInputVectors ``[N, H, W]``; the output
    type is FINN's (``get_output_datatype``: the smallest type holding H * W extreme inputs)."""
    from qonnx.custom_op.registry import getCustomOp

    op = getCustomOp(node)
    attr = op.get_nodeattr
    vecs = [int(v) for v in attr("numInputVectors")]
    if len(vecs) != 3 or vecs[0] != 1:
        raise UnsupportedLayerError(f"{_where(node)}: numInputVectors {vecs} (expected [1, H, W])")
    channels, pe = int(attr("NumChannels")), int(attr("PE"))
    _divides(node, "PE", pe, "NumChannels", channels)
    in_type = _elem_type(attr("inputDataType"), node.name)
    out_type = _elem_type(op.get_output_datatype().name, node.name)
    pixels = vecs[1] * vecs[2]
    if pixels * in_type.lo < out_type.lo or pixels * in_type.hi > out_type.hi:
        raise UnsupportedLayerError(f"{_where(node)}: the sums of {pixels} pixels do not fit "
                                    f"{op.get_output_datatype()}")
    return GlobalAccPoolLayer(name=node.name, channels=channels, pixels=pixels, pe=pe, in_type=in_type,
                              out_type=out_type)


def quant_avg_pool_layer(node) -> QuantAvgPoolLayer:
    """Read a ``Pool`` node with ``Function=QuantAvgPool``: Channels, PE, KernelSize, OutImgDims, BatchSize, the
    types, and ``Size`` (the shift the HLS code uses), which must equal the shift of FINN's Python execution
    (:func:`hwq.rtl.reference.quant_avg_pool_shift` of the input and output bit widths)."""
    attr = _attrs(node)
    channels, pe = int(attr("Channels")), int(attr("PE"))
    _divides(node, "PE", pe, "Channels", channels)
    in_type = _elem_type(attr("InputDataType"), node.name)
    out_type = _elem_type(attr("OutputDataType"), node.name)
    if in_type.signed != out_type.signed:
        raise UnsupportedLayerError(f"{_where(node)}: InputDataType {attr('InputDataType')} and OutputDataType "
                                    f"{attr('OutputDataType')} differ in sign")
    window = int(np.prod(attr("KernelSize")))
    shift = reference.quant_avg_pool_shift(in_type.bits, out_type.bits, window)
    if int(attr("Size")) != shift:
        raise UnsupportedLayerError(f"{_where(node)}: Size={attr('Size')} (the HLS shift) differs from the shift "
                                    f"{shift} of FINN's execution for {in_type.bits}-bit sums of {window} "
                                    f"into {out_type.bits} bits")
    lo, hi = window * in_type.lo >> shift, window * in_type.hi >> shift
    if lo < out_type.lo or hi > out_type.hi:
        raise UnsupportedLayerError(f"{_where(node)}: averages {lo}..{hi} do not fit {attr('OutputDataType')}")
    windows = int(np.prod(attr("OutImgDims"))) * int(attr("BatchSize"))
    return QuantAvgPoolLayer(name=node.name, channels=channels, window=window, windows=windows, pe=pe, shift=shift,
                             in_type=in_type, out_type=out_type)


def reshape_layer(model, node) -> None:
    """A ``Reshape`` node: the stream is the tensor in row-major order and a reshape keeps that order, so it
    needs no hardware (None: no layer). Its input and output must hold the same number of elements."""
    from onnx import helper

    # read from the node itself: finn-plus registers its Reshape op only once its module is imported
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    if not {"inp_shape", "out_shape", "dtype"} <= set(attrs):
        raise UnsupportedLayerError(f"{_where(node)}: expected the attributes inp_shape, out_shape and dtype")
    n_in, n_out = int(np.prod(attrs["inp_shape"])), int(np.prod(attrs["out_shape"]))
    if n_in != n_out:
        raise UnsupportedLayerError(f"{_where(node)}: inp_shape holds {n_in} elements, out_shape {n_out}")
    dtype = attrs["dtype"]
    _elem_type(dtype.decode() if isinstance(dtype, bytes) else dtype, node.name)
    return None


def reordering_layer(node) -> None:
    """A ``Shuffle`` (FINN's Transpose as a HW layer, inner or outer): it reorders the stream; refused."""
    raise UnsupportedLayerError(f"{_where(node)}: a transpose reorders the stream's elements; the open backend "
                                f"has no block for it (only reshapes that keep the order are left out)")
