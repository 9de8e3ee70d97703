# SPDX-License-Identifier: BSD-3-Clause
"""DIR-Net (Qin et al., "Distribution-sensitive Information Retention for Accurate Binary Neural Network", IJCV 2022;
IR-Net, CVPR 2020) as the ``dirnet`` family (``--method dirnet``). docs/methods.md has the paper's statements.

At 1 bit each weight layer binarizes ``balance_standardize(w)`` (IMB: per output channel mean 0, std 1) with a
positive per-channel scale (IR-Net's power of two of mean |w_std| by default), and every binary weight and activation
quantizer is :class:`~hwq.quant.estimators.EdeBinaryQuant` (DTE: the EDE gradient on the schedule of the training's
progress). With ``--teacher RUN`` each binary layer's output is also pulled towards the output of the teacher's layer
of the same name (RBD, :func:`representation_distance`). Runs are W1A1; a model's k-bit parts are ``uniform``'s.

The deployed network is plain W1A1: the forward values are ``sign(w - mean_c) * s_c`` and ``sign(x)``, exported as
the same ``BipolarQuant`` nodes a ``uniform`` W1A1 run exports (the balance and standardization of the weight
initializer fold into a constant at export, the positive scales into the thresholds).
"""

from __future__ import annotations

import torch
from brevitas.inject.enum import ScalingPerOutputType
from brevitas.nn import QuantConv2d, QuantIdentity, QuantLinear
from torch import nn

from hwq.errors import ConfigError
from hwq.options import DIRNET_OPTIONS
from hwq.quant.brevitas_map import ConstScaleWeight, L1ScaleWeight, to_injector
from hwq.quant.estimators import EdeBinaryQuant, balance_standardize
from hwq.quant.family import UniformFamily, register_family
from hwq.quant.spec import QuantSpec, Role
from hwq.quant.teacher_layers import matching_teacher_layer, representation_distance


class RepresentationGroup:
    """The layers of one model distilled by RBD and the term's weight (the term is the mean over the layers)."""

    def __init__(self, weight: float) -> None:
        self.weight = weight
        self.layers: list[_DirNetWeights] = []


class _DirNetWeights:
    """A binary Brevitas layer that quantizes its balanced, standardized weights and takes part in RBD."""

    def _setup_dirnet(self, group: RepresentationGroup) -> None:
        self.rbd_group = group
        self._teacher_output: torch.Tensor | None = None
        self._own_output: torch.Tensor | None = None
        self._distilling = False

    def quant_weight(self, quant_input=None, subtensor_slice_list=None):
        """Brevitas' weight quantizer applied to ``balance_standardize(weight)`` (the export calls this too)."""
        if subtensor_slice_list is not None:
            raise NotImplementedError("dirnet layers quantize whole weight tensors")
        weight = balance_standardize(self.weight)
        if self.weight_quant.requires_quant_input:
            return self.weight_quant(weight, quant_input)
        return self.weight_quant(weight)

    # --- RBD (the teacher's representations) ---------------------------------------------------------------
    def hwq_attach_teacher(self, name: str, teacher: nn.Module | None) -> None:
        """Keep the output of the teacher's layer ``name`` at each training forward pass (no teacher: no RBD)."""
        if teacher is None or not self.rbd_group.weight:
            return
        layer = matching_teacher_layer(teacher, name, self.weight, "dirnet_rbd_weight", "set dirnet_rbd_weight=0")
        self._distilling = True
        self.rbd_group.layers.append(self)

        def keep_output(module, inputs, output, owner=self):
            owner._teacher_output = output.detach() if owner.training else None

        layer.register_forward_hook(keep_output)

    def hwq_extra_loss(self) -> torch.Tensor:
        """``dirnet_rbd_weight`` times this layer's share of the mean representation distance to the teacher."""
        own, teacher = self._own_output, self._teacher_output
        self._own_output = self._teacher_output = None
        if not (self.training and own is not None and teacher is not None):
            return self.weight.new_zeros(())
        group = self.rbd_group
        return group.weight * representation_distance(own, teacher) / len(group.layers)

    def forward(self, x):
        out = super().forward(x)
        if self._distilling and self.training:
            self._own_output = out
        return out


