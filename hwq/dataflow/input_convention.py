# SPDX-License-Identifier: BSD-3-Clause
"""What a QONNX graph expects as input, and how the accelerator's uint8 pixel stream becomes it.

The device always receives ``uint8`` pixels ``p``. A graph trained elsewhere expects a float input ``x``; the
*input convention* says how the two relate: ``x = p * scale + offset``. Found on the graph (or given by the user):

======================  ==========================  =================================================================
kind                    x                           where it comes from
======================  ==========================  =================================================================
``pixels``              ``p``                       the graph input is annotated ``UINT8`` (FINN's own flow prepends
                                                    ``x / 255`` itself and annotates the input)
``pixels/255``          ``p / 255``                 the default: a float input in [0, 1] (torchvision's ToTensor, hwq's
                                                    own models), whatever follows it: hwq's 8-bit input quantizer,
                                                    or ``2x - 1`` then a binary, 2-bit or Q1.7 quantizer as FINN's
                                                    reference networks (Brevitas ``bnn_pynq``) do
``user``                ``p * scale + offset``      ``--input-scale`` / ``--input-offset``
======================  ==========================  =================================================================

The graph must quantize its input before computing with it: from the graph input, through elementwise scalings
by constants (``Mul``, ``Div``, ``Add``, ``Sub``) and reshapes, to a ``Quant``, ``BipolarQuant`` or FINN
``MultiThreshold``. Then FINN's streamlining folds ``p * scale + offset`` and the scalings into the thresholds of
the input quantizer, and the accelerator computes on integers from its first layer. A graph whose input reaches
anything else first (a float MatMul, a Conv) cannot be mapped exactly: :func:`find_input_convention` refuses it
in one line that says what it found.

:class:`UseUint8Input` is the graph pass the build's first step applies; the bit-exactness gate feeds the user's
graph ``convention.graph_input(pixels)``, what it was made for.

>>> conv = InputConvention("pixels/255", 1 / 255, 0.0, "BipolarQuant 'q_in' after Mul, Sub")
>>> float(conv.graph_input(np.array([0, 255], dtype=np.uint8))[1])
1.0
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from onnx import helper
from qonnx.core.datatype import DataType
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.custom_op.registry import getCustomOp
from qonnx.transformation.base import Transformation

from hwq.dataflow.errors import MappingError

PIXELS, PIXELS_255, USER = "pixels", "pixels/255", "user"
#: Nodes that may stand between the graph input and its quantizer: they keep values elementwise (reshapes) or
#: scale them by a constant, which streamlining folds into the quantizer's thresholds.
PASS_THROUGH = ("Reshape", "Flatten", "Transpose", "Identity", "Squeeze", "Unsqueeze")
SCALINGS = ("Mul", "Div", "Add", "Sub")
QUANTIZERS = ("Quant", "BipolarQuant", "MultiThreshold")


@dataclass(frozen=True)
class InputConvention:
    """``x = pixels * scale + offset`` reaches ``quantizer`` (a description: op type, node name, the path)."""

    kind: str
    scale: float
    offset: float
    quantizer: str

    def graph_input(self, pixels: np.ndarray) -> np.ndarray:
        """What the graph expects for ``pixels`` (uint8, any shape), as float32."""
        x = np.asarray(pixels, dtype=np.float64) * self.scale + self.offset
        return x.astype(np.float32)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "formula": self.formula, "scale": self.scale, "offset": self.offset,
                "quantizer": self.quantizer}

    @property
    def formula(self) -> str:
        if self.kind == PIXELS:
            return "x = pixels"
        if self.kind == PIXELS_255:
            return "x = pixels / 255"
        return f"x = pixels * {self.scale:g} + {self.offset:g}"


def _node_label(node) -> str:
    return f"{node.op_type} '{node.name}'" if node.name else node.op_type


def _constant_input(model: ModelWrapper, node, flowing: str) -> np.ndarray | None:
    other = [i for i in node.input if i != flowing]
    if len(other) != 1:
        return None
    return model.get_initializer(other[0])


def input_path(model: ModelWrapper) -> tuple[list, Any]:
    """The nodes from the graph input to its quantizer (exclusive) and the quantizer node.

    Raises a MappingError naming what the input reaches when it is not quantized first."""
    graph_in = model.graph.input[0].name
    tensor, path = graph_in, []
    while True:
        consumers = model.find_consumers(tensor) or []
        if len(consumers) != 1:
            found = ", ".join(_node_label(n) for n in consumers) or "no node"
            raise MappingError(f"graph input '{graph_in}'{_through(path)} feeds {found}; expected one chain to an "
                               f"input quantizer ({'/'.join(QUANTIZERS[:2])})")
        node = consumers[0]
        if node.op_type in QUANTIZERS:
            return path, node
        const = _constant_input(model, node, tensor) if node.op_type in SCALINGS else None
        if node.op_type in PASS_THROUGH or const is not None:  # an affine map by a constant: into thresholds
            path.append(node)
            tensor = node.output[0]
            continue
        raise MappingError(
            f"graph input '{graph_in}'{_through(path)} reaches {_node_label(node)} before any quantizer: the "
            f"accelerator takes uint8 pixels and computes on integers from its first layer, so the input must be "
            f"quantized first (a Quant or BipolarQuant, optionally after scaling by constants such as x/255 or "
            f"2x - 1), or annotated UINT8")


def _through(path: list) -> str:
    return f" (through {', '.join(_node_label(n) for n in path)})" if path else ""


def find_input_convention(model: ModelWrapper, scale: float | None = None,
                          offset: float | None = None) -> InputConvention:
    """The convention of ``model``'s input (see the module doc); ``scale``/``offset`` are the user's, if given."""
    graph_in = model.graph.input[0].name
    path, quant = input_path(model)
    described = f"{_node_label(quant)}" + (f" after {', '.join(n.op_type for n in path)}" if path else "")
    if scale is not None or offset is not None:
        return InputConvention(USER, 1.0 if scale is None else float(scale), 0.0 if offset is None else float(offset),
                               described)
    if model.get_tensor_datatype(graph_in) == DataType["UINT8"]:
        return InputConvention(PIXELS, 1.0, 0.0, described)
    return InputConvention(PIXELS_255, 1.0 / 255.0, 0.0, described)


def is_hwq_input_quantizer(model: ModelWrapper, node, convention: InputConvention) -> bool:
    """hwq's own input: an unsigned 8-bit Quant with scale 1/255 and zero point 0 straight on ``pixels / 255``,
    which is the identity on those values (so it becomes a plain ``Mul(1/255)``)."""
    if node.op_type != "Quant" or convention.kind != PIXELS_255 or node.input[0] != model.graph.input[0].name:
        return False
    scale, zero, bits = (model.get_initializer(node.input[i]) for i in (1, 2, 3))
    return (scale is not None and zero is not None and bits is not None and np.size(scale) == 1
            and not getCustomOp(node).get_nodeattr("signed") and int(bits) == 8 and float(zero) == 0.0
            and np.isclose(float(scale), 1.0 / 255.0, rtol=1e-6))


class UseUint8Input(Transformation):
    """Make the graph take uint8 pixels: annotate its input UINT8 and put ``pixels * scale + offset`` in front.

    hwq's own 8-bit input quantizer (the identity on ``pixels / 255``) is replaced by the ``Mul`` alone; any other
    input quantizer stays and becomes thresholds on the pixels when FINN streamlines. An input already annotated
    UINT8 (kind ``pixels``) is left as it is.
    """

    def __init__(self, convention: InputConvention) -> None:
        super().__init__()
        self.convention = convention

    def apply(self, model: ModelWrapper) -> tuple[ModelWrapper, bool]:
        conv, graph_in = self.convention, model.graph.input[0].name
        if model.get_tensor_datatype(graph_in) == DataType["UINT8"] and (conv.scale, conv.offset) == (1.0, 0.0):
            return model, False
        _, quant = input_path(model)
        if is_hwq_input_quantizer(model, quant, conv):   # Quant(p / 255) == p / 255 for integer p
            self._scale_into(model, graph_in, quant.output[0], index=list(model.graph.node).index(quant))
            model.graph.node.remove(quant)
        else:
            scaled = model.make_new_valueinfo_name()
            for consumer in model.find_consumers(graph_in):
                consumer.input[list(consumer.input).index(graph_in)] = scaled
            model.set_tensor_shape(scaled, model.get_tensor_shape(graph_in))
            self._scale_into(model, graph_in, scaled, index=0)
        model.set_tensor_datatype(graph_in, DataType["UINT8"])
        return model, False

    def _scale_into(self, model: ModelWrapper, src: str, dst: str, index: int) -> None:
        """Insert ``dst = src * scale (+ offset)`` at ``index``."""
        conv = self.convention
        nodes = []
        scale = model.make_new_valueinfo_name()
        model.set_initializer(scale, np.asarray(conv.scale, dtype=np.float32))
        if conv.offset == 0.0:
            nodes.append(helper.make_node("Mul", [src, scale], [dst], name="hwq_input_scale"))
        else:
            mid, offset = model.make_new_valueinfo_name(), model.make_new_valueinfo_name()
            model.set_initializer(offset, np.asarray(conv.offset, dtype=np.float32))
            model.set_tensor_shape(mid, model.get_tensor_shape(src))
            nodes += [helper.make_node("Mul", [src, scale], [mid], name="hwq_input_scale"),
                      helper.make_node("Add", [mid, offset], [dst], name="hwq_input_offset")]
        for i, node in enumerate(nodes):
            model.graph.node.insert(index + i, node)
