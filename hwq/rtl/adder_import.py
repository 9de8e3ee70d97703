# SPDX-License-Identifier: BSD-3-Clause
"""An adder network's QONNX graph read straight into open-backend layers (``MVAULayer``, ``adder=True`` for the
adder layers), without FINN, which has no adder layer to convert it to.

This reads fully connected chains as a ``--method adder`` TFC exports them: an 8-bit input quantizer, then per
layer a ``MatMul`` with quantized weights or an adder layer (``Sub -> Abs -> ReduceSum -> Neg``,
:mod:`hwq.dataflow.adder`), a ``BatchNormalization`` and an activation ``Quant``, and a last ``MatMul`` whose raw
integer accumulators go to a top-1 label selector. A layer's thresholds are found by evaluating its batch norm and
quantizer, in float32 as qonnx does, on every integer accumulator it can produce (its exact range), so the
thresholds give the codes of the graph for each of them. Anything else is an UnsupportedLayerError naming the node.
It is not yet a step of ``hwq build --backend open``.

>>> layers = read_adder_chain(ModelWrapper("runs/adder/model.onnx"), pe=4, simd=8)   # doctest: +SKIP
>>> [l.adder for l in layers[:-1]]                                                      # doctest: +SKIP
[False, True, True, False]
"""

from __future__ import annotations

import numpy as np
from qonnx.custom_op.general.quant import quant
from qonnx.util.basic import get_by_name

from hwq.dataflow.adder import adder_layers
from hwq.export.scores import final_matmul
from hwq.rtl.layers import ElemType, LabelSelectLayer, MVAULayer, UnsupportedLayerError


def _quant_params(model, node) -> tuple[float, int, bool, bool]:
    """(scale, bits, signed, narrow) of a per-tensor, zero-point-free ``Quant`` node."""
    if node is None or node.op_type != "Quant":
        raise UnsupportedLayerError(f"node '{getattr(node, 'name', '?')}': expected a Quant")
    scale, zero, bits = (model.get_initializer(t) for t in node.input[1:4])
    if scale is None or np.size(scale) != 1 or zero is None or float(zero) != 0 or bits is None:
        raise UnsupportedLayerError(f"node '{node.name}' (Quant): expected one constant scale and zero point 0")
    attr = {a: get_by_name(node.attribute, a).i for a in ("signed", "narrow")}
    mode = get_by_name(node.attribute, "rounding_mode")
    if mode is not None and mode.s.decode() != "ROUND":
        raise UnsupportedLayerError(f"node '{node.name}' (Quant): rounds with {mode.s.decode()}; expected ROUND")
    return float(scale), int(bits), bool(attr["signed"]), bool(attr["narrow"])


def _codes_of(model, quant_node) -> tuple[ElemType, float, int]:
    """The integer type of a quantizer's output, its scale and its lowest code."""
    scale, bits, signed, narrow = _quant_params(model, quant_node)
    lo = (-(2 ** (bits - 1)) + int(narrow)) if signed else 0
    return ElemType(bits, signed), scale, lo


def _activation(model, layer_out: str, acc_range: tuple[int, int], step: float, name: str):
    """Thresholds (MH, T) and ActVal mapping each integer accumulator to the code of ``BN -> Quant`` after it."""
    (bn,) = model.find_consumers(layer_out) or [None]
    if bn is None or bn.op_type != "BatchNormalization":
        raise UnsupportedLayerError(f"{name}: expected a BatchNormalization after it")
    gamma, beta, mean, var = (model.get_initializer(t).astype(np.float32) for t in bn.input[1:5])
    eps = np.float32(get_by_name(bn.attribute, "epsilon").f)
    (q,) = model.find_consumers(bn.output[0]) or [None]
    out_type, scale, lowest = _codes_of(model, q)
    _, bits, signed, narrow = _quant_params(model, q)
    acc = np.arange(acc_range[0], acc_range[1] + 1, dtype=np.int64)
    z = (acc.astype(np.float64) * step).astype(np.float32)[:, None]               # (A, 1), the layer's float output
    y = (z - mean) / np.sqrt(var + eps) * gamma + beta                             # (A, MH), float32 as BatchNorm
    codes = np.rint(quant(y, np.float32(scale), np.float32(0), np.float32(bits), signed, narrow, "ROUND")
                    / np.float32(scale)).astype(np.int64)
    if np.any(np.diff(codes, axis=0) < 0):
        raise UnsupportedLayerError(f"{name}: its batch norm decreases on some channel; the MVAU's thresholds count "
                                    f"upwards only")
    levels = 2 ** bits - 1 - int(narrow)
    thr = np.empty((codes.shape[1], levels), dtype=np.int64)
    for k in range(1, levels + 1):                                                 # first acc reaching each level
        reached = codes >= lowest + k
        thr[:, k - 1] = np.where(reached.any(axis=0), acc[np.argmax(reached, axis=0)], acc_range[1] + 1)
    return thr, lowest, out_type, q.output[0]


