# SPDX-License-Identifier: BSD-3-Clause
"""Quantization-aware training methods (``hwq train --method NAME``), as data.

A method names everything a paper changes about training: the quantizer family and the family options it sets
(which is where an estimator or a regularizer of the quantizer lives), the objective (how one step turns a batch
into gradients: plain backward, a sharpness-aware step, ...) and the optimizer. Each is a shared piece that several
methods may name; a piece's own options are the run's ``method_options`` (``--method-option KEY=VALUE``), declared
in :mod:`hwq.options`. ``--quant`` still picks a family alone; the two together must agree. This module imports no torch, so ``TrainConfig`` resolves a method when it is made and
``hwq models`` lists the methods.

>>> resolve_method("n2uq", None)
('n2uq', 'n2uq')
>>> resolve_method(None, "float")
(None, 'float')
>>> resolve_method("n2uq", "uniform")  # doctest: +ELLIPSIS
Traceback (most recent call last):
hwq.errors.ConfigError: method: --method n2uq trains with --quant n2uq, got --quant uniform; ...

A method that changes only the objective or the optimizer (``any_quant``) has a default family that ``--quant``
may replace:

>>> resolve_method("hero", None), resolve_method("hero", "uniform")
(('hero', 'float'), ('hero', 'uniform'))
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Any

from hwq import options as o
from hwq.errors import ConfigError

#: The family a run uses when neither ``--method`` nor ``--quant`` is given.
DEFAULT_QUANT = "uniform"


@dataclass(frozen=True)
class Method:
    """What one training method sets: its quantizer family and that family's option defaults."""

    description: str
    quant: str
    #: ``model_options`` the method sets unless the run sets them itself.
    options: dict[str, Any] = field(default_factory=dict)
    #: How a step turns a batch into gradients (:mod:`hwq.train.objectives`).
    objective: str = "plain"
    #: What turns gradients into new weights (:mod:`hwq.train.optimizers`).
    optimizer: str = "adam"
    #: True for a method of the objective or the optimizer alone: ``quant`` is then its default family and
    #: ``--quant`` may name any other.
    any_quant: bool = False
    #: The fewest weight bits it trains (a multiplicative update never flips a sign: 1-bit weights could not move).
    min_wbits: int = 1
    #: Whether its layers train with dropout (``--dropout``); a method whose layers do not asks for ``--dropout 0``
    #: and says why.
    dropout: bool = True
    #: Why it takes no dropout (the one-line error's reason).
    no_dropout_reason: str = ""
    #: The bit-width search it runs under ``--budget`` (:mod:`hwq.mixed.search`: ``bmpq``, ``saq``); None: none.
    search: str | None = None

    def declared_options(self) -> tuple[o.Option, ...]:
        """The ``method_options`` this method reads: its objective's, its optimizer's and its search's."""
        search = o.SEARCH_OPTIONS[self.search] if self.search else ()
        return o.OBJECTIVE_OPTIONS[self.objective] + o.OPTIMIZER_OPTIONS[self.optimizer] + search


