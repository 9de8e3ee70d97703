# SPDX-License-Identifier: BSD-3-Clause
"""Timed windows, shared by performance and energy mode: the input, the window size N, and windows that last.

* :func:`device_input`: the bytes the device infers on (first test image of the build, or zeros).
* :func:`reloading`: run a command with the input loaded; after a device reboot, reload and run it again.
* :class:`TimedWindows`: probe N (growing tenfold until a window lasts ``probe_us``), size it for
  ``min_window_s`` with a small margin, then run ``infer N W`` windows. A window is accepted only when it is
  plausible (within 2x of the probe's prediction: a dropped digit keeps the syntax) and lasts at least
  ``min_window_s``; a shorter one (the probe's rounding, the pipeline fill) enlarges N and is repeated.
* :func:`one_inference_latency`: ``infer 1 W`` windows, each timing one inference from input to result (the
  pipeline latency), which ``N / (t1 - t0)`` over a long window does not show.

>>> windows = TimedWindows.probe(dut, config, data, state)          # doctest: +SKIP
>>> r = windows.run(); windows.accept(r)                            # doctest: +SKIP
True
"""

from __future__ import annotations

import math
import statistics
from typing import Callable

from hwq.errors import HwqError
from hwq.harness.config import MeasureConfig
from hwq.harness.device import Device
from hwq.harness.errors import DeviceResetError, ProtocolError
from hwq.harness.inputs import load_test_set
from hwq.harness.protocol import InferResult

#: N is sized for this much more than ``min_window_s``: the probe's two timestamps are whole microseconds and its
#: window includes one pipeline fill, so a plain extrapolation can fall short by ~1e-4 of the window.
SIZING_MARGIN = 1e-3


def device_input(config: MeasureConfig, model) -> bytes:
    """The input the timed windows run on: the build's first test image (its ``sample_input``, else read from the
    test set), or ``input_bytes`` zeros."""
    if model is None:
        return bytes(config.input_bytes)
    sample = model.sample_input() if config.data_dir is None else None   # --data-dir: that folder's first image
    if sample is not None:
        return sample
    _, images, _ = load_test_set(config, model, samples=1)
    return model.to_device_bytes(images[0])


def new_load_state() -> dict:
    """What :func:`reloading` keeps: reboots so far, and whether the device holds the input."""
    return {"resets": 0, "loaded": False}


def reloading(dut: Device, data: bytes, config: MeasureConfig, state: dict, call: Callable[[], InferResult]):
    """Run ``call`` with ``data`` loaded; after a device reboot, reload and run it again (up to the allowance)."""
    while True:
        try:
            if not state["loaded"]:
                dut.load(data)
                state["loaded"] = True
            return call()
        except DeviceResetError:
            state["loaded"] = False
            state["resets"] += 1
            if state["resets"] > config.resets_allowed:
                raise


