# SPDX-License-Identifier: BSD-3-Clause
"""Every model builds at every supported bit-width, with the input size of its dataset."""

from __future__ import annotations

import pytest
import torch

from hwq.errors import ConfigError
from hwq.models import ModelSpec, build_model

SHAPES = {"tfc": [(1, 8, 8), (1, 28, 28)], "sfc": [(1, 28, 28)], "lfc": [(1, 28, 28)], "cnv": [(3, 32, 32)]}
# each bit-width 1..8 for weights and activations, alone and together
BIT_PAIRS = sorted({(b, b) for b in range(1, 9)} | {(b, 1) for b in range(1, 9)} | {(1, b) for b in range(1, 9)})
CASES = [(name, shape, w, a) for name, shapes in SHAPES.items() for shape in shapes for w, a in BIT_PAIRS
         if name != "lfc" or w == a]  # LFC's 1024-wide layers: the diagonal is enough to show it builds


@pytest.mark.parametrize("name,shape,wbits,abits", CASES)
def test_model_builds_and_runs(name, shape, wbits, abits):
    torch.manual_seed(0)
    model = build_model(ModelSpec(name, wbits, abits, image_shape=shape)).eval()
    out = model(torch.rand(2, *shape))
    assert out.shape == (2, 10)
    assert torch.isfinite(out).all()
    expected_input = (shape[0] * shape[1] * shape[2],) if name != "cnv" else shape
    assert model.input_shape == expected_input


def test_fc_input_follows_dataset():
    digits = build_model(ModelSpec("tfc", 1, 1, image_shape=(1, 8, 8)))
    mnist = build_model(ModelSpec("tfc", 1, 1, image_shape=(1, 28, 28)))
    assert digits.features[2].in_features == 64
    assert mnist.features[2].in_features == 784


def test_unknown_model_is_a_clear_error():
    with pytest.raises(ConfigError, match="unknown model 'resnet9000'; known: .*tfc"):
        build_model(ModelSpec("resnet9000", 1, 1))


@pytest.mark.parametrize("wbits,abits,flag", [(0, 1, "wbits"), (9, 1, "wbits"), (1, 16, "abits")])
def test_unsupported_bit_width_is_a_clear_error(wbits, abits, flag):
    with pytest.raises(ConfigError, match=rf"--{flag} {max(wbits, abits) if flag == 'abits' else wbits} "
                                          r"is not supported by the 'uniform' quantizer family"):
        build_model(ModelSpec("tfc", wbits, abits))


def test_cnv_rejects_small_images():
    with pytest.raises(ConfigError, match="needs 32x32 images"):
        build_model(ModelSpec("cnv", 1, 1, image_shape=(1, 8, 8)))