#: Method name -> what it sets. The names of the existing families are methods of that family alone.
METHODS: dict[str, Method] = {
    "uniform": Method("straight-through uniform QAT, Brevitas learned scales (the --quant uniform family)",
                      "uniform"),
    "n2uq": Method("N2UQ: learned non-uniform thresholds, uniform output levels (docs/n2uq.md)", "n2uq"),
    "bitat": Method("BiTAT: importance-weighted, progressive binarization (docs/bitat.md)", "bitat"),
    "lsq": Method("LSQ (Esser et al. 2020): learned step size, its init and gradient scale (docs/methods.md)",
                  "lsq"),
    "noise": Method("noise tempering (Wang et al. 2022): decaying quantization-error noise and a learned gradient "
                    "scale per quantizer; deployed as uniform (docs/methods.md)", "noise",
                    options={opt.name: opt.default for opt in o.NOISE_OPTIONS if opt.name.startswith("noise_")}),
    "osc": Method("oscillation dampening and iterative weight freezing (Nagel et al. 2022); deployed as uniform "
                  "(docs/methods.md)", "osc",
                  options={opt.name: opt.default for opt in o.OSC_OPTIONS if opt.name.startswith("osc_")}),
    "saq": Method("SAQ (Liu et al.): sharpness-aware minimization of the quantized model, eps added to Q(w); "
                  "any --quant (docs/methods.md)", "uniform", objective="sam", any_quant=True),
    "hero": Method("HERO (Yang et al., DAC 2022): SAM plus a Hessian-eigenvalue penalty; float by default, any "
                   "--quant (docs/methods.md)", "float", objective="hero", any_quant=True),
    "lns-madam": Method("LNS-Madam (Zhao et al. 2022): multiplicative updates of weights kept in a logarithmic "
                        "number system; deployed uniform at --wbits (docs/methods.md)", "uniform",
                        optimizer="madam", min_wbits=2),
    "lqnet": Method("LQ-Nets (Zhang et al. 2018): learned weight and activation bases, QEM updates (docs/methods.md)",
                    "lqnet"),
    "dirnet": Method("DIR-Net (Qin et al. 2022): balanced, standardized binary weights, two-stage sign estimator, "
                     "representation distillation with --teacher (docs/methods.md)", "dirnet"),
    "ssql": Method("SSQL (Cao et al. 2022): SimSiam pretraining contrasting random-bit and full-precision views, "
                   "then QAT at --wbits/--abits (docs/methods.md)", "uniform", objective="ssql"),
    "adder": Method("AdderNet (Chen et al. 2020): -sum|x - w| layers, quantized on one grid (Nie et al. 2022; "
                    "docs/methods.md)", "adder", dropout=False,
                    no_dropout_reason="an L1 distance does not keep its mean under dropout's zeros and 1/(1-p) "
                                      "rescaling (digits TFC W2A2: 22% test top-1 with 0.2, 94% with 0)"),
    "once": Method("once-QAT by vertical layering: the lower bit-widths of --method-option once_bits are slices of the "
                   "run's integers, trained with it; hwq export RUN --bits b (docs/mixed_precision.md)", "uniform",
                   objective="layered", min_wbits=3),
    "bmpq": Method("BMPQ (Kundu et al., DATE 2022): per-layer weight bits from bit-gradient sensitivity, an integer "
                   "program under --budget re-solved during one training from scratch (docs/mixed_precision.md)",
                   "uniform", search="bmpq"),
    "saq-gen": Method("SAQ's bit-width generator (Liu et al.): per-layer sharpness after a warm-up, weight bits under "
                      "--budget, then SAQ's objective at that map (docs/mixed_precision.md)", "uniform",
                      objective="sam", search="saq"),
}

#: The methods that search per-layer bit-widths (and so take ``--budget``).
SEARCH_METHODS = tuple(name for name, m in METHODS.items() if m.search)


