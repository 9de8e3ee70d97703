# SPDX-License-Identifier: BSD-3-Clause
"""What a build directory says about the accelerator: its HW-layer graph, its input layout and its timing.

The HW graph is the checkpoint of the build's ``create_dataflow_partition`` step, named in the manifest's
``steps``, which the bit-exactness gate executed: every layer still executes in Python, bit-exact with the
hardware. Its input is
``uint8`` pixels in the accelerator's layout (NHWC for images; a leading NCHW->NHWC Transpose runs on the host).
Timing comes from the manifest: the initiation interval is ``max_cycles`` (the slowest layer), the pipeline fill
is ``critical_path_cycles``, both at the board clock.

>>> model = BuildModel.from_build_dir("runs/tfc-digits/build-pynq-z2")      # doctest: +SKIP
>>> model.classify(model.to_device_bytes(image))                           # doctest: +SKIP
7
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from hwq._io import read_json
from hwq.classes import top_class
from hwq.errors import HwqError

#: Build steps whose checkpoint is the abstract HW-layer graph, best first (looked up in the manifest's steps).
HW_GRAPH_STEPS = ("create_dataflow_partition",)


@dataclass
class BuildModel:
    """The emulated accelerator: HW graph, input/output shapes, class count, cycles and clock."""

    build_dir: Path
    onnx_path: Path
    manifest: dict
    model: object                   # qonnx ModelWrapper
    in_shape: tuple[int, ...]
    num_classes: int
    ii_cycles: int                  # initiation interval: cycles between results once the pipeline is full
    fill_cycles: int                # cycles from first input to first result
    clock_mhz: float

    @classmethod
    def from_build_dir(cls, build_dir: str | Path) -> BuildModel:
        """Load ``build_dir`` (written by ``hwq build``); raises HwqError naming what is missing."""
        from qonnx.core.modelwrapper import ModelWrapper

        build_dir = Path(build_dir)
        manifest = read_json(build_dir / "manifest.json", "build manifest")
        from hwq.manifest import step_checkpoint

        onnx = next((build_dir / step_checkpoint(manifest, s) for s in HW_GRAPH_STEPS
                     if step_checkpoint(manifest, s)), None)
        if onnx is None or not onnx.is_file():
            raise HwqError(f"{build_dir}/manifest.json: no HW-layer graph saved by step "
                           f"{' or '.join(HW_GRAPH_STEPS)}")
        total = manifest.get("estimates", {}).get("total", {})
        for key in ("max_cycles", "critical_path_cycles", "clock_mhz"):
            if not total.get(key):
                raise HwqError(f"{build_dir}/manifest.json: estimates.total.{key} missing")
        import finn.custom_op.fpgadataflow  # noqa: F401  (registers FINN's HW layers for execution)

        from hwq.dataflow.passes import CorrectPopcountDatatypes

        from hwq.onnx_check import check_domains

        check_domains(onnx)  # an untrusted graph file: no node may name a module for qonnx to import
        # The saved HW graph predates the build's datatype correction (finn-plus declares INT7 for a 0..64
        # popcount): apply it, so the emulated board is the corrected hardware and no tensor exceeds its type.
        model = ModelWrapper(str(onnx)).transform(CorrectPopcountDatatypes())
        in_shape = tuple(model.get_tensor_shape(model.graph.input[0].name))
        return cls(build_dir, onnx, manifest, model, in_shape, _num_classes(model),
                   int(total["max_cycles"]), int(total["critical_path_cycles"]), float(total["clock_mhz"]))

    @property
    def input_bytes(self) -> int:
        return int(np.prod(self.in_shape))

    @property
    def estimated_fps(self) -> float:
        return self.clock_mhz * 1e6 / self.ii_cycles

    def window_cycles(self, n: int) -> int:
        """Cycles for ``n`` back-to-back inferences: pipeline fill, then one initiation interval each."""
        return self.fill_cycles + (n - 1) * self.ii_cycles if n > 0 else 0

    def to_device_bytes(self, image: np.ndarray) -> bytes:
        """One ``uint8`` image (C, H, W) or flat vector as the accelerator's input bytes (NHWC for images)."""
        x = np.asarray(image, dtype=np.uint8)
        if x.ndim == 3 and len(self.in_shape) == 4 and tuple(self.in_shape[1:]) == x.shape[1:] + x.shape[:1]:
            x = x.transpose(1, 2, 0)
        if x.size != self.input_bytes:
            raise HwqError(f"{self.onnx_path.name}: input has {x.size} values, the accelerator takes "
                           f"{self.input_bytes}")
        return np.ascontiguousarray(x).tobytes()

    def classify(self, data: bytes) -> int:
        """Execute the HW graph on one input (accelerator layout) and return the class it outputs.

        The class is the label selection's output; it is checked against the class rule (:mod:`hwq.classes`,
        the first arg-max of the integer scores the label selection reads), so the emulated board, the host
        reference and every other stage decide a tie alike."""
        from qonnx.core.onnx_exec import execute_onnx

        if len(data) != self.input_bytes:
            raise HwqError(f"{self.onnx_path.name}: got {len(data)} input bytes, expected {self.input_bytes}")
        x = np.frombuffer(data, dtype=np.uint8).astype(np.float32).reshape(self.in_shape)
        name = self.model.graph.input[0].name
        context = execute_onnx(self.model, {name: x}, return_full_exec_context=True)
        label = int(np.asarray(context[self.model.graph.output[0].name]).reshape(-1)[0])
        select = self.model.find_producer(self.model.graph.output[0].name)
        if select is not None and select.op_type.startswith(("LabelSelect", "TopK")):
            expected = top_class(np.asarray(context[select.input[0]]).reshape(-1))
            if label != expected:
                raise HwqError(f"{self.onnx_path.name}: node '{select.name}' selected class {label}, the class "
                               f"rule (first arg-max of its integer scores) gives {expected}")
        return label

    def scores(self, data: bytes) -> list[float]:
        """The output vector sent in ``m-results``: one-hot on the class (the accelerator returns top-1 only)."""
        vec = [0.0] * self.num_classes
        vec[self.classify(data)] = 1.0
        return vec


def _num_classes(model) -> int:
    from qonnx.custom_op.registry import getCustomOp

    for node in model.graph.node:
        if node.op_type.startswith("LabelSelect"):
            return int(getCustomOp(node).get_nodeattr("Labels"))
    out = model.get_tensor_shape(model.graph.output[0].name)
    return int(out[-1]) if out else 1


class VirtualClock:
    """A cycle counter at the board clock, read in whole microseconds (floored, like a hardware timer).

    >>> clock = VirtualClock(100.0); clock.advance(250); clock.us()
    2
    """

    def __init__(self, clock_mhz: float) -> None:
        self.cycles = 0
        self._mhz = Fraction(clock_mhz).limit_denominator(1_000_000)

    def advance(self, cycles: int) -> None:
        self.cycles += int(cycles)

    def us(self) -> int:
        return int(Fraction(self.cycles) / self._mhz)