class TimedWindows:
    """``infer N W`` windows of at least ``config.min_window_s`` device seconds on the loaded input."""

    def __init__(self, dut: Device, config: MeasureConfig, data: bytes, state: dict, n: int, per_us: float) -> None:
        self.dut, self.config, self.data, self.state = dut, config, data, state
        self.n = n                      # inferences per window (grows if a window comes out short)
        self.per_us = per_us            # device microseconds per inference, from the probe
        self.resized: list[str] = []    # one line per window repeated with a larger N
        self._implausible = 0           # implausible windows in a row
        self._last_implausible_rate: float | None = None  # us per inference of the last implausible window

    @classmethod
    def probe(cls, dut: Device, config: MeasureConfig, data: bytes, state: dict) -> TimedWindows:
        """Grow N tenfold until a window lasts ``probe_us``, then size N for ``min_window_s`` (+ the margin)."""
        n, probe = 1, None
        while True:
            probe = reloading(dut, data, config, state, lambda: dut.infer(n, config.warmup))
            if probe.elapsed_us >= config.probe_us or n >= config.max_n:
                break
            n = min(config.max_n, n * 10)
        per_us = max(probe.elapsed_us, 1) / probe.n
        target_us = config.min_window_s * 1e6 * (1 + SIZING_MARGIN)
        return cls(dut, config, data, state, max(1, min(config.max_n, math.ceil(target_us / per_us))), per_us)

    @property
    def infer_timeout_s(self) -> float:
        """The reference host allows 30 s for ``infer``; a longer window gets 3x its expected length."""
        return max(30.0, 3 * self.n * self.per_us / 1e6)

    def run(self) -> InferResult:
        """One timed window of the current N (reloading the input after a reboot)."""
        n, warmup, timeout = self.n, self.config.warmup, self.infer_timeout_s
        return reloading(self.dut, self.data, self.config, self.state, lambda: self.dut.infer(n, warmup, timeout))

    def accept(self, r: InferResult) -> bool:
        """True for a window to keep; False (and noted) for one to repeat: implausible, or shorter than
        ``min_window_s`` (then N grows so that the repeated window is long enough)."""
        return self._plausible(r) and self._long_enough(r)

    def _plausible(self, r: InferResult) -> bool:
        """A window's duration within 2x of what the probe predicts: a lost digit keeps the reply's syntax, so it
        is caught by plausibility. A device whose speed really differs from the probe's (a board under load, a
        batch size the probe did not use) gives two implausible windows that agree with each other: their rate
        then becomes the expectation (noted), where garbled timestamps would not agree."""
        rate = r.elapsed_us / max(r.n, 1)
        if 0.5 < rate / self.per_us < 2.0:
            self._implausible, self._last_implausible_rate = 0, None
            return True
        previous, self._last_implausible_rate = self._last_implausible_rate, rate
        if previous is not None and 0.5 < rate / previous < 2.0:
            self.dut.recoveries.append(f"infer {r.n}: {rate:.3f} us per inference, twice in a row, where the probe "
                                       f"gave {self.per_us:.3f}: expectation re-based")
            self.per_us, self._implausible, self._last_implausible_rate = rate, 0, None
            return True
        self.dut.recoveries.append(f"infer {r.n}: window of {r.elapsed_us} us implausible "
                                   f"(expected ~{r.n * self.per_us:.0f} us), repeated")
        self._implausible += 1
        if self._implausible > self.config.windows:
            raise ProtocolError(f"{self.dut.link.port}: {self._implausible} implausible windows in a row")
        return False

    def _long_enough(self, r: InferResult) -> bool:
        min_us = self.config.min_window_s * 1e6
        if r.elapsed_us >= min_us:
            return True
        if r.n >= self.config.max_n:
            raise HwqError(f"a window of MeasureConfig.max_n = {self.config.max_n} inferences lasts "
                           f"{r.elapsed_us / 1e6:.6f} s, shorter than --min-window-s {self.config.min_window_s:g}: "
                           "lower --min-window-s or raise max_n")
        grown = min(self.config.max_n, max(r.n + 1, math.ceil(r.n * min_us / max(r.elapsed_us, 1)
                                                                  * (1 + SIZING_MARGIN))))
        self.resized.append(f"window of N = {r.n} lasted {r.elapsed_us / 1e6:.6f} s < --min-window-s "
                            f"{self.config.min_window_s:g}: repeated with N = {grown}")
        self.n = grown
        return False


def one_inference_latency(dut: Device, config: MeasureConfig, data: bytes, state: dict, windows: list[dict]) -> None:
    """Append ``config.latency_windows`` windows of ``infer 1 W`` to ``windows``: each times one inference,
    input to result (appended one by one, so an interrupted run keeps those it finished).

    The device's timer counts whole microseconds, so each value is the latency rounded to the timer (one of the
    two whole microseconds around it); ``clock_resolution_us`` in the summary says so.
    """
    while len(windows) < config.latency_windows:
        r = reloading(dut, data, config, state, lambda: dut.infer(1, config.warmup))
        windows.append({"t0_us": r.t0_us, "t1_us": r.t1_us, "latency_us": r.elapsed_us, "top1": r.results.top1})


def window_stats(values: list[float], name: str, unit: str) -> dict:
    """Median, min, max and spread (``(max - min) / median`` in %) of one per-window quantity, units in the keys.

    >>> window_stats([1.0, 2.0, 3.0], "throughput", "per_s")["throughput_spread_pct"]
    100.0
    """
    med = statistics.median(values)
    return {f"{name}_median_{unit}": med, f"{name}_min_{unit}": min(values), f"{name}_max_{unit}": max(values),
            f"{name}_spread_pct": 100 * (max(values) - min(values)) / med if med else None}
