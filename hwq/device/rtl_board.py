# SPDX-License-Identifier: BSD-3-Clause
"""The RTL board: the emulated board whose accelerator is the generated circuit itself (``hwq emulate --rtl``).

:class:`RTLAccelerator` answers ``infer N W`` by streaming the loaded input through the build's Verilog, compiled
by Verilator into a cycle-accurate model (:mod:`hwq.rtl.cycle_model`), and reads both the class and the time from
the circuit: W warm-ups from an idle circuit, then N timed inferences from an idle circuit, the window lasting until
the N-th result came out (pipeline fill, FIFOs and every stall included), at the build's clock (the Fmax nextpnr
measured, or the board clock without synthesis). So a host measures what the circuit does, not the estimate: a
circuit that stalls measures lower, one that deadlocks answers ``e-[infer: ...]`` within the idle limit.

For large N the circuit runs until its initiation interval is periodic (the second half of the simulated results
repeats with a period of at most :data:`MAX_PERIOD` images) and the rest of the window is extrapolated from that
period; the reply's ``m-rtl-[...]`` line says how many inferences were simulated. Everything else (the protocol,
the virtual clock, power, pacing, faults) is the emulated board's (:mod:`hwq.device.emulator`).
"""

from __future__ import annotations

import time
from fractions import Fraction
from pathlib import Path

import numpy as np

from hwq.accelerator import CLASS_INDEX
from hwq.classes import top_class
from hwq.device.dut import AcceleratorError
from hwq.device.emulator import EmulatedAccelerator
from hwq.errors import HwqError

#: Inferences simulated first for a window; doubled (up to :data:`MAX_SIMULATED`) until the results are periodic.
FIRST_SIMULATED = 64
MAX_SIMULATED = 4096
#: The longest period (in images) of the results' intervals looked for.
MAX_PERIOD = 16


