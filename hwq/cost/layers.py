# SPDX-License-Identifier: BSD-3-Clause
"""The hardware layers FINN makes of an hwq model, found from the PyTorch model alone (no export, no FINN build).

One forward pass of a zero image with hooks records, in execution order, each weight layer (its shapes), each
activation quantizer and each max-pool; from that sequence come the layers FINN's ``convert_to_hw`` makes of the
streamlined graph:

- a ``Linear`` becomes an MVAU with ``MW = in_features``, ``MH = out_features``, one vector per image;
- a ``Conv2d`` (k x k, stride 1, no padding, as in FINN's CNV) becomes a sliding window
  (``ConvolutionInputGenerator``) and an MVAU with ``MW = in_channels * k * k``, ``MH = out_channels`` and one
  vector per output pixel;
- a ``MaxPool2d`` becomes a depthwise window and a ``Pool``;
- the top-1 output FINN's build appends becomes a ``LabelSelect``.

An activation quantizer after a weight layer becomes that MVAU's thresholds (its output bits); the one before it
gives the MVAU's (and the window's) input bits; before the first one come the 8-bit pixels. Each layer names the
quantizers its bits come from, so a precision map changes a cost without describing the model again.

>>> layers = describe(ModelSpec("tfc", 1, 1, image_shape=(1, 8, 8)))       # doctest: +SKIP
>>> [(l.name, l.kind, l.mw, l.mh, l.weight, l.input, l.output) for l in layers.layers][:2]   # doctest: +SKIP
[('features.2', 'mvau', 64, 64, 'features.2', None, 'features.4'), ('features.6', 'mvau', 64, 64, ...)]
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hwq.errors import ConfigError
from hwq.models.precision import ACT, WEIGHT, QuantizedLayer

MVAU, WINDOW, POOL, LABEL_SELECT = "mvau", "window", "pool", "label_select"
#: The models whose FINN graph is the chain this module describes (others have padding, depthwise or branches).
SUPPORTED_MODELS = ("tfc", "sfc", "lfc", "cnv")
#: The bits of the 8-bit pixel input (hwq's builds feed UINT8 pixels).
PIXEL_BITS = 8


@dataclass(frozen=True)
class HwLayer:
    """One FINN hardware layer: its kind, the quantizers its bits come from and its shape.

    ``weight``: the weight quantizer (an MVAU's); ``input``: the activation quantizer feeding it (None: the
    8-bit pixels; for a ``label_select``, the MVAU whose accumulator it reads); ``output``: the activation
    quantizer that becomes an MVAU's thresholds (None: no thresholds, the classifier)."""

    name: str
    kind: str
    input: str | None = None
    weight: str | None = None
    output: str | None = None
    #: MVAU: matrix width (inputs per dot product), height (outputs) and vectors per image (output pixels).
    mw: int = 0
    mh: int = 0
    vectors: int = 1
    #: Window / pool: channels, input and output map size (square), kernel, stride; labels for label_select.
    channels: int = 0
    ifm: int = 0
    ofm: int = 0
    kernel: int = 0
    stride: int = 1
    #: A window that feeds a pool (FINN's depthwise window: it reads each channel's window in turn).
    depthwise: bool = False
    labels: int = 0


@dataclass(frozen=True)
class ModelLayers:
    """A model's hardware layers and its quantizers' bits (name -> bits, before any precision map)."""

    model: str
    layers: tuple[HwLayer, ...]
    bits: dict[str, int] = field(default_factory=dict)
    roles: dict[str, str] = field(default_factory=dict)
    #: Other names of a quantizer (a precision map may use either) -> its first name.
    aliases: dict[str, str] = field(default_factory=dict)