class DirNetLinear(_DirNetWeights, QuantLinear):
    """A binary ``QuantLinear`` of the dirnet family."""


class DirNetConv2d(_DirNetWeights, QuantConv2d):
    """A binary ``QuantConv2d`` of the dirnet family."""


@register_family
class DirNetFamily(UniformFamily):
    """``uniform`` with DIR-Net's binarization at 1 bit (IMB weights, the EDE/DTE estimator, RBD with a teacher)."""

    name = "dirnet"
    #: A binarization method: --wbits 1 --abits 1 (a model's own k-bit parts, such as ReActNet's shortcuts and
    #: classifier, are ``uniform``'s).
    weight_bits: tuple[int, ...] = (1,)
    act_bits: tuple[int, ...] = (1,)
    declared_options = DIRNET_OPTIONS

    def __init__(self, options: dict | None = None) -> None:
        super().__init__(options)
        if self._option("dirnet_t_min") >= self._option("dirnet_t_max"):
            raise ConfigError(f"model_options.dirnet_t_min: expected < dirnet_t_max "
                              f"({self._option('dirnet_t_max')}), got {self._option('dirnet_t_min')}")
        #: The model's RBD layers (a family instance builds one model).
        self.rbd_group = RepresentationGroup(self._option("dirnet_rbd_weight"))

    def _estimator(self) -> dict:
        return dict(tensor_quant=EdeBinaryQuant, ede_t_min=self._option("dirnet_t_min"),
                    ede_t_max=self._option("dirnet_t_max"))

    def _binary_weight_scale(self) -> str:
        return "const"  # the uniform family's mean_abs path is replaced by dirnet_scale below

    def weight_quant(self, bits: int, per_channel: bool = True):
        if bits != 1:
            return super().weight_quant(bits, per_channel)
        scale = self._option("dirnet_scale")
        if scale == "const":
            quant = ConstScaleWeight.let(bit_width=1, signed=True, narrow_range=True, scaling_const=1.0)
        else:
            quant = L1ScaleWeight.let(bit_width=1, signed=True, narrow_range=True, l1_gain=1.0,
                                      l1_power_of_two=scale == "power_of_two")
            if not per_channel:
                quant = quant.let(scaling_per_output_channel=False,
                                  scaling_per_output_type=ScalingPerOutputType.TENSOR)
        return quant.let(**self._estimator())

    def _binary_layer(self, layer: _DirNetWeights) -> nn.Module:
        layer._setup_dirnet(self.rbd_group)
        # Latent weights are not clipped: the sign of a standardized weight does not depend on the weights' scale.
        torch.nn.init.uniform_(layer.weight, -1.0, 1.0)
        return layer

    def linear(self, in_features: int, out_features: int, bits: int) -> nn.Module:
        if bits != 1:
            return super().linear(in_features, out_features, bits)
        return self._binary_layer(DirNetLinear(in_features, out_features, bias=False,
                                               weight_quant=self.weight_quant(bits)))

    def classifier(self, in_features: int, num_classes: int, bits: int) -> nn.Module:
        """One scale for the whole last layer (FINN absorbs only one positive number into label selection)."""
        if bits != 1:
            return super().classifier(in_features, num_classes, bits)
        return self._binary_layer(DirNetLinear(in_features, num_classes, bias=False,
                                               weight_quant=self.weight_quant(bits, per_channel=False)))

    def conv2d(self, in_channels: int, out_channels: int, kernel_size: int, bits: int,
               stride: int = 1, padding: int = 0, groups: int = 1) -> nn.Module:
        if bits != 1:
            return super().conv2d(in_channels, out_channels, kernel_size, bits, stride, padding, groups)
        return self._binary_layer(DirNetConv2d(
            in_channels, out_channels, kernel_size, stride=stride, padding=padding, groups=groups, bias=False,
            weight_quant=self.weight_quant(bits)))

    def act(self, bits: int, channels: int) -> nn.Module:
        if bits != 1:
            return super().act(bits, channels)
        return QuantIdentity(act_quant=to_injector(QuantSpec(Role.ACT, 1)).let(**self._estimator()))