def read_adder_chain(model, pe: int = 1, simd: int = 1) -> list:
    """The layers of ``model`` (a fully connected ``--method adder`` network), each folded by the largest divisors
    of its size not above ``pe`` / ``simd``, ending with a label selector."""
    adders = {a.nodes[0]: a for a in adder_layers(model)}
    node = model.find_consumers(model.graph.input[0].name)[0]
    in_type, in_scale, _ = _codes_of(model, node)
    tensor, layers = node.output[0], []
    while True:
        users = model.find_consumers(tensor) or []
        if len(users) != 1:
            raise UnsupportedLayerError(f"tensor '{tensor}': expected one consumer, got {len(users)}")
        user = users[0]
        name = f"layer{len(layers)}"
        if user.op_type == "Unsqueeze" and model.find_consumers(user.output[0])[0].name in adders:
            chain = adders[model.find_consumers(user.output[0])[0].name]
            w = model.get_initializer(chain.weight).reshape(-1, model.get_initializer(chain.weight).shape[-1])
            weights = np.rint(w / in_scale).astype(np.int64).T                       # (MW, MH) on the input's grid
            if not np.allclose(weights.T * in_scale, w, rtol=0, atol=1e-6 * max(1.0, float(np.abs(w).max()))):
                raise UnsupportedLayerError(f"node '{chain.nodes[0]}': its weights are not on its input's grid")
            adder, step, out = True, in_scale, chain.output
        elif user.op_type == "MatMul":
            wq = model.find_producer(user.input[1])
            w_scale, b, sg, nr = _quant_params(model, wq)
            w = quant(model.get_initializer(wq.input[0]), np.float32(w_scale), np.float32(0), np.float32(b), sg, nr,
                      "ROUND")
            weights = np.rint(w / w_scale).astype(np.int64)
            adder, step, out = False, in_scale * w_scale, user.output[0]
        else:
            raise UnsupportedLayerError(f"node '{user.name}' ({user.op_type}): not a layer of an adder chain")
        mw, mh = weights.shape
        layer_pe = max(d for d in range(1, min(pe, mh) + 1) if mh % d == 0)
        layer_simd = max(d for d in range(1, min(simd, mw) + 1) if mw % d == 0)
        probe = MVAULayer(name, mw, mh, layer_pe, layer_simd, False, in_type, ElemType(1, False), weights, None,
                          adder=adder)
        after = model.find_consumers(out) or []
        if after and after[0].op_type == "BatchNormalization":
            thr, act_val, out_type, tensor = _activation(model, out, probe.acc_range(), step, name)
            layers.append(MVAULayer(name, mw, mh, layer_pe, layer_simd, False, in_type, out_type, weights, thr,
                                    act_val, adder=adder))
            _, in_scale, _ = _codes_of(model, model.find_producer(tensor))
            in_type = out_type
            continue
        final = final_matmul(model)
        if final is None or final.tensor != out or final.orientation != 1:
            raise UnsupportedLayerError(f"{name}: the last layer must be a MatMul whose scores keep their order up to "
                                        f"the output")
        out_type = ElemType.for_range(*probe.acc_range())                              # the classifier: raw sums
        layers.append(MVAULayer(name, mw, mh, layer_pe, layer_simd, False, in_type, out_type, weights, None,
                                adder=adder))
        layers.append(LabelSelectLayer(f"layer{len(layers)}", mh, 1, out_type, ElemType(8, False)))
        return layers
