# SPDX-License-Identifier: BSD-3-Clause
"""Quantizers: values on their grid, straight-through gradients, validation of bad settings."""

from __future__ import annotations

import pytest
import torch

from hwq.errors import ConfigError
from hwq.quant import INPUT_SPEC, QuantSpec, Role, Scaling, get_family

FAMILY = get_family("uniform")
BITS = range(1, 9)


def _on_grid(values: torch.Tensor, scale: torch.Tensor, levels: tuple[int, ...]) -> bool:
    ints = values / scale
    rounded = torch.round(ints)
    return bool(torch.allclose(ints, rounded, atol=1e-4)) and set(rounded.unique().tolist()) <= set(levels)


@pytest.mark.parametrize("bits", BITS)
def test_weights_lie_on_their_grid(bits):
    torch.manual_seed(bits)
    layer = FAMILY.linear(32, 16, bits)
    with torch.no_grad():
        layer.weight.mul_(3.0)  # push some weights past the range, so clamping is exercised too
    quant = layer.quant_weight()
    assert _on_grid(quant.value, quant.scale, FAMILY.weight_spec(bits).levels)
    if bits == 1:
        assert set(quant.value.unique().tolist()) == {-1.0, 1.0}


@pytest.mark.parametrize("bits", BITS)
def test_activations_lie_on_their_grid(bits):
    act = FAMILY.act(bits, channels=8)
    x = torch.linspace(-4, 4, 20001)  # finer than the 8-bit step, so every level can be hit
    y = act(x)
    scale = act.act_quant.scale() if bits > 1 else torch.tensor(1.0)
    levels = FAMILY.act_spec(bits).levels
    assert _on_grid(y.detach(), scale.detach(), levels)
    # every level is reached by some input in [-4, 4]: nothing of the grid is lost
    assert len(torch.unique(y.detach())) == len(levels)


def test_input_quantizer_is_exact_on_pixels():
    quant = FAMILY.input_quant()
    pixels = torch.arange(256, dtype=torch.float32) / 255.0
    assert torch.equal(quant(pixels), pixels) or torch.allclose(quant(pixels), pixels, atol=1e-7, rtol=0)
    assert INPUT_SPEC.levels == tuple(range(256))


def test_binary_activation_ste_is_hardtanh_derivative():
    act = FAMILY.act(1, channels=1)
    x = torch.tensor([-3.0, -1.5, -1.0, -0.5, 0.0, 0.3, 1.0, 1.2, 3.0], requires_grad=True)
    y = act(x)
    y.sum().backward()
    assert torch.equal(y.detach(), torch.tensor([-1.0, -1, -1, -1, 1, 1, 1, 1, 1]))
    # d sign(x)/dx through the straight-through estimator: 1 inside [-1, 1], 0 outside
    assert torch.equal(x.grad, (x.detach().abs() <= 1).float())


@pytest.mark.parametrize("bits", [2, 3, 4])
def test_uniform_activation_ste_passes_inside_the_range_only(bits):
    act = FAMILY.act(bits, channels=1)
    scale = float(act.act_quant.scale())
    levels = FAMILY.act_spec(bits).levels
    # points between grid midpoints, never on a rounding boundary
    x = (torch.arange(-40, 40, dtype=torch.float32) * 0.25 + 0.1) * scale
    x.requires_grad_(True)
    act(x).sum().backward()
    # straight through wherever round(x / s) is not clamped: x / s within [min - 1/2, max + 1/2]
    ints = x.detach() / scale
    inside = (ints >= min(levels) - 0.5) & (ints <= max(levels) + 0.5)
    assert torch.equal(x.grad, inside.float())
    assert 0 < int(inside.sum()) < len(x)  # both regions are exercised


@pytest.mark.parametrize("bits", [1, 2, 4])
def test_weight_ste_is_identity(bits):
    torch.manual_seed(0)
    layer = FAMILY.linear(5, 3, bits)
    x = torch.randn(4, 5)
    layer(x).sum().backward()
    # y = x @ q(W)^T with dq/dW = 1 (straight through), so dL/dW = sum over the batch of x
    expected = x.sum(0).expand(3, 5)
    assert torch.allclose(layer.weight.grad, expected, atol=1e-6)


def test_binary_latent_weights_are_clipped():
    from hwq.quant import clip_latent_weights

    layer = FAMILY.linear(4, 4, 1)
    with torch.no_grad():
        layer.weight.fill_(5.0)
    clip_latent_weights(torch.nn.Sequential(layer))
    assert float(layer.weight.max()) == 1.0


@pytest.mark.parametrize("bits", [0, 9, -1, 2.5])
def test_unsupported_bit_width_is_a_clear_error(bits):
    with pytest.raises(ConfigError, match=r"bit-width .* not supported; expected an integer 1\.\.8"):
        QuantSpec(Role.WEIGHT, bits)


def test_unsigned_binary_is_rejected():
    with pytest.raises(ConfigError, match="must be signed"):
        QuantSpec(Role.ACT, 1, signed=False)


def test_spec_levels():
    assert QuantSpec(Role.WEIGHT, 2).levels == (-1, 0, 1)
    assert QuantSpec(Role.ACT, 2, narrow_range=False, scaling=Scaling.LEARNED).levels == (-2, -1, 0, 1)
    assert QuantSpec(Role.INPUT, 3, signed=False, narrow_range=False).levels == tuple(range(8))


def test_unknown_family_is_a_clear_error():
    with pytest.raises(ConfigError, match="unknown quantizer family 'nope'; known: .*uniform"):
        get_family("nope")
