# SPDX-License-Identifier: BSD-3-Clause
"""The accelerator a build made, as every later stage sees it: the ``accelerator`` section of ``manifest.json``.

Both backends write it at the end of a successful build, and whatever uses a build afterwards (the emulated
board, the host harness: input bytes, dataset, reference model, estimates; the power model) reads this section
and the file it names, nothing else of the manifest. So a FINN build and an open-backend build are measured
alike, and ``source`` says where the numbers come from:

========================================  ===================================================================
build                                     ``source``
========================================  ===================================================================
FINN backend (``hwq build``)              ``FINN analytical estimate``
open backend, open board                  ``RTL simulation (cycles) + nextpnr (Fmax, resources)``
open backend, ``synthesise: false``       ``RTL simulation (cycles) at the board clock (synthesise: false: ...)``
open backend, Xilinx board                ``RTL simulation (cycles) + Yosys synth_xilinx estimate (resources) ...``
========================================  ===================================================================

A section as written (``to_dict``; digits TFC on the Pynq-Z2)::

    {"board": "pynq-z2", "model_id": "tfc-digits",
     "input": {"layout": "flat", "shape": [1, 64], "dtype": "uint8", "bytes": 64,
               "convention": {"kind": "pixels/255", "formula": "x = pixels / 255", ...}},
     "output": {"kind": "class index", "classes": 10},
     "cycles_per_image": 8, "latency_cycles": 33, "clock_mhz": 100.0, "fps": 12500000.0, "latency_us": 0.33,
     "resources": {"lut": 37553, "ff": null, "bram": 64, "bram_kbit": 18, "dsp": 0, "uram": 0},
     "power_model": {"ps_mw": 1400, ...}, "hw_graph": "intermediate/create_dataflow_partition.onnx",
     "dataset": {"name": "digits", "data_dir": null}, "source": "FINN analytical estimate",
     "sample_input": "sample_input.bin"}

``sample_input`` (optional: builds made before it have none) is the first image the build's gates checked, as the
accelerator's input bytes: what a performance measurement streams, so that it need not load the dataset (and
torch) to send one image.

>>> spec = AcceleratorSpec.from_manifest(manifest, "runs/x/build-pynq-z2/manifest.json")    # doctest: +SKIP
>>> spec.fps, spec.input_bytes                                                              # doctest: +SKIP
(12500000.0, 64)
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hwq.errors import HwqError

SECTION = "accelerator"
#: The file (in the build folder) holding :attr:`AcceleratorSpec.sample_input`.
SAMPLE_INPUT_FILE = "sample_input.bin"
#: Build steps whose checkpoint is the abstract HW-layer graph (every layer executes in Python, bit-exact with the
#: hardware), best first: the dataflow partition's, which the bit-exactness gate executes (``verify_bit_exact``'s
#: checkpoint is the folded model it passes on).
HW_GRAPH_STEPS = ("create_dataflow_partition",)
#: Where the numbers come from, per kind of build.
FINN_SOURCE = "FINN analytical estimate"
OPEN_SOURCE = "RTL simulation (cycles) + nextpnr (Fmax, resources)"
OPEN_NO_FMAX_SOURCE = "RTL simulation (cycles) + nextpnr (resources; no Fmax reported: the board clock)"
UNSYNTHESISED_SOURCE = "RTL simulation (cycles) at the board clock (synthesise: false: no Fmax, no resources)"
XILINX_SOURCE = ("RTL simulation (cycles) + Yosys synth_xilinx estimate (resources) at the board clock "
                 "(no timing analysis)")
#: Output kinds: FINN's label selection sends the top-1 class index; a graph without one sends its scores.
CLASS_INDEX, SCORES = "class index", "scores"
#: Kilobits per block RAM cell, by the name each tool reports (the power model counts 18 Kb equivalents).
BRAM_KBIT = {"BRAM18": 18, "ICESTORM_RAM": 4, "DP16KD": 18}


@dataclass(frozen=True)
class AcceleratorSpec:
    """The ``accelerator`` section: what the accelerator takes, returns, costs and how fast it is."""

    board: str                          # boards/<board>.yaml the build targeted
    model_id: str                       # the run's name, answered in ``profile%`` (m-model-[...])
    input_layout: str                   # "NHWC" (an image, channels last) or "flat" (a vector)
    input_shape: tuple[int, ...]        # with the batch dimension: (1, 64), (1, 32, 32, 3)
    input_dtype: str                    # "uint8": raw pixels, the only input type the harness sends
    output_kind: str                    # CLASS_INDEX (top-1 label selection) or SCORES
    num_classes: int
    cycles_per_image: float             # initiation interval: cycles between results once the pipeline is full
    latency_cycles: int                 # cycles from the first input beat to the result
    clock_mhz: float                    # the clock those cycles run at
    hw_graph: str                       # the abstract HW-layer graph (ONNX), relative to the build directory
    dataset: str                        # hwq.data name of the test set the build was verified on
    source: str                         # where the cycles, clock and resources come from (see the module doc)
    data_dir: str | None = None         # the build's dataset folder (None: $HWQ_DATA or ../shared/data)
    #: lut, ff, bram (cells of bram_kbit kilobits), bram_kbit, dsp (+ uram for FINN); None where not reported.
    resources: dict[str, Any] = field(default_factory=dict)
    power_model: dict[str, float] | None = None     # the board's ``power_model:`` coefficients, or None
    #: How the pixels relate to the float input of the model the build was made from (``x = pixels / 255``, ...;
    #: :mod:`hwq.dataflow.input_convention`): what a host must send is always the uint8 pixels themselves.
    input_convention: dict[str, Any] | None = None
    #: The first image the gates checked, as input bytes (a file relative to the build directory), or None.
    sample_input: str | None = None

    @property
    def input_bytes(self) -> int:
        n = 1
        for d in self.input_shape:
            n *= int(d)
        return n

    @property
    def fps(self) -> float:
        return self.clock_mhz * 1e6 / self.cycles_per_image

    @property
    def latency_us(self) -> float:
        return self.latency_cycles / self.clock_mhz

    def device_bytes(self, image) -> bytes:
        """One ``uint8`` image (C, H, W) or flat vector as the accelerator's input bytes (NHWC for images: an NCHW
        image is transposed)."""
        import numpy as np

        x = np.asarray(image, dtype=np.uint8)
        if x.ndim == 3 and self.input_layout == "NHWC" and tuple(self.input_shape[1:]) == x.shape[1:] + x.shape[:1]:
            x = x.transpose(1, 2, 0)
        if x.size != self.input_bytes:
            raise HwqError(f"{self.hw_graph}: input has {x.size} values, the accelerator takes {self.input_bytes}")
        return np.ascontiguousarray(x).tobytes()

    def to_dict(self) -> dict[str, Any]:
        """The section as it goes into ``manifest.json`` (``fps`` and ``latency_us`` derived, for readers)."""
        return {"board": self.board, "model_id": self.model_id,
                "input": {"layout": self.input_layout, "shape": list(self.input_shape), "dtype": self.input_dtype,
                          "bytes": self.input_bytes, "convention": self.input_convention},
                "output": {"kind": self.output_kind, "classes": self.num_classes},
                "cycles_per_image": self.cycles_per_image, "latency_cycles": self.latency_cycles,
                "clock_mhz": self.clock_mhz, "fps": self.fps, "latency_us": self.latency_us,
                "resources": dict(self.resources), "power_model": self.power_model, "hw_graph": self.hw_graph,
                "dataset": {"name": self.dataset, "data_dir": self.data_dir}, "source": self.source,
                "sample_input": self.sample_input}

    @classmethod
    def from_dict(cls, d: Any, where: str = SECTION) -> AcceleratorSpec:
        """Read a section; a missing or wrong field is a one-line HwqError naming ``where`` and the field."""
        def get(path: str, kind, check=lambda v: True, expected: str = ""):
            value: Any = d
            for key in path.split("."):
                if not isinstance(value, dict) or key not in value:
                    raise HwqError(f"{where}: accelerator.{path} missing (rebuild with 'hwq build')")
                value = value[key]
            if not isinstance(value, kind) or isinstance(value, bool) or not check(value):
                raise HwqError(f"{where}: accelerator.{path} is {value!r}, expected {expected or kind.__name__}")
            return value

        positive = (int, float)
        shape = get("input.shape", list, lambda v: v and all(isinstance(x, int) and x > 0 for x in v),
                    "a list of positive integers")
        spec = cls(board=get("board", str), model_id=get("model_id", str),
                   input_layout=get("input.layout", str, lambda v: v in ("NHWC", "flat"), "'NHWC' or 'flat'"),
                   input_shape=tuple(shape), input_dtype=get("input.dtype", str),
                   output_kind=get("output.kind", str, lambda v: v in (CLASS_INDEX, SCORES),
                                   f"{CLASS_INDEX!r} or {SCORES!r}"),
                   num_classes=get("output.classes", int, lambda v: v >= 1, "an integer >= 1"),
                   cycles_per_image=get("cycles_per_image", positive, lambda v: v > 0, "a number > 0"),
                   latency_cycles=get("latency_cycles", positive, lambda v: v > 0, "a number > 0"),
                   clock_mhz=get("clock_mhz", positive, lambda v: v > 0, "a number of MHz > 0"),
                   hw_graph=get("hw_graph", str, lambda v: v and not os.path.isabs(v),
                                "a path relative to the build directory"),
                   dataset=get("dataset.name", str), source=get("source", str),
                   data_dir=d.get("dataset", {}).get("data_dir"),
                   resources=get("resources", dict), power_model=d.get("power_model"),
                   input_convention=d["input"].get("convention"),
                   sample_input=get("sample_input", str, lambda v: v and not os.path.isabs(v),
                                    "a path relative to the build directory") if d.get("sample_input") else None)
        if spec.input_bytes != d["input"].get("bytes", spec.input_bytes):
            raise HwqError(f"{where}: accelerator.input.bytes is {d['input']['bytes']!r}, its shape "
                           f"{list(spec.input_shape)} holds {spec.input_bytes}")
        return spec

    @classmethod
    def from_manifest(cls, manifest: dict, where: str = "manifest.json") -> AcceleratorSpec:
        """The section of a build manifest; a build made before hwq wrote one (or by a partial step list) is a
        one-line HwqError saying to rebuild."""
        section = manifest.get(SECTION) if isinstance(manifest, dict) else None
        if section is None:
            raise HwqError(f"{where}: no 'accelerator' section (the build was made before hwq recorded one, or "
                           f"stopped before its HW graph and estimates); rebuild it with 'hwq build'")
        return cls.from_dict(section, where)


# --- making the section --------------------------------------------------------------------------------------------
def hw_graph_of(manifest: dict) -> str | None:
    """The HW-layer graph a build recorded: the ``onnx`` of its best step in :data:`HW_GRAPH_STEPS` (a path
    relative to the build directory), or None when its steps did not get that far."""
    from hwq.manifest import step_checkpoint

    return next((step_checkpoint(manifest, s) for s in HW_GRAPH_STEPS if step_checkpoint(manifest, s)), None)


def finn_accelerator(manifest: dict, build_dir: str | Path) -> dict | None:
    """The section of a FINN build (``hwq.dataflow``): FINN's analytical estimate of cycles, latency and resources
    at the board clock, the HW graph its steps saved. None for a build whose step list stopped before a HW graph
    and an estimate (a partial build of the tests: nothing to measure)."""
    estimate, hw_graph = manifest.get("estimates", {}).get("total"), hw_graph_of(manifest)
    if not estimate or hw_graph is None:
        return None
    board = manifest["board"]
    facts = _graph_facts(Path(build_dir) / hw_graph)
    resources = {"lut": estimate.get("LUT"), "ff": None, "bram": estimate.get("BRAM_18K"),
                 "bram_kbit": BRAM_KBIT["BRAM18"], "dsp": estimate.get("DSP"), "uram": estimate.get("URAM")}
    return AcceleratorSpec(
        board=board["name"], model_id=_model_id(manifest), **facts,
        cycles_per_image=int(estimate["max_cycles"]), latency_cycles=int(estimate["critical_path_cycles"]),
        clock_mhz=float(estimate["clock_mhz"]), hw_graph=hw_graph, dataset=manifest["source"]["dataset"],
        data_dir=manifest.get("config", {}).get("data_dir"), source=FINN_SOURCE, resources=resources,
        power_model=board.get("power_model"), input_convention=manifest["source"].get("input")).to_dict()


def open_accelerator(manifest: dict, fold_section: dict | None, fold_dir: str) -> dict:
    """The section of an open-backend build (``hwq.rtl``): cycles and latency from the RTL simulation; clock and
    resources from nextpnr (open board), Yosys ``synth_xilinx`` at the board clock (Xilinx board), or the board
    clock and none when synthesis was skipped. Input, output and HW graph are those of the FINN fold build in
    ``fold_dir`` (relative to the build directory; ``""`` when the fold's files are the build's own), whose
    section is ``fold_section``."""
    if fold_section is None:
        raise HwqError(f"{fold_dir}/manifest.json: the FINN fold build recorded no accelerator section")
    fold = AcceleratorSpec.from_dict(fold_section, f"{fold_dir}/manifest.json")
    board, sim = manifest["board"], manifest["simulation"]
    clock, resources, source = float(board["clock_mhz"]), {}, UNSYNTHESISED_SOURCE
    if "synthesis" in manifest:
        syn = manifest["synthesis"]
        resources = {"lut": syn["lut"]["used"], "ff": syn["ff"], "bram": syn["bram"]["used"],
                     "bram_kbit": BRAM_KBIT.get(syn.get("bram_cell"), 18), "dsp": syn["dsp"]["used"]}
        clock, source = (float(syn["fmax_mhz"]), OPEN_SOURCE) if syn.get("fmax_mhz") else (clock, OPEN_NO_FMAX_SOURCE)
    elif "xilinx_estimate" in manifest and manifest["xilinx_estimate"].get("board") == board["name"]:
        counts = manifest["xilinx_estimate"]["counts"]
        resources = {"lut": counts["lut"], "ff": counts["ff"], "bram": counts["bram18"],
                     "bram_kbit": BRAM_KBIT["BRAM18"], "dsp": counts["dsp"]}
        source = XILINX_SOURCE
    hw_graph = f"{fold_dir}/{fold.hw_graph}" if fold_dir else fold.hw_graph
    return AcceleratorSpec(
        board=board["name"], model_id=fold.model_id, input_layout=fold.input_layout, input_shape=fold.input_shape,
        input_dtype=fold.input_dtype, output_kind=fold.output_kind, num_classes=fold.num_classes,
        cycles_per_image=_whole(sim["cycles_per_image"]), latency_cycles=int(sim["latency_cycles"]),
        clock_mhz=clock, hw_graph=hw_graph, dataset=fold.dataset, data_dir=fold.data_dir, source=source,
        resources=resources, power_model=board.get("power_model"), input_convention=fold.input_convention,
        sample_input=(f"{fold_dir}/{fold.sample_input}" if fold_dir else fold.sample_input)
        if fold.sample_input else None).to_dict()


def with_sample_input(section: dict | None, build_dir: str | Path, image) -> dict | None:
    """``section`` with its ``sample_input``: ``image`` (the first the gates checked; None: no sample) written to
    :data:`SAMPLE_INPUT_FILE` in ``build_dir`` as the accelerator's input bytes."""
    if section is None or image is None:
        return section
    from hwq._io import write_atomic

    data = AcceleratorSpec.from_dict(section).device_bytes(image)
    write_atomic(Path(build_dir) / SAMPLE_INPUT_FILE, lambda path: path.write_bytes(data))
    return {**section, "sample_input": SAMPLE_INPUT_FILE}


