# SPDX-License-Identifier: BSD-3-Clause
"""AdderNet layers (Chen et al., CVPR 2020), quantized as the ``adder`` family (``--method adder``).

An adder layer's output is the negative L1 distance between its input and each filter,
``y[o] = -sum_k |x[k] - w[o, k]|``, instead of the dot product. AdderNet trains it with

* the full-precision gradient for the filters, ``dy/dw = x - w`` (not the sign of it), and
* a HardTanh-clipped gradient for the input, ``dy/dx = HT(w - x)`` (``clamp(w - x, -1, 1)``),
* scaled per layer: ``eta * sqrt(k) / ||dL/dw||_2`` times ``dL/dw``, ``k`` the number of filter weights (the
  paper's adaptive learning rate, applied to the gradient as the reference code ``huawei-noah/AdderNet`` does).

Quantized (Nie et al., NeurIPS 2022): ``|x - w|`` has no commutative law with a scale, ``|s_x X - s_w W|`` is not a
multiple of one integer unless ``s_x = s_w``; so the weights of an adder layer are quantized on its input's grid:
``w_q = s * clamp(round(w / s), -Qw, Qw)``, ``s`` the scale of the activation quantizer in front of it (carried by
Brevitas' ``QuantTensor``), ``Qw = 2^(wbits-1) - 1``. Then ``y = -s * sum_k |X - W|``, an integer times ``s``.

>>> x = torch.tensor([[1.0, -2.0]]); w = torch.tensor([[0.5, 0.5], [1.0, -1.0]])
>>> adder_distance(x, w)
tensor([[-3., -1.]])
"""

from __future__ import annotations

import math

import torch
from brevitas.nn import QuantIdentity
from torch import nn

from hwq.errors import ConfigError
from hwq.options import ADDER_OPTIONS
from hwq.quant.brevitas_map import to_injector
from hwq.quant.family import INPUT_SPEC, UniformFamily, register_family

#: Elements of the ``(rows, filters, k)`` difference tensor computed at once (bounds the memory of a convolution).
CHUNK_ELEMENTS = 1 << 24