def method_named(name: str) -> Method:
    """The method called ``name``; a one-line ConfigError listing the known ones otherwise."""
    if not isinstance(name, str):
        raise ConfigError(f"method: expected a method name (a string) or null, got {name!r}")
    if name not in METHODS:
        close = difflib.get_close_matches(name, METHODS, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise ConfigError(f"method: unknown method '{name}'{hint}; known: {', '.join(METHODS)}")
    return METHODS[name]


def resolve_method(method: str | None, quant: str | None) -> tuple[str | None, str]:
    """``(method, quant)`` of a run given either, both or neither.

    A method sets its family; a family alone is recorded as the method of the same name where there is one
    (``--quant uniform`` is ``--method uniform``), else as no method (``float``, a user-registered family).
    """
    if method is None:
        quant = DEFAULT_QUANT if quant is None else quant
        return (quant if isinstance(quant, str) and quant in METHODS else None), quant
    wanted = method_named(method).quant
    if quant is not None and METHODS[method].any_quant:
        return method, quant
    if quant is not None and quant != wanted:
        raise ConfigError(f"method: --method {method} trains with --quant {wanted}, got --quant {quant}; "
                          f"give one of the two, or matching ones")
    return method, wanted


def check_method_precision(method: str | None, precision: dict, layers) -> None:
    """A one-line ConfigError when ``precision`` gives a layer fewer weight bits than the method trains (``layers``:
    the model's quantized layers, :class:`hwq.models.precision.QuantizedLayer`)."""
    if method is None or not precision:
        return
    least = METHODS[method].min_wbits
    for layer in layers:
        named = [name for name in layer.names if name in precision]
        if named and layer.role == "weight" and layer.bits < least:
            raise ConfigError(f"precision.{named[0]}: --method {method} trains {least} or more weight bits, got "
                              f"{layer.bits}")


def check_method_bits(method: str | None, wbits: Any) -> None:
    """A one-line ConfigError when the method cannot train ``wbits``-bit weights.

    >>> check_method_bits("lns-madam", 1)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    hwq.errors.ConfigError: wbits: --method lns-madam trains 2 or more weight bits, got 1; ...
    """
    if method is None or not isinstance(wbits, int):
        return
    least = METHODS[method].min_wbits
    if wbits < least:
        raise ConfigError(f"wbits: --method {method} trains {least} or more weight bits, got {wbits}; its "
                          f"multiplicative update never flips a weight's sign")


def check_method_options(method: str | None, options: Any) -> None:
    """A one-line ConfigError for a ``method_options`` key the method does not read or a value it does not take.

    >>> check_method_options("uniform", {"rho": 0.05})  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    hwq.errors.ConfigError: method_options.rho: not an option of --method uniform; known: none
    """
    if not isinstance(options, dict) or not all(isinstance(k, str) for k in options):
        raise ConfigError(f"method_options: expected a mapping of option names to values, got {options!r}")
    if options and method is None:
        raise ConfigError("method_options: given without a method; name one with --method ('hwq models' lists "
                          "each one's options)")
    if method is not None:
        o.check_options(options, METHODS[method].declared_options(), f"--method {method}",
                        field="method_options")


def check_method_dropout(method: str | None, dropout: float) -> None:
    """A one-line ConfigError when the method's layers take no dropout and ``dropout`` is not 0.

    >>> check_method_dropout("adder", 0.2)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    hwq.errors.ConfigError: dropout: --method adder trains without dropout (...); give --dropout 0, got 0.2
    """
    if method is not None and not METHODS[method].dropout and dropout != 0:
        raise ConfigError(f"dropout: --method {method} trains without dropout ({METHODS[method].no_dropout_reason}); "
                          f"give --dropout 0, got {dropout!r}")


def check_method_budget(method: str | None, budget: Any, board: Any) -> None:
    """A one-line ConfigError when a searching method has no ``budget``, or a method that does not search has one
    (or a ``board`` without a budget).

    >>> check_method_budget("bmpq", None, None)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    hwq.errors.ConfigError: budget: --method bmpq searches per-layer bit-widths under a hardware budget; give ...
    """
    searches = method is not None and METHODS[method].search is not None
    if searches and budget is None:
        raise ConfigError(f"budget: --method {method} searches per-layer bit-widths under a hardware budget; give "
                          f"--budget, e.g. lut=20000,fps=1e6 (and --board, default pynq-z2)")
    if budget is not None and not searches:
        raise ConfigError(f"budget: --method {method or 'none'} does not search bit-widths; --budget is for "
                          f"{', '.join(SEARCH_METHODS)}")
    if board is not None and budget is None:
        raise ConfigError("board: --board is the board a --budget is for; give --budget too")
    if budget is not None:
        if not isinstance(budget, str):
            raise ConfigError(f"budget: expected KEY=VALUE[,KEY=VALUE...] (a string), got {budget!r}")
        from hwq.cost.budget import parse_budget

        parse_budget(budget)
    if board is not None and not isinstance(board, str):
        raise ConfigError(f"board: expected a board name, got {board!r}")


def method_options(method: str | None, options: dict[str, Any]) -> dict[str, Any]:
    """``options`` with the method's option defaults under them (the run's own values win)."""
    if method is None or not METHODS[method].options:
        return options
    return {**METHODS[method].options, **options}