def _model_id(manifest: dict) -> str:
    name = os.path.basename(str(manifest.get("source", {}).get("run", "hwq")).rstrip("/")) or "hwq"
    return name[:-len(".onnx")] if name.endswith(".onnx") else name   # a bare QONNX file: its stem


def _whole(cycles: float) -> float | int:
    """A simulated interval as an int when it is whole (the usual case: every image takes the same cycles)."""
    return int(cycles) if float(cycles).is_integer() else float(cycles)


def _graph_facts(path: Path) -> dict[str, Any]:
    """Input layout, shape and type, output kind and class count, read from the HW graph file itself."""
    from onnx import helper
    from qonnx.core.modelwrapper import ModelWrapper

    from hwq.onnx_check import check_domains

    model = ModelWrapper(check_domains(path))
    name = model.graph.input[0].name
    shape = tuple(int(d) for d in model.get_tensor_shape(name))
    dtype = model.get_tensor_datatype(name).name.lower()
    out = model.graph.output[0].name
    select = model.find_producer(out)
    if select is not None and select.op_type.startswith(("LabelSelect", "TopK")):
        labels = next((helper.get_attribute_value(a) for a in select.attribute if a.name == "Labels"), None)
        classes = int(labels) if labels is not None else int(model.get_tensor_shape(select.input[0])[-1])
        kind = CLASS_INDEX
    else:
        classes, kind = int(model.get_tensor_shape(out)[-1]), SCORES
    return {"input_layout": "NHWC" if len(shape) == 4 else "flat", "input_shape": shape, "input_dtype": dtype,
            "output_kind": kind, "num_classes": classes}