def periodic_cycles(ends: list[int]) -> tuple[int, int] | None:
    """``(q, cycles)`` where the intervals between the second half of ``ends`` repeat every ``q`` images, which then
    take ``cycles`` cycles; None when they do not repeat with a period of at most :data:`MAX_PERIOD`.

    >>> periodic_cycles([10, 14, 18, 22, 26, 30]), periodic_cycles([10, 13, 17, 20, 24, 27, 31, 34, 38, 41, 45, 48])
    ((1, 4), (2, 7))
    """
    half = ends[len(ends) // 2:]
    gaps = np.diff(half)
    for q in range(1, min(MAX_PERIOD, len(gaps) // 2) + 1):
        if np.array_equal(gaps[q:], gaps[:-q]):
            return q, int(half[-1] - half[-1 - q])
    return None


class RTLAccelerator(EmulatedAccelerator):
    """The emulated board with the circuit as its accelerator (see the module doc)."""

    def __init__(self, model, cycle_model, realtime: bool = False, wait=time.sleep) -> None:
        super().__init__(model, realtime, wait)
        self.cycle_model = cycle_model
        design = cycle_model.design
        if design.in_beats * design.in_beat != model.input_bytes:
            raise HwqError(f"{model.build_dir}: the design takes {design.in_beats * design.in_beat} input elements, "
                           f"the accelerator section {model.input_bytes} bytes")
        self._runs: dict[bytes, tuple[list[int], list[int]]] = {}   # input -> (ends simulated, outputs)
        self.origin = "a design"                                    # where the circuit came from (rtl_design)
        self.simulated = 0                                          # inferences simulated so far (all windows)

    def profile(self) -> tuple[str, str]:
        spec = self.model.accelerator
        return f"hwq RTL board (Verilator) {spec.board} {spec.clock_mhz:g}MHz", spec.model_id

    def close(self) -> None:
        self.cycle_model.close()

    def _ends(self, data: bytes, n: int) -> tuple[list[int], list[int]]:
        """At least min(n, periodic) simulated results for ``data`` (cached per input: the circuit is
        deterministic)."""
        ends, outputs = self._runs.get(data, ([], []))
        want = min(n, FIRST_SIMULATED)
        while len(ends) < n:
            if len(ends) >= want:
                if periodic_cycles(ends) is not None or len(ends) >= MAX_SIMULATED:
                    break
                want = min(n, 2 * len(ends), MAX_SIMULATED)
            try:
                run = self.cycle_model.run(np.frombuffer(data, dtype=np.uint8), want)
            except HwqError as err:          # a deadlock, or the model's process gone: the command's error
                raise AcceleratorError(str(err)) from None
            ends, outputs = run.ends, run.outputs
            self.simulated += want
        if len(self._runs) > 64:
            self._runs.clear()
        self._runs[data] = (ends, outputs)
        return ends, outputs

    def window(self, data: bytes, n: int) -> tuple[Fraction, list[int], int]:
        """(cycles from the first input to the n-th result, the outputs, inferences simulated) from idle."""
        if n <= 0:
            return Fraction(0), [], 0
        ends, outputs = self._ends(data, n)
        if n <= len(ends):
            return Fraction(ends[n - 1]), outputs, n
        period = periodic_cycles(ends)
        if period is None:
            raise AcceleratorError(f"the circuit's results did not become periodic within {len(ends)} inferences: "
                                   f"cannot extrapolate to {n}")
        q, cycles = period
        return ends[-1] + Fraction(cycles, q) * (n - len(ends)), outputs, len(ends)

    def compute(self, data: bytes, n: int, warmup: int) -> tuple[Fraction, Fraction, list[float], list[str]]:
        """The circuit's cycles for the warm-ups and the window (each from an idle circuit), its class, and the
        ``m-rtl-[...]`` line saying how many inferences were simulated."""
        warm_cycles, _, warm_simulated = self.window(data, warmup)
        cycles, outputs, simulated = self.window(data, n)
        scores = [0.0] * self.model.num_classes
        if self.model.accelerator.output_kind == CLASS_INDEX:
            label = outputs[0]
            if not 0 <= label < len(scores):
                raise AcceleratorError(f"the circuit output class {label}, outside 0..{len(scores) - 1}")
        else:
            label = top_class(np.asarray(outputs))
        scores[label] = 1.0
        note = f"m-rtl-[simulated {simulated} of {n} timed, {warm_simulated} of {warmup} warm-up inferences]"
        return warm_cycles, cycles, scores, [note]


#: The step of a FINN build whose checkpoint is the folded graph the open backend reads (as its own build does).
FOLDED_GRAPH_STEP = "estimate"


def rtl_design(model):
    """The design the RTL board runs for the build ``model`` was read from: an open build's generated Verilog (its
    manifest's ``design``), or, for a FINN build, hwq's generator run on the build's folded graph (FINN's folding;
    written under ``BUILD/rtl_board/verilog``, so the circuit is hwq's, not FINN's HLS, at FINN's folding).
    Returns (design, where it came from); a build with neither is a one-line HwqError."""
    from qonnx.core.modelwrapper import ModelWrapper

    from hwq.manifest import step_checkpoint
    from hwq.onnx_check import check_domains
    from hwq.rtl.generate import generate_verilog
    from hwq.rtl.layers import UnsupportedLayerError, layers_from_model
    from hwq.rtl.steps import design_from_record

    build, where = Path(model.build_dir), Path(model.build_dir) / "manifest.json"
    record = model.manifest.get("design")
    if isinstance(record, dict):
        design = design_from_record(record, build)
        missing = [str(f) for f in design.files if not Path(f).is_file()]
        if missing:
            raise HwqError(f"{where}: design file {missing[0]} not found (rebuild)")
        return design, "the open build's generated Verilog"
    folded = step_checkpoint(model.manifest, FOLDED_GRAPH_STEP)
    if folded is None or not (build / folded).is_file():
        raise HwqError(f"{where}: neither a generated design nor the checkpoint of step {FOLDED_GRAPH_STEP} (the "
                       "RTL board needs an open build, or a FINN build that got as far as its estimate)")
    from hwq.dataflow.finn_compat import import_finn_layers

    import_finn_layers()
    try:
        layers = layers_from_model(ModelWrapper(check_domains(build / folded, source=build / folded)))
    except UnsupportedLayerError as err:
        raise HwqError(f"{build / folded}: the open backend's generator cannot make this FINN build's circuit: "
                       f"{err}") from None
    design = generate_verilog(layers, build / "rtl_board" / "verilog", top="accel")
    return design, f"hwq's Verilog generator at the FINN build's folding ({folded})"


def rtl_accelerator(model, realtime: bool = False, wait=time.sleep) -> RTLAccelerator:
    """The RTL board of the build ``model`` was read from (:func:`rtl_design`), compiled under ``BUILD/rtl_board``."""
    from hwq.rtl.cycle_model import CycleModel

    design, origin = rtl_design(model)
    accelerator = RTLAccelerator(model, CycleModel.build(design, Path(model.build_dir) / "rtl_board"), realtime, wait)
    accelerator.origin = origin
    return accelerator