def adder_distance(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """``-sum_k |x[m, k] - w[o, k]|`` for ``x`` (M, K) and ``w`` (O, K): (M, O). Plain ops (exportable)."""
    return -(x.unsqueeze(-2) - w.unsqueeze(-3)).abs().sum(-1)


def _chunks(m: int, o: int, k: int) -> list[slice]:
    rows = max(1, CHUNK_ELEMENTS // max(1, o * k))
    return [slice(start, min(m, start + rows)) for start in range(0, m, rows)]


class AdderFunction(torch.autograd.Function):
    """``adder_distance`` with AdderNet's gradients: ``x - w`` for the filters (scaled to ``eta * sqrt(k)`` in L2
    norm, the adaptive learning rate), ``HT(w - x)`` for the input."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, w: torch.Tensor, eta: float) -> torch.Tensor:
        ctx.save_for_backward(x, w)
        ctx.eta = eta
        # the same distances as adder_distance without its (M, O, K) difference tensor: about 9x faster on a CNV
        # layer's im2col rows on one CPU thread (the export traces adder_distance's plain ops instead)
        return -torch.cdist(x, w, p=1)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        x, w = ctx.saved_tensors
        grad_x = torch.empty_like(x)
        grad_w = torch.zeros_like(w)
        # full precision: dy/dw = x - w, so dL/dw[o] = sum_m g[m, o] (x[m] - w[o]) = (g^T x)[o] - w[o] sum_m g[m, o]
        grad_w += grad_out.t() @ x - w * grad_out.sum(0).unsqueeze(1)
        for rows in _chunks(len(x), *w.shape):
            diff = w.unsqueeze(0) - x[rows].unsqueeze(1)           # (m, O, K): w - x
            g = grad_out[rows].unsqueeze(-1)                         # (m, O, 1)
            grad_x[rows] = (diff.clamp_(-1, 1) * g).sum(1)           # HardTanh: dy/dx = HT(w - x)
        norm = grad_w.norm(p=2).clamp(min=1e-12)
        grad_w = grad_w * (ctx.eta * math.sqrt(w.numel()) / norm)
        return grad_x, grad_w, None


def adder(x: torch.Tensor, w: torch.Tensor, eta: float) -> torch.Tensor:
    """``-sum |x - w|`` (M, O) with AdderNet's gradients; plain ops while exporting (the same values)."""
    if torch.onnx.is_in_onnx_export() or torch.jit.is_tracing():
        return adder_distance(x, w)
    return AdderFunction.apply(x, w, eta)


def quantize_on_grid(w: torch.Tensor, scale: torch.Tensor, qmax: int) -> torch.Tensor:
    """``scale * clamp(round(w / scale), -qmax, qmax)``, rounding and clamping straight through (the gradient of
    ``w`` passes unchanged, so AdderNet's ``x - w`` pulls a weight outside the grid back in)."""
    v = w / scale
    q = torch.clamp(torch.round(v), -qmax, qmax)
    return (q - v).detach() * scale + w


def input_grid(x) -> tuple[torch.Tensor, torch.Tensor]:
    """``(values, scale)`` of an adder layer's input, which must come from an activation quantizer (one scale)."""
    scale = getattr(x, "scale", None)
    if scale is None or not hasattr(x, "value"):
        raise ConfigError("adder layer: its input must come from an activation quantizer (a Brevitas QuantTensor, "
                          "the adder family's act()), since its weights are quantized on the input's grid")
    if scale.numel() != 1:
        raise ConfigError(f"adder layer: its input has {scale.numel()} scales; the weights need one grid (a "
                          f"per-tensor activation scale)")
    return x.value, scale.detach().reshape(())


class AdderLinear(nn.Module):
    """A fully connected adder layer: ``y[n, o] = -sum_k |x_q[n, k] - w_q[o, k]|`` with ``w_q`` on ``x``'s grid."""

    def __init__(self, in_features: int, out_features: int, bits: int, eta: float) -> None:
        super().__init__()
        self.in_features, self.out_features, self.bits, self.eta = in_features, out_features, bits, eta
        # Weights start spread over the activations' initial range ([-max_val, max_val], max_val = 1).
        self.weight = nn.Parameter(torch.empty(out_features, in_features).uniform_(-1.0, 1.0))

    @property
    def qmax(self) -> int:
        """The largest weight integer: the narrow signed ``bits``-bit grid, ``2^(bits-1) - 1``."""
        return 2 ** (self.bits - 1) - 1

    def quant_weight(self, scale: torch.Tensor) -> torch.Tensor:
        return quantize_on_grid(self.weight, scale, self.qmax)

    def forward(self, x) -> torch.Tensor:
        values, scale = input_grid(x)
        return adder(values, self.quant_weight(scale), self.eta)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bits={self.bits}"


class AdderConv2d(AdderLinear):
    """A convolutional adder layer: every output pixel is the adder distance of its input patch to each filter."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, bits: int, eta: float,
                 stride: int = 1, padding: int = 0) -> None:
        super().__init__(in_channels * kernel_size * kernel_size, out_channels, bits, eta)
        self.in_channels, self.kernel_size, self.stride, self.padding = in_channels, kernel_size, stride, padding

    def forward(self, x) -> torch.Tensor:
        values, scale = input_grid(x)
        if torch.onnx.is_in_onnx_export() or torch.jit.is_tracing():
            return self._exported(values, scale)
        n, _, h, w = values.shape
        k, s, p = self.kernel_size, self.stride, self.padding
        cols = nn.functional.unfold(values, k, padding=p, stride=s)         # (N, C*k*k, L); padding is 0
        out_h, out_w = (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1
        rows = cols.transpose(1, 2).reshape(-1, cols.shape[1])               # (N*L, C*k*k)
        y = adder(rows, self.quant_weight(scale), self.eta)                  # (N*L, O)
        return y.reshape(n, out_h * out_w, -1).transpose(1, 2).reshape(n, -1, out_h, out_w)

    def _exported(self, values: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        """The same values as ONNX can hold them: the patches by a convolution with one-hot kernels (each output
        is one input times 1, exact; ONNX has no im2col), then ``-sum |patch - w|`` over the patch axis."""
        k = self.kernel_size
        eye = torch.eye(self.in_features, dtype=values.dtype).reshape(self.in_features, self.in_channels, k, k)
        patches = nn.functional.conv2d(values, eye, stride=self.stride, padding=self.padding)   # (N, C*k*k, H, W)
        w = self.quant_weight(scale).reshape(1, self.out_features, self.in_features, 1, 1)
        return -(patches.unsqueeze(1) - w).abs().sum(2)


@register_family
class AdderFamily(UniformFamily):
    """Adder layers with weights on their input's grid, uniform k-bit activations that carry their scale.

    As in AdderNet, the first layer (unless ``adder_first``) and the classifier multiply: they are ``uniform``
    layers. Grouped (depthwise) convolutions multiply too.
    """

    name = "adder"
    weight_bits = tuple(range(2, 9))
    act_bits = tuple(range(2, 9))
    declared_options = ADDER_OPTIONS

    def __init__(self, options: dict | None = None) -> None:
        super().__init__(options)
        #: Layers made so far (the first one multiplies unless ``adder_first``).
        self._layers = 0

    def _adder_here(self) -> bool:
        self._layers += 1
        return self._layers > 1 or self._option("adder_first")

    def linear(self, in_features: int, out_features: int, bits: int) -> nn.Module:
        if not self._adder_here():
            return super().linear(in_features, out_features, bits)
        return AdderLinear(in_features, out_features, bits, self._option("adder_eta"))

    def classifier(self, in_features: int, num_classes: int, bits: int) -> nn.Module:
        self._layers += 1
        return super().linear(in_features, num_classes, bits)

    def conv2d(self, in_channels: int, out_channels: int, kernel_size: int, bits: int,
               stride: int = 1, padding: int = 0, groups: int = 1) -> nn.Module:
        if not self._adder_here() or groups != 1:
            return super().conv2d(in_channels, out_channels, kernel_size, bits, stride, padding, groups)
        return AdderConv2d(in_channels, out_channels, kernel_size, bits, self._option("adder_eta"), stride, padding)

    def input_quant(self) -> nn.Module:
        return QuantIdentity(act_quant=to_injector(INPUT_SPEC), return_quant_tensor=True)

    def act(self, bits: int, channels: int) -> nn.Module:
        # The scale travels with the tensor (QuantTensor), so the next adder layer quantizes its weights on it.
        return QuantIdentity(act_quant=to_injector(self.act_spec(bits)), return_quant_tensor=True)
