# SPDX-License-Identifier: BSD-3-Clause
"""The options of the quantizer families and model builders (``--option KEY=VALUE``, ``model_options:``), as data.

Each family and each model declares its options here, in a module that imports no torch, so that a config is
checked when it is made (before any data is loaded or torch imported) and ``hwq models`` lists them from
:mod:`hwq.catalog`. The families and builders read their values through :meth:`Option.read`, so the type checks,
the defaults and the error messages exist once:

>>> PAD_VALUE.read({"pad_value": -1})
-1.0
>>> option_named(BITAT_OPTIONS, "bitat_penalty").read({})
0.01
>>> check_options({"bitat_penalti": 0.1}, BITAT_OPTIONS, "--quant bitat")  # doctest: +ELLIPSIS
Traceback (most recent call last):
hwq.errors.ConfigError: model_options.bitat_penalti: not an option of --quant bitat (did you mean bitat_penalty?); ...
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass
from typing import Any, Mapping

from hwq.errors import ConfigError


@dataclass(frozen=True)
class Range:
    """An interval of allowed numbers; ``None`` leaves a side open-ended.

    >>> str(Range(0, 4, low_open=True)), 4 in Range(0, 4, low_open=True), 0 in Range(0, 4, low_open=True)
    ('in (0, 4]', True, False)
    """

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def __contains__(self, value: float) -> bool:
        low_ok = self.low is None or (value > self.low if self.low_open else value >= self.low)
        high_ok = self.high is None or (value < self.high if self.high_open else value <= self.high)
        return low_ok and high_ok

    def __str__(self) -> str:
        if self.low is not None and self.high is not None:
            return f"in {'(' if self.low_open else '['}{self.low:g}, {self.high:g}{')' if self.high_open else ']'}"
        if self.low is not None:
            return f"{'>' if self.low_open else '>='} {self.low:g}"
        if self.high is not None:
            return f"{'<' if self.high_open else '<='} {self.high:g}"
        return ""


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _is_numbers(value: Any) -> bool:
    return isinstance(value, list | tuple) and all(_is_number(v) for v in value)


#: Option type -> (test of a value, the type in words).
TYPES: dict[str, tuple[Any, str]] = {
    "bool": (lambda v: isinstance(v, bool), "true or false"),
    "number": (_is_number, "a number"),
    "integer": (lambda v: isinstance(v, int) and not isinstance(v, bool), "an integer"),
    "choice": (lambda v: isinstance(v, str), "one of"),
    "numbers": (_is_numbers, "a list of numbers"),
    "number or numbers": (lambda v: _is_number(v) or _is_numbers(v), "a number or a list of numbers"),
}


@dataclass(frozen=True)
class Option:
    """One option of a family or model: its name, type, default and a one-line help.

    ``default`` None means "not set": the reader then decides (``help`` says how), and ``null`` is accepted.
    """

    name: str
    #: One of :data:`TYPES`.
    type: str
    default: Any
    help: str
    #: The allowed values of a ``choice``.
    choices: tuple[str, ...] = ()
    #: The allowed values of a ``number`` or ``integer`` (of every element of ``numbers``).
    range: Range = Range()

    def __post_init__(self) -> None:
        if self.type not in TYPES:
            raise ValueError(f"option {self.name}: type '{self.type}' is not one of {', '.join(TYPES)}")
        if (self.type == "choice") != bool(self.choices):
            raise ValueError(f"option {self.name}: a 'choice' and only a 'choice' has choices")

    def expected(self) -> str:
        """The allowed values in words, e.g. ``a number >= 0`` or ``one of eigen, cayley, none``."""
        words = TYPES[self.type][1]
        if self.type == "choice":
            words += " " + ", ".join(self.choices)
        elif str(self.range):
            words += f" {self.range}" if self.type in ("number", "integer") else f", each {self.range}"
        return words + (" or null" if self.default is None else "")

    def accepts(self, value: Any) -> bool:
        if value is None:
            return self.default is None
        if not TYPES[self.type][0](value):
            return False
        if self.type == "choice":
            return value in self.choices
        values = value if isinstance(value, list | tuple) else [value]
        return all(v in self.range for v in values)

    def read(self, options: Mapping[str, Any], field: str = "model_options") -> Any:
        """This option's value in ``options`` (its default when absent): numbers as float, lists as lists.

        A value of the wrong type or outside the range is a ConfigError naming ``<field>.<name>``.
        """
        value = options.get(self.name, self.default)
        if not self.accepts(value):
            raise ConfigError(f"{field}.{self.name}: expected {self.expected()}, got {value!r}")
        if value is None or self.type in ("bool", "choice", "integer"):
            return value
        if isinstance(value, list | tuple):
            return [float(v) for v in value]
        return float(value)

    def default_text(self) -> str:
        return "unset" if self.default is None else _yaml_text(self.default)


def _yaml_text(value: Any) -> str:
    return {True: "true", False: "false"}.get(value, str(value)) if isinstance(value, bool) else str(value)


def option_named(declared: tuple[Option, ...], name: str) -> Option:
    """The option called ``name`` among ``declared`` (a KeyError names it otherwise: a bug, not a user error)."""
    for option in declared:
        if option.name == name:
            return option
    raise KeyError(f"no declared option '{name}' (declared: {', '.join(o.name for o in declared)})")


def check_options(options: Mapping[str, Any], declared: tuple[Option, ...], owner: str,
                  elsewhere: Mapping[str, list[str]] | None = None, field: str = "model_options") -> None:
    """Raise a one-line ConfigError for the first key of ``options`` that is not ``declared`` or whose value is not
    one it takes. ``owner`` says whose options they are (``model 'tfc' with --quant bitat``); ``elsewhere`` maps
    option names of other families and models to their owners, for a hint; ``field`` is the config field named.
    """
    known = {o.name: o for o in declared}
    for key, value in options.items():
        if key not in known:
            close = difflib.get_close_matches(str(key), known, n=1)
            owners_of_key = (elsewhere or {}).get(key)
            hint = (f" (did you mean {close[0]}?)" if close else
                    f" ({key} is an option of {' and '.join(owners_of_key)})" if owners_of_key else "")
            raise ConfigError(f"{field}.{key}: not an option of {owner}{hint}; "
                              f"known: {', '.join(sorted(known)) or 'none'}")
        known[key].read({key: value}, field)


def owners(tables: Mapping[str, Mapping[str, tuple[Option, ...]]]) -> dict[str, list[str]]:
    """Option name -> who declares it, over ``{"model": {name: options}, "--quant": {name: options}}``.

    >>> owners({"model": {"mobilenet": MOBILENET_OPTIONS}})["width"]
    ["model 'mobilenet'"]
    """
    out: dict[str, list[str]] = {}
    for kind, table in tables.items():
        for name, declared in table.items():
            for option in declared:
                out.setdefault(option.name, []).append(f"{kind} '{name}'" if kind == "model" else f"{kind} {name}")
    return out


# --- quantizer families (hwq.quant) ----------------------------------------------------------------------------
#: ``mean_abs``: binary weights ``sign(w) * mean|w|`` per output channel (XNOR-Net, ReActNet; the classifier one
#: scale), which folds into the thresholds at export (``hwq.quant.family.UniformFamily.weight_quant``).
WEIGHT_SCALE = Option("weight_scale", "choice", "const",
                      "scale of binary weights: const (1) or mean_abs (mean |w| per output channel; folds away)",
                      choices=("const", "mean_abs"))

UNIFORM_OPTIONS: tuple[Option, ...] = (WEIGHT_SCALE,)

#: ``act_signed: false``: the multi-bit activations on the unsigned grid ``0 .. 2^b - 1`` (a quantized ReLU), what a
#: float ReLU network becomes under ``hwq quantize`` (hwq.ptq); the signed grid (the default) suits networks trained
#: quantized or with hardtanh. 1-bit activations stay bipolar either way.
ACT_SIGNED = Option("act_signed", "bool", True,
                    "multi-bit activations on the signed grid (true) or the unsigned one, a quantized ReLU (false)")

#: The uniform family's own options (families built on it declare ``UNIFORM_OPTIONS`` or their own).
UNIFORM_FAMILY_OPTIONS: tuple[Option, ...] = UNIFORM_OPTIONS + (ACT_SIGNED,)

#: DIR-Net's binarization (``hwq.quant.dirnet``; IR-Net's EDE schedule in ``hwq.quant.estimators``).
DIRNET_OPTIONS: tuple[Option, ...] = (
    Option("dirnet_scale", "choice", "power_of_two",
           "binary weight scale: power_of_two (IR-Net's 2^round(log2 mean|w_std|)), mean_abs or const; folds away",
           choices=("power_of_two", "mean_abs", "const")),
    Option("dirnet_t_min", "number", 0.1, "estimator's t at the start of training (IR-Net: 0.1)",
           range=Range(0, None, low_open=True)),
    Option("dirnet_t_max", "number", 10.0, "estimator's t at the end of training (IR-Net: 10)",
           range=Range(0, None, low_open=True)),
    Option("dirnet_rbd_weight", "number", 1.0,
           "weight of RBD, the binary layers' outputs against --teacher's (mean over layers; 0: off)",
           range=Range(0, None)),
)

FLOAT_OPTIONS = (
    Option("float_act", "choice", "relu", "activation after each normalisation (hardtanh: what sign approximates)",
           choices=("relu", "hardtanh")),
)

#: The paper's output range: levels ``k * 2 / (2^b - 1)`` (``hwq.quant.n2uq.DEFAULT_RANGE``).
N2UQ_DEFAULT_RANGE = 2.0

N2UQ_OPTIONS = (
    Option("n2uq_range", "number", N2UQ_DEFAULT_RANGE, "output levels k * range / (2^abits - 1); 2.0 is the paper's",
           range=Range(0, None, low_open=True)),
    Option("n2uq_per_channel", "bool", False, "one learned threshold set per channel (the paper: one per layer)"),
    Option("n2uq_start", "number", 0.0, "initial start of the first segment"),
    Option("n2uq_gaps", "number or numbers", None, "initial segment widths, one or one per segment (unset: the steps)",
           range=Range(0, None, low_open=True)),
    Option("n2uq_thresholds", "numbers", None, "initial thresholds, 2^abits - 1 increasing (instead of start, gaps)"),
    Option("n2uq_threshold_lr_scale", "number", 0.1, "learning-rate factor of the thresholds (the paper's 0.1)",
           range=Range(0, None)),
    Option("n2uq_weight_per_channel", "bool", True, "one weight scale per output channel (false: per layer)"),
    Option("n2uq_classifier_per_channel", "bool", False,
           "scale the last layer per class too (trains as the paper, but FINN cannot absorb it)"),
)

LQNET_OPTIONS = (
    Option("lqnet_extra_bits", "integer", 2,
           "deployed grid of 2^(bits + this) - 1 steps; more: finer learned levels, wider FINN datapath",
           range=Range(0, 4)),
    Option("lqnet_decay", "number", 0.9, "moving-average factor of the QEM basis update (the paper's 0.9)",
           range=Range(0, 1, high_open=True)),
    Option("lqnet_per_channel", "bool", True, "one weight basis per output channel (the paper's; false: per layer)"),
    Option("lqnet_classifier_per_channel", "bool", False,
           "one basis per class in the last layer too (FINN cannot absorb its per-class scale)"),
)

#: Layers with more inputs than this keep the coordinate basis (``hwq.quant.bitat.MAX_EIGEN_DIM``).
BITAT_MAX_EIGEN_DIM = 2048

BITAT_OPTIONS = (
    Option("bitat_design", "choice", "second",
           "second: the concept figure's schedule (docs/bitat.md); first: the penalty design, for the ablation",
           choices=("second", "first")),
    Option("bitat_transform", "choice", "eigen", "basis of the importance metric (none: the coordinate basis)",
           choices=("eigen", "cayley", "none")),
    Option("bitat_importance", "bool", True, "learn the importance vector s (false: s = 1)"),
    Option("bitat_progressive", "bool", True, "binarize layer by layer, input side first (false: all at once)"),
    Option("bitat_penalty", "number", 1e-2, "first design: weight of the importance-weighted binarization penalty",
           range=Range(0, None)),
    Option("bitat_importance_power", "number", 0.5, "s starts as the eigenvalues to this power", range=Range(0, None)),
    Option("bitat_final", "number", 0.25, "fraction of the epochs fine-tuning the all-binary network at the end",
           range=Range(0, 1, high_open=True)),
    Option("bitat_warmup", "number", 0.0, "fraction of the epochs in full precision first",
           range=Range(0, 1, high_open=True)),
    Option("bitat_stages", "integer", None, "first design: stages of the progressive schedule (unset: one per layer)",
           range=Range(1, None)),
    Option("bitat_codes", "choice", None,
           "how a layer's signs are chosen when it switches to binary (unset: importance in the second design, "
           "sign in the first)", choices=("importance", "sign")),
    Option("bitat_codes_every", "integer", 0, "re-apply importance codes every this many steps (0: at the switch)",
           range=Range(0, None)),
    Option("bitat_max_eigen_dim", "integer", BITAT_MAX_EIGEN_DIM,
           "layers with more inputs keep the coordinate basis (an eigendecomposition costs n^3)",
           range=Range(0, None)),
    # The second design's own options (docs/bitat.md, "Second design").
    Option("bitat_freeze", "bool", True, "second design: a layer's weights are frozen once it is binary"),
    Option("bitat_aggregate", "bool", None,
           "second design: the block's binary layers stay in an objective against --teacher (unset: on with one)"),
    Option("bitat_aggregate_weight", "number", 1.0, "second design: weight of the block objective",
           range=Range(0, None)),
    Option("bitat_block_size", "integer", 2, "second design: binary layers per block (ReActNet: 3x3 + 1x1)",
           range=Range(1, None)),
)

#: Noise tempering (``--quant noise``, ``hwq.quant.noise``): the quantization error times ``1 + std(p) * N(0, 1)``,
#: ``std(p) = noise_std * exp(-noise_decay * p)`` over the training's progress ``p``.
NOISE_OPTIONS: tuple[Option, ...] = UNIFORM_OPTIONS + (
    Option("noise_std", "number", 1.0, "initial std of the noise, relative to each value's quantization error",
           range=Range(0, None)),
    Option("noise_decay", "number", 5.0, "k of the decay: the noise std at progress p is noise_std * exp(-k p)",
           range=Range(0, None)),
    Option("noise_grad_scale", "bool", True, "learn a scale of the task-loss gradient per quantizer (false: 1)"),
    Option("noise_grad_scale_lr_scale", "number", 0.1, "learning-rate factor of the learned gradient scales",
           range=Range(0, None)),
)

#: Oscillation dampening and iterative freezing (``--quant osc``, ``hwq.quant.oscillation``); the dampening weight
#: and the freezing threshold each go from their start to their ``_end`` value on a cosine over the training.
OSC_OPTIONS: tuple[Option, ...] = UNIFORM_OPTIONS + (
    Option("osc_dampen", "number", 0.0, "weight of the dampening loss at the start (the reference code's 0)",
           range=Range(0, None)),
    Option("osc_dampen_end", "number", 0.1, "weight of the dampening loss at the end (the reference code's 0.1)",
           range=Range(0, None)),
    Option("osc_freeze_threshold", "number", 0.1,
           "oscillation frequency above which a weight is frozen, at the start (0 here and at the end: no freezing)",
           range=Range(0, 1)),
    Option("osc_freeze_threshold_end", "number", 0.01, "the freezing threshold at the end (the reference code's 0.01)",
           range=Range(0, 1)),
    Option("osc_momentum", "number", 0.01, "momentum of the EMAs of oscillation events and integer weights",
           range=Range(0, 1, low_open=True)),
)

#: AdderNet's reference code scales each filter gradient to L2 norm ``sqrt(k) / 5`` (``hwq.quant.adder``).
ADDER_DEFAULT_ETA = 0.2

ADDER_OPTIONS = (
    Option("adder_eta", "number", ADDER_DEFAULT_ETA,
           "AdderNet's adaptive learning rate: each adder layer's weight gradient is scaled to L2 norm eta*sqrt(k)",
           range=Range(0, None, low_open=True)),
    Option("adder_first", "bool", False, "the first layer adds too (AdderNet: it multiplies, like the classifier)"),
)

# --- training pieces (hwq.train.objectives, hwq.train.optimizers) ---------------------------------------------
# A method (hwq.methods) names an objective (how a step turns a batch into gradients) and an optimizer; their
# options are the run's ``method_options`` (``--method-option KEY=VALUE``). A new piece declares its options here.
#: SAM's radius: the perturbation's norm over every perturbed tensor together (SAQ's CIFAR script: 0.4 at 4 bits;
#: HERO's ``step_size``: 0.5 on CIFAR-10).
RHO = Option("rho", "number", 0.05, "radius of the weight perturbation, ||eps|| (SAM's rho)",
             range=Range(0, None, low_open=True))
SAM_POINT = Option("sam_point", "choice", "quantized",
                   "where a quantized layer is perturbed: quantized (SAQ: Q(w) + eps) or latent (Q(w + eps))",
                   choices=("quantized", "latent"))
HERO_LAMBDA = Option("hero_lambda", "number", 1.0,
                     "weight of HERO's Hessian penalty, sum over weight tensors of mean((g(w+eps) - g(w))^2)",
                     range=Range(0, None))

OBJECTIVE_OPTIONS: dict[str, tuple[Option, ...]] = {
    "plain": (),
    # once-QAT (hwq.train.objectives.LayeredObjective, hwq.quant.layered): the members trained with the run's bits
    "layered": (
        Option("once_bits", "numbers", [2],
               "the lower bit-widths (W = A) sliced from the run's and trained with it at every step",
               range=Range(2, 8)),
        Option("once_sample", "choice", "all",
               "which bit-widths a step trains: all (the run's and every member, losses summed) or random (one of "
               "them, drawn per step from the seed and the step: the quantization-robust FedAvg clients' default)",
               choices=("all", "random")),
    ),
    "sam": (RHO, SAM_POINT),
    "hero": (RHO, HERO_LAMBDA),
    # SSQL (hwq.train.objectives.SsqlObjective, hwq.train.ssql): the random bit-widths are the paper's ranges.
    "ssql": (
        Option("ssql_pretrain_epochs", "number", 0.3,
               "self-supervised pretraining first: a fraction of --epochs (< 1) or a count of epochs (>= 1)",
               range=Range(0, None, low_open=True)),
        Option("ssql_wbits", "numbers", [2, 3, 4, 5, 6, 7, 8],
               "weight bit-widths the quantized view draws from at each step (SSQL: 2..8)", range=Range(2, 8)),
        Option("ssql_abits", "numbers", [4, 5, 6, 7, 8],
               "activation bit-widths the quantized view draws from at each step (SSQL: 4..8)", range=Range(2, 8)),
        Option("ssql_dim", "integer", 64, "width of the projection head (dropped after pretraining)",
               range=Range(4, None)),
    ),
}
OPTIMIZER_OPTIONS: dict[str, tuple[Option, ...]] = {
    "adam": (),
    "madam": (
        Option("lns_bits", "integer", 8, "bits of an LNS weight: one sign bit, the rest the exponent",
               range=Range(2, 8)),
        Option("lns_gamma", "integer", 8, "LNS base 2^(1/gamma): gamma exponent steps per octave",
               range=Range(1, 64)),
        Option("madam_lr_scale", "number", 10.0,
               "Madam's learning rate over --lr (Adam's); a step under half an LNS spacing, ln2/gamma, rounds away",
               range=Range(0, None, low_open=True)),
    ),
}

# --- bit-width searches (hwq.mixed.search) ---------------------------------------------------------------------
# A method that searches per-layer weight bits under ``--budget`` (hwq.methods: ``search``) reads these too.
SEARCH_BITS = Option("search_bits", "numbers", [1, 2, 4, 8], "the candidate weight bit-widths of every layer",
                     range=Range(1, 8))
SEARCH_BATCHES = Option("search_batches", "integer", 4,
                        "training batches (of --batch-size) a sensitivity is averaged over", range=Range(1, None))
SEARCH_OPTIONS: dict[str, tuple[Option, ...]] = {
    # BMPQ: bit-gradient sensitivity, solved before the first epoch and again every search_every epochs
    "bmpq": (SEARCH_BITS, SEARCH_BATCHES,
             Option("search_every", "integer", 1, "epochs between two solves (the first is before training)",
                    range=Range(1, None))),
    # SAQ's generator: sharpness per layer after search_warmup epochs, solved once, then trained at that map
    "saq": (SEARCH_BITS, SEARCH_BATCHES,
            Option("search_warmup", "integer", 1,
                   "epochs trained at --wbits before the sharpness is measured and the map chosen (< --epochs)",
                   range=Range(1, None))),
}

# --- models (hwq.models) ---------------------------------------------------------------------------------------
FC_OPTIONS: tuple[Option, ...] = ()
CNV_OPTIONS: tuple[Option, ...] = ()
RESNET_OPTIONS: tuple[Option, ...] = ()

PAD_VALUE = Option("pad_value", "number", None,
                   "padding of the depthwise convolutions (unset: -1 with binary activations, which have no 0, else 0)")


def _width(default: float) -> Option:
    return Option("width", "number", default, "channel multiplier of MobileNet-v1's widths",
                  range=Range(0, 4, low_open=True))


MOBILENET_OPTIONS = (_width(0.5), PAD_VALUE)
MOBILENET_TINY_OPTIONS = (_width(1.0), PAD_VALUE)

#: The k bits of ReActNet's real-valued path (shortcuts, block outputs): a published FPGA ReActNet uses 4 to 6.
SHORTCUT_BITS = Option("shortcut_bits", "integer", 4,
                       "bits of the shortcuts and block outputs around the binary convolutions",
                       range=Range(2, 8))
CLASSIFIER_BITS = Option("classifier_bits", "integer", 8, "weight bits of the classifier (after the average pool)",
                         range=Range(2, 8))
BLOCK_SHAPE = Option("block_shape", "choice", "affine",
                     "each block's learned activation shape: affine (a batch norm) or rprelu (then ReActNet's "
                     "RPReLU, slope >= 0.01)",
                     choices=("affine", "rprelu"))
REACTNET_OPTIONS = (_width(0.5), SHORTCUT_BITS, CLASSIFIER_BITS, PAD_VALUE, BLOCK_SHAPE)
REACTNET_TINY_OPTIONS = (_width(0.5), SHORTCUT_BITS, CLASSIFIER_BITS, PAD_VALUE, BLOCK_SHAPE)


# --- per-layer bit-widths (``precision:``, hwq.models.precision) ---------------------------------------------------
#: The bit-widths a layer of the map may take: hwq.quant.spec's MIN_BITS..MAX_BITS (tests/test_precision.py checks).
PRECISION_BITS = tuple(range(1, 9))


def check_precision_map(precision: Any, where: str = "precision") -> dict[str, int]:
    """``precision`` as a dict of module path -> bits (1..8), or a one-line ConfigError naming ``where``."""
    if not isinstance(precision, Mapping):
        raise ConfigError(f"{where}: expected a mapping of layer names to bit-widths (e.g. features.2: 4), "
                          f"got {precision!r}")
    for name, bits in precision.items():
        if not isinstance(name, str) or not name:
            raise ConfigError(f"{where}: layer names are module paths such as features.2, got {name!r}")
        if isinstance(bits, bool) or not isinstance(bits, int) or bits not in PRECISION_BITS:
            raise ConfigError(f"{where}.{name}: expected a bit-width, an integer {PRECISION_BITS[0]}.."
                              f"{PRECISION_BITS[-1]}, got {bits!r}")
    return dict(precision)
