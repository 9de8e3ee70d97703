# SPDX-License-Identifier: BSD-3-Clause
"""SSQL's pieces (Cao et al., "Synergistic Self-supervised and Quantization Learning", ECCV 2022): precision views of
a model, the two augmented views of a batch, the projection/prediction head and the SimSiam loss of SSQL.

A *precision view* runs the model's own layers with other quantizers than its Brevitas ones, for the duration of a
``with`` block and without touching the model: forward hooks on the Brevitas quantizer proxies replace what each one
returns, computed from what it was given, so the family (``uniform``, ``lsq``, ...) is unchanged and the deployed
network is exactly the one the run's ``--wbits/--abits`` describe.

* ``bits=None`` (full precision): a weight is its latent value; an activation is clipped to its quantizer's range
  (the range of the learned grid: a quantizer without rounding; the network keeps its non-linearity).
* ``bits=(wb, ab)``: a weight is fake-quantized to ``wb`` bits, symmetric per tensor with step ``max|w| / (2^(wb-1)
  - 1)`` (a min-max observer per step, as the reference code recalibrates each step); an activation to ``ab`` bits
  uniformly over its quantizer's range. Straight-through rounding in both.

The 8-bit input quantizer (``hwq_input_quant``) is left as it is in both views (SSQL keeps the first layer at 8 bits).
Layers that hand over QuantTensors (``return_quant_tensor``) hand over plain tensors inside the block.

>>> round(ssql_loss([torch.ones(2, 3)] * 2, [torch.ones(2, 3)] * 2, [torch.ones(2, 3)] * 2).item(), 6)
-1.0
"""

from __future__ import annotations

import contextlib
from typing import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from hwq.quant.views import quantizer_views


def _ste(x: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """``q`` forward, the gradient of ``x`` backward."""
    return x + (q - x).detach()


def fake_quant_weight(w: torch.Tensor, bits: int) -> torch.Tensor:
    """Symmetric per-tensor ``bits``-bit weights (narrow grid ``[-(2^(b-1)-1), 2^(b-1)-1]``, step from max|w|)."""
    top = 2 ** (bits - 1) - 1
    step = w.detach().abs().max().clamp_min(1e-12) / top
    return _ste(w, torch.round(w / step).clamp(-top, top) * step)


def fake_quant_range(x: torch.Tensor, low: torch.Tensor, high: torch.Tensor, bits: int) -> torch.Tensor:
    """``x`` clipped to ``[low, high]`` and rounded to the ``2^bits`` levels spread evenly over it."""
    clipped = torch.minimum(torch.maximum(x, low), high)
    step = (high - low) / (2 ** bits - 1)
    return _ste(clipped, low + torch.round((clipped - low) / step) * step)


def _act_range(out) -> tuple[torch.Tensor, torch.Tensor]:
    """The range of the grid a Brevitas activation quantizer produced ``out`` (a QuantTensor) on."""
    scale, bits = out.scale, int(out.bit_width)
    if bits == 1:
        return -scale, scale
    if bool(out.signed):
        return -(2 ** (bits - 1)) * scale, (2 ** (bits - 1) - 1) * scale
    return torch.zeros_like(scale), (2 ** bits - 1) * scale


@contextlib.contextmanager
def precision_view(model: nn.Module, bits: tuple[int, int] | None) -> Iterator[None]:
    """Run ``model`` at full precision (``bits=None``) or at ``(weight_bits, act_bits)`` inside the block."""

    def weight_view(module, inputs, out):
        w = inputs[0]
        return w if bits is None else fake_quant_weight(w, bits[0])

    def act_view(module, inputs, out):
        if not hasattr(out, "scale"):  # a quantizer that returned a plain tensor (disabled): nothing to view
            return out
        x = inputs[0]
        x = x.value if hasattr(x, "value") else x
        low, high = _act_range(out)
        if bits is None:
            return torch.minimum(torch.maximum(x, low), high)
        return fake_quant_range(x, low, high, bits[1])

    with quantizer_views(model, weight_view, act_view):
        yield


def classifier_of(model: nn.Module) -> nn.Module:
    """The model's last fully connected layer (whose input are the features SSQL contrasts)."""
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]  # Brevitas' QuantLinear is one too
    if not linears:
        raise ValueError("ssql: the model has no fully connected layer to take features from")
    return linears[-1]


