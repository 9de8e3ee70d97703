# SPDX-License-Identifier: BSD-3-Clause
"""The settings of ``hwq quantize`` (:func:`hwq.ptq.run_quantize`): one frozen dataclass, checked when made.

>>> QuantizeConfig(method="nearest", wbits=4, abits=4).calibration
1024
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import Enum
from typing import Any

from hwq.errors import ConfigError

#: Post-training quantization rounds weights onto a grid of at least three values; 1-bit (sign) networks need
#: training (``hwq train``).
PTQ_MIN_BITS, PTQ_MAX_BITS = 2, 8


class Method(str, Enum):
    """How each weight is put on its grid."""

    #: Diao et al. 2022: a soft assignment over every grid value, Gaussian in the distance, hardened by a decaying
    #: sigma while the layer's output on calibration images is reconstructed (hwq.ptq.attention_round).
    ATTENTION_ROUND = "attention-round"
    #: Plain round-to-nearest on the same grid, with the same scales and activation calibration: the baseline.
    NEAREST = "nearest"


class BitAllocation(str, Enum):
    """Where the per-layer weight bits come from."""

    #: ``wbits`` for every layer, or the ``precision`` map's.
    FIXED = "fixed"
    #: Ma et al. 2007's lossy coding length of each layer's weights decides (hwq.ptq.coding_length), under an average
    #: of ``budget_bits`` bits per weight.
    LOSSY_CODING = "lossy-coding"


@dataclass(frozen=True)
class QuantizeConfig:
    """One post-training quantization of a float run into a deployable uniform-quantized run."""

    method: Method = Method.ATTENTION_ROUND
    #: Weight bits of every layer the ``precision`` map (or the allocation) does not set.
    wbits: int = 4
    #: Activation bits of every quantizer the ``precision`` map does not set.
    abits: int = 4
    #: Calibration images, class-balanced from the training split and drawn with ``seed``; the paper's 1,024.
    calibration: int = 1024
    #: Adam steps per layer of the Attention Round reconstruction (enough for a 64x64 layer to settle on digits;
    #: the paper does not state its count).
    iterations: int = 500
    #: Adam learning rate of the latent weights, in grid steps (the latent lives in units of the layer's scale).
    lr: float = 0.01
    #: Sigma of the Gaussian at the first step, in grid steps: at 1.0 the two nearest values get 61 % of the
    #: probability and the third-nearest still 14 % (the paper's "all quantized values").
    sigma_start: float = 1.0
    #: Sigma at the last step: at 0.05 the nearest value holds more than 99.99 %, so hardening changes nothing.
    sigma_end: float = 0.05
    #: Calibration images per Adam step (drawn with ``seed``).
    batch_size: int = 256
    seed: int = 0
    #: Module path -> bits (:mod:`hwq.models.precision`), as ``hwq train --precision``.
    precision: dict[str, int] = field(default_factory=dict)
    bit_allocation: BitAllocation = BitAllocation.FIXED
    #: Average weight bits (weighted by each layer's weight count) for ``lossy-coding``.
    budget_bits: float | None = None
    #: Distortion eps of the coding length (Ma et al.'s epsilon), relative to the layer's weight RMS.
    coding_eps: float = 0.5
    #: Threads torch uses (None: one, so the bits do not depend on the machine).
    threads: int | None = None

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "method", Method(self.method))
        except ValueError:
            raise ConfigError(f"--method {self.method!r}: unknown; known: "
                              f"{', '.join(m.value for m in Method)}") from None
        try:
            object.__setattr__(self, "bit_allocation", BitAllocation(self.bit_allocation))
        except ValueError:
            raise ConfigError(f"--bit-allocation {self.bit_allocation!r}: unknown; known: "
                              f"{', '.join(b.value for b in BitAllocation)}") from None
        for flag, bits in (("wbits", self.wbits), ("abits", self.abits), *(
                (f"precision.{name}", bits) for name, bits in self.precision.items())):
            check_ptq_bits(flag, bits)
        for flag, value, ok, what in (
            ("calibration", self.calibration, isinstance(self.calibration, int) and self.calibration >= 1,
             "an integer >= 1"),
            ("iterations", self.iterations, isinstance(self.iterations, int) and self.iterations >= 1,
             "an integer >= 1"),
            ("batch-size", self.batch_size, isinstance(self.batch_size, int) and self.batch_size >= 1,
             "an integer >= 1"),
            ("lr", self.lr, self.lr > 0, "> 0"),
            ("sigma-start", self.sigma_start, self.sigma_start > 0, "> 0"),
            ("sigma-end", self.sigma_end, 0 < self.sigma_end <= self.sigma_start, "in (0, sigma-start]"),
            ("coding-eps", self.coding_eps, self.coding_eps > 0, "> 0"),
        ):
            if not ok:
                raise ConfigError(f"--{flag} {value!r}: expected {what}")
        lossy = self.bit_allocation is BitAllocation.LOSSY_CODING
        if lossy and self.budget_bits is None:
            raise ConfigError("--bit-allocation lossy-coding needs --budget-bits (average weight bits)")
        if lossy and self.precision:
            raise ConfigError("--bit-allocation lossy-coding chooses the weight bits; pass it or --precision, not both")
        if self.budget_bits is not None and not lossy:
            raise ConfigError("--budget-bits is the budget of --bit-allocation lossy-coding; pass that too")
        if lossy and not PTQ_MIN_BITS <= self.budget_bits <= PTQ_MAX_BITS:
            raise ConfigError(f"--budget-bits {self.budget_bits!r}: expected {PTQ_MIN_BITS}..{PTQ_MAX_BITS}")

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["method"], out["bit_allocation"] = self.method.value, self.bit_allocation.value
        return out


def check_ptq_bits(flag: str, bits: Any) -> None:
    """A one-line ConfigError naming ``flag`` when ``bits`` is not a bit-width PTQ supports."""
    if not isinstance(bits, int) or isinstance(bits, bool) or not PTQ_MIN_BITS <= bits <= PTQ_MAX_BITS:
        raise ConfigError(f"--{flag} {bits!r}: post-training quantization supports {PTQ_MIN_BITS}..{PTQ_MAX_BITS} "
                          f"bits (1-bit networks need training: hwq train)")