def describe(spec) -> ModelLayers:
    """The hardware layers of the model ``spec`` (an :class:`hwq.models.ModelSpec`) describes, from one forward pass
    of its PyTorch model; a model whose FINN graph is not a plain chain is a ConfigError."""
    import torch
    from torch import nn

    from hwq.models import model_and_layers

    if spec.name not in SUPPORTED_MODELS:
        raise ConfigError(f"model '{spec.name}': the cost model covers FINN's chain networks "
                          f"({', '.join(SUPPORTED_MODELS)}); this one has padding, depthwise layers or branches")
    model, quantized = model_and_layers(spec)
    model.eval()
    names = {name: q for q in quantized for name in q.names}
    events: list[tuple[str, str, nn.Module, tuple, tuple]] = []

    def hook(name: str):
        def record(module, inputs, output):
            events.append((name, _kind(module, names.get(name)), module, tuple(inputs[0].shape), tuple(output.shape)))
        return record

    handles = [module.register_forward_hook(hook(name)) for name, module in model.named_modules()
               if name in names or isinstance(module, nn.MaxPool2d)]
    try:
        with torch.no_grad():
            model(torch.zeros(1, *spec.image_shape))
    finally:
        for handle in handles:
            handle.remove()
    layers = _chain(spec.name, events, spec.num_classes)
    return ModelLayers(spec.name, tuple(layers), {q.name: q.bits for q in quantized},
                       {q.name: q.role for q in quantized},
                       {alias: q.name for q in quantized for alias in q.aliases})


def _kind(module, quantized: QuantizedLayer | None) -> str:
    from torch import nn

    if quantized is not None and quantized.role == ACT:
        return "act"
    if quantized is not None and quantized.role == WEIGHT:
        return "conv" if isinstance(module, nn.Conv2d) else "linear"
    return "maxpool"


def _chain(model: str, events: list, num_classes: int) -> list[HwLayer]:
    """FINN's layers of the recorded forward pass (see the module docstring)."""
    layers: list[HwLayer] = []
    act: str | None = None           # the activation quantizer whose values flow now (None: the pixels)
    pending: int | None = None       # index of the last MVAU still waiting for its thresholds
    for name, kind, module, in_shape, out_shape in events:
        if kind == "act":
            if pending is not None:
                layers[pending] = _with_output(layers[pending], name)
                pending = None
            act = name
        elif kind == "linear":
            layers.append(HwLayer(name, MVAU, input=act, weight=name, mw=module.in_features,
                                  mh=module.out_features))
            pending = len(layers) - 1
        elif kind == "conv":
            k = _square(model, name, module.kernel_size, "kernel")
            if module.groups != 1 or _square(model, name, module.stride, "stride") != 1 \
                    or any(module.padding) or _square(model, name, module.dilation, "dilation") != 1:
                raise ConfigError(f"model '{model}': {name}: the cost model takes k x k convolutions with stride 1, "
                                  "no padding, no groups (FINN's CNV)")
            channels, ifm, ofm = in_shape[1], in_shape[2], out_shape[2]
            layers.append(HwLayer(f"{name}.window", WINDOW, input=act, channels=channels, ifm=ifm, ofm=ofm,
                                  kernel=k))
            layers.append(HwLayer(name, MVAU, input=act, weight=name, mw=channels * k * k,
                                  mh=module.out_channels, vectors=out_shape[2] * out_shape[3]))
            pending = len(layers) - 1
        else:  # max-pool: a depthwise window and a Pool on the activations flowing now
            k = _square(model, name, module.kernel_size, "kernel")
            stride = _square(model, name, module.stride, "stride")
            channels, ifm, ofm = in_shape[1], in_shape[2], out_shape[2]
            common = dict(input=act, channels=channels, ifm=ifm, ofm=ofm, kernel=k, stride=stride)
            layers.append(HwLayer(f"{name}.window", WINDOW, depthwise=True, **common))
            layers.append(HwLayer(name, POOL, **common))
    last = [layer for layer in layers if layer.kind == MVAU][-1]
    if last.output is not None:
        raise ConfigError(f"model '{model}': its last weight layer {last.name} is followed by an activation "
                          "quantizer; the cost model expects a classifier without thresholds")
    layers.append(HwLayer("label_select", LABEL_SELECT, input=last.name, labels=num_classes))
    return layers


def _with_output(layer: HwLayer, output: str) -> HwLayer:
    from dataclasses import replace

    return replace(layer, output=output)


def _square(model: str, name: str, value, what: str) -> int:
    pair = (value, value) if isinstance(value, int) else tuple(value)
    if pair[0] != pair[1]:
        raise ConfigError(f"model '{model}': {name}: a {pair[0]}x{pair[1]} {what}; the cost model takes square ones")
    return int(pair[0])
