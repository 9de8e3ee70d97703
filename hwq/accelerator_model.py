# SPDX-License-Identifier: BSD-3-Clause
"""The functional model of a build's accelerator: the HW-layer graph its ``accelerator`` section names, executed.

The emulated board computes its answers with it, and the host harness uses it as the reference a device's answers
are compared with (accuracy mode) and to lay out a test image as the accelerator's input bytes. It reads only the
manifest's ``accelerator`` section (:mod:`hwq.accelerator`) and the graph file that section names: every layer
of that graph still executes in Python, bit-exact with the hardware (the build's gates checked it: FINN's
bit-exactness gate; for an open build also the RTL simulation). Its input is ``uint8`` pixels in the
accelerator's layout (NHWC for images: the host transposes an NCHW image).

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
from hwq.accelerator import CLASS_INDEX, AcceleratorSpec
from hwq.classes import top_class
from hwq.errors import HwqError


#: Inputs on which the NumPy reference is also run through qonnx (and must give the same class) before it is trusted.
REFERENCE_CHECKS = 2
#: Inputs per NumPy batch (bounds the memory of a large graph's intermediate tensors).
BATCH = 256


@dataclass
class BuildModel:
    """A build's accelerator: its section (timing, layout, classes) and its HW graph (qonnx ``ModelWrapper``)."""

    build_dir: Path
    accelerator: AcceleratorSpec
    manifest: dict                  # the whole manifest as read (for reports); the model uses only ``accelerator``
    onnx_path: Path
    model: object | None            # qonnx ModelWrapper of the HW graph (None until :meth:`load_graph`)
    #: what computes :meth:`classify_many`: ``numpy`` (hwq.rtl.reference, batched) or ``qonnx`` (execute_onnx)
    executor: str = "qonnx"
    executor_note: str = "not read from a build"
    reference_checked: int = 0      # inputs the NumPy reference was compared with qonnx on (up to REFERENCE_CHECKS)

    @classmethod
    def from_build_dir(cls, build_dir: str | Path, load_graph: bool = True) -> BuildModel:
        """Load ``build_dir`` (written by ``hwq build``, either backend); raises HwqError naming what is wrong.

        ``load_graph=False`` reads the section only (what a performance measurement needs: timing and the sample
        input, without importing FINN); the graph is then loaded by the first call that executes it."""
        build_dir = Path(build_dir)
        where = build_dir / "manifest.json"
        manifest = read_json(where, "build manifest")
        spec = AcceleratorSpec.from_manifest(manifest, str(where))
        onnx = build_dir / spec.hw_graph
        if not onnx.is_file():
            raise HwqError(f"{where}: accelerator.hw_graph {spec.hw_graph}: file not found in {build_dir}")
        if spec.input_dtype != "uint8":
            raise HwqError(f"{where}: accelerator.input.dtype is {spec.input_dtype!r}; the harness sends uint8 "
                           "pixels only")
        built = cls(build_dir, spec, manifest, onnx, None)
        if load_graph:
            built.load_graph()
        return built

    def load_graph(self) -> None:
        """Read the HW graph file (once): qonnx's model of it, checked against the section, and hwq's layers."""
        if self.model is not None:
            return
        from qonnx.core.modelwrapper import ModelWrapper

        from hwq.dataflow.finn_compat import import_finn_layers

        import_finn_layers()  # FINN's HW layers, executable (finn_compat workaround 8)

        from hwq.dataflow.passes import CorrectPopcountDatatypes
        from hwq.onnx_check import check_domains

        # check_domains: an untrusted graph file, no node may name a module for qonnx to import. The saved HW
        # graph predates the build's datatype correction (finn-plus declares INT7 for a 0..64 popcount): apply
        # it, so the emulated board is the corrected hardware and no tensor exceeds its type.
        onnx = self.onnx_path
        model = ModelWrapper(check_domains(onnx, source=onnx)).transform(CorrectPopcountDatatypes())
        shape = tuple(int(d) for d in model.get_tensor_shape(model.graph.input[0].name))
        if shape != self.accelerator.input_shape:
            raise HwqError(f"{onnx}: input shape {list(shape)}, accelerator.input.shape says "
                           f"{list(self.accelerator.input_shape)} (the file changed after the build: rebuild)")
        self.model = model
        self._read_reference()

    def sample_input(self) -> bytes | None:
        """The section's ``sample_input`` (the first image the gates checked, as input bytes), or None where the
        build has none; a file that is missing or of the wrong size is a one-line HwqError."""
        name = self.accelerator.sample_input
        if name is None:
            return None
        path = self.build_dir / name
        try:
            data = path.read_bytes()
        except OSError as err:
            raise HwqError(f"{path}: accelerator.sample_input cannot be read ({err.strerror or err}): rebuild")
        if len(data) != self.input_bytes:
            raise HwqError(f"{path}: accelerator.sample_input has {len(data)} bytes, the accelerator takes "
                           f"{self.input_bytes} (the file changed after the build: rebuild)")
        return data

    def _read_reference(self) -> None:
        """The HW graph as hwq's layers (:mod:`hwq.rtl.layers`), for the NumPy reference; qonnx where it has a
        layer the reference does not model."""
        from hwq.rtl.layers import UnsupportedLayerError, layers_from_model

        try:
            self._layers = layers_from_model(self.model)
        except UnsupportedLayerError as err:
            self.executor, self.executor_note = "qonnx", f"not by the NumPy reference: {err}"
            return
        self.executor, self.executor_note = "numpy", "hwq.rtl.reference, checked against qonnx on the first inputs"

    # --- what the section says ---------------------------------------------------------------------------------
    @property
    def in_shape(self) -> tuple[int, ...]:
        return self.accelerator.input_shape

    @property
    def input_bytes(self) -> int:
        return self.accelerator.input_bytes

    @property
    def num_classes(self) -> int:
        return self.accelerator.num_classes

    @property
    def ii_cycles(self) -> float:
        """Initiation interval: cycles between results once the pipeline is full."""
        return self.accelerator.cycles_per_image

    @property
    def fill_cycles(self) -> int:
        """Cycles from the first input to the first result (the pipeline latency)."""
        return self.accelerator.latency_cycles

    @property
    def clock_mhz(self) -> float:
        return self.accelerator.clock_mhz

    @property
    def estimated_fps(self) -> float:
        """Throughput at the section's clock (``accelerator.source`` says whether estimated or measured)."""
        return self.accelerator.fps

    def window_cycles(self, n: int) -> Fraction:
        """Cycles for ``n`` back-to-back inferences: pipeline fill, then one initiation interval each (exact: a
        simulated interval need not be a whole number of cycles)."""
        ii = Fraction(self.ii_cycles).limit_denominator(1_000_000)
        return self.fill_cycles + (n - 1) * ii if n > 0 else Fraction(0)

    # --- the function ------------------------------------------------------------------------------------------
    def to_device_bytes(self, image: np.ndarray) -> bytes:
        """One ``uint8`` image (C, H, W) or flat vector as the accelerator's input bytes (NHWC for images)."""
        return self.accelerator.device_bytes(image)

    def classify(self, data: bytes) -> int:
        """The class the accelerator outputs for one input (accelerator layout); see :meth:`classify_many`."""
        return self.classify_many([data])[0]

    def classify_many(self, inputs: list[bytes]) -> list[int]:
        """The class the accelerator outputs for each input (accelerator layout), by the class rule
        (:mod:`hwq.classes`: the first arg-max of the integer scores) wherever the graph outputs scores.

        Computed by the NumPy reference of the HW graph's layers (:attr:`executor` ``numpy``, batched; the first
        :data:`REFERENCE_CHECKS` inputs also by qonnx, which must agree), or by qonnx's execution of the graph,
        one input at a time, where the graph has a layer the reference does not model or the two disagreed
        (``qonnx``; :attr:`executor_note` says why)."""
        for data in inputs:
            if len(data) != self.input_bytes:
                raise HwqError(f"{self.onnx_path.name}: got {len(data)} input bytes, expected {self.input_bytes}")
        self.load_graph()
        if self.executor != "numpy" or not inputs:
            return [self._classify_qonnx(data) for data in inputs]
        from hwq.rtl.graph import run_graph

        rows = np.frombuffer(b"".join(inputs), dtype=np.uint8).reshape(len(inputs), -1).astype(np.int64)
        classes: list[int] = []
        for start in range(0, len(rows), BATCH):
            out = run_graph(self._layers, rows[start:start + BATCH])
            classes += [int(o[0]) if self.accelerator.output_kind == CLASS_INDEX else top_class(o) for o in out]
        for k in range(min(len(inputs), REFERENCE_CHECKS - self.reference_checked)):
            expected = self._classify_qonnx(inputs[k])
            self.reference_checked += 1
            if expected != classes[k]:
                self.executor = "qonnx"
                self.executor_note = (f"the NumPy reference gave class {classes[k]} where qonnx's execution of "
                                      f"{self.onnx_path.name} gives {expected}; qonnx is used")
                return [self._classify_qonnx(data) for data in inputs]
        return classes

    def _classify_qonnx(self, data: bytes) -> int:
        """qonnx's execution of the HW graph on one input. A label selection's output is checked against the class
        rule, so the emulated board, the host reference and every other stage decide a tie alike."""
        from qonnx.core.onnx_exec import execute_onnx

        self.load_graph()
        x = np.frombuffer(data, dtype=np.uint8).astype(np.float32).reshape(self.in_shape)
        name = self.model.graph.input[0].name
        context = execute_onnx(self.model, {name: x}, return_full_exec_context=True)
        out = np.asarray(context[self.model.graph.output[0].name]).reshape(-1)
        if self.accelerator.output_kind != CLASS_INDEX:
            return top_class(out)
        label = int(out[0])
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