class SsqlHead(nn.Module):
    """SimSiam's projector (2 layers, BN, the last one without affine) and predictor (bottleneck ``dim // 4``).

    Trained with the network during pretraining and never part of the model (not in ``model.pt``, not exported).
    """

    def __init__(self, features: int, dim: int) -> None:
        super().__init__()
        self.projector = nn.Sequential(nn.Linear(features, dim, bias=False), nn.BatchNorm1d(dim), nn.ReLU(),
                                       nn.Linear(dim, dim, bias=False), nn.BatchNorm1d(dim, affine=False))
        hidden = max(1, dim // 4)
        self.predictor = nn.Sequential(nn.Linear(dim, hidden, bias=False), nn.BatchNorm1d(hidden), nn.ReLU(),
                                       nn.Linear(hidden, dim))

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(z, p)``: the projection and its prediction."""
        z = self.projector(features.flatten(1))
        return z, self.predictor(z)


def negative_cosine(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """SimSiam's ``D(p, z) = -cos(p, stopgrad(z))``, averaged over the batch."""
    return -F.cosine_similarity(p, z.detach(), dim=1).mean()


def ssql_loss(p_full: Sequence[torch.Tensor], p_quant: Sequence[torch.Tensor],
              z_full: Sequence[torch.Tensor]) -> torch.Tensor:
    """SSQL-SimSiam's loss (the reference code's): both the full-precision predictions ``p_full = (p1, p2)`` and the
    quantized ones ``p_quant`` predict the full-precision projection of the *other* view ``z_full = (z1, z2)``:
    ``(D(p1, z2) + D(p2, z1) + D(p1q, z2) + D(p2q, z1)) / 4``. -1 when every prediction points along its target."""
    (p1, p2), (q1, q2), (z1, z2) = p_full, p_quant, z_full
    full = (negative_cosine(p1, z2) + negative_cosine(p2, z1)) / 2
    quant = (negative_cosine(q1, z2) + negative_cosine(q2, z1)) / 2
    return (full + quant) / 2


def augment_views(images: torch.Tensor, generator: torch.Generator, max_shift: int = 1) -> torch.Tensor:
    """One augmented view of a batch of float images ``(N, C, H, W)`` in [0, 1]: a random translation by up to
    ``max_shift`` pixels (zero fill) and a random contrast gain in [0.6, 1] per image. No flips: digits are not
    mirror-symmetric. Drawn from ``generator`` (on the CPU), so a run's views depend only on its seed."""
    n, _, h, w = images.shape
    pad = F.pad(images, (max_shift,) * 4)
    dy = torch.randint(0, 2 * max_shift + 1, (n,), generator=generator)
    dx = torch.randint(0, 2 * max_shift + 1, (n,), generator=generator)
    rows = (torch.arange(h).unsqueeze(0) + dy.unsqueeze(1)).to(images.device)  # (n, h)
    cols = (torch.arange(w).unsqueeze(0) + dx.unsqueeze(1)).to(images.device)  # (n, w)
    batch = torch.arange(n, device=images.device)[:, None, None]
    shifted = pad.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)
    gain = (0.6 + 0.4 * torch.rand(n, generator=generator)).to(images.device).view(n, 1, 1, 1)
    # Back on the 1/255 grid of the input quantizer, so the 8-bit input sees the view exactly.
    return torch.round(shifted * gain * 255.0) / 255.0


def draw_bits(choices_w: Sequence[int], choices_a: Sequence[int], generator: torch.Generator) -> tuple[int, int]:
    """A random ``(weight_bits, act_bits)``, each uniform over its set."""
    wb = choices_w[int(torch.randint(len(choices_w), (1,), generator=generator))]
    ab = choices_a[int(torch.randint(len(choices_a), (1,), generator=generator))]
    return int(wb), int(ab)
