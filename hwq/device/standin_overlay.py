# SPDX-License-Identifier: BSD-3-Clause
"""A stand-in for FINN's PYNQ overlay, so the on-board agent can be tested (and dry-run on a PC) without a board.

:class:`StandInOverlay` is named as what it is: it has the buffer interface of FINN's driver class
``FINNExampleOverlay`` (batch size, normal/folded/packed shapes, fold/pack/unpack with FINN's own data packing,
``execute_on_buffers``), but its "DMA buffers" are NumPy arrays and the bitfile is the build's HW-layer graph,
executed by QONNX in Python (bit-exact with the hardware, as in the emulated board). Like the real driver it
asserts when an output DMA is not idle (injected with ``fail_runs``). :func:`standin_rails` gives PYNQ-style rail
objects whose power follows the board's power model (busy while ``execute_on_buffers`` runs).

>>> overlay = StandInOverlay(BuildModel.from_build_dir("runs/tfc-digits/build-pynq-z2"))   # doctest: +SKIP
>>> overlay.execute(images_nhwc_uint8)                                                     # doctest: +SKIP
"""

from __future__ import annotations

import numpy as np
from finn.util.data_packing import finnpy_to_packed_bytearray, packed_bytearray_to_finnpy
from qonnx.core.onnx_exec import execute_onnx
from qonnx.custom_op.registry import getCustomOp

from hwq.accelerator_model import BuildModel
from hwq.power_model import PowerModel


def _hw_nodes(model):
    return [n for n in model.graph.node if n.domain.startswith("finn.custom_op.fpgadataflow")]


def io_shape_dict(build: BuildModel) -> dict:
    """The driver's I/O description (what FINN's MakePYNQDriver writes into ``driver.py``) for a build's HW graph:
    the first and last HW layers' folding stand in for the IODMAs'."""
    model, nodes = build.model, _hw_nodes(build.model)
    first, last = getCustomOp(nodes[0]), getCustomOp(nodes[-1])
    i_name, o_name = model.graph.input[0].name, model.graph.output[0].name
    idt, odt = model.get_tensor_datatype(i_name), model.get_tensor_datatype(o_name)
    i_folded, o_folded = tuple(first.get_folded_input_shape()), tuple(last.get_folded_output_shape())

    def packed(folded, dt):
        return tuple(finnpy_to_packed_bytearray(np.zeros(folded, dtype=np.float32), dt).shape)

    return {"idt": [idt], "odt": [odt], "ishape_normal": [tuple(model.get_tensor_shape(i_name))],
            "oshape_normal": [tuple(model.get_tensor_shape(o_name))], "ishape_folded": [i_folded],
            "oshape_folded": [o_folded], "ishape_packed": [packed(i_folded, idt)],
            "oshape_packed": [packed(o_folded, odt)], "num_inputs": 1, "num_outputs": 1}


class StandInOverlay:
    """FINN's ``FINNExampleOverlay`` buffer interface over a build's HW graph (a stand-in: no board, no bitfile)."""

    def __init__(self, build: BuildModel, batch_size: int = 1, fail_runs: tuple[int, ...] = ()) -> None:
        self.build, self._io = build, io_shape_dict(build)
        self.fail_runs, self.runs, self.busy = set(fail_runs), 0, False
        self._cache: dict[bytes, np.ndarray] = {}
        self.ibuf_packed_device = self.obuf_packed_device = None
        self.batch_size = batch_size

    # --- shapes (as driver_base.py: the batch dimension is the current batch size) ------------------------------
    def _shape(self, key: str, ind: int = 0) -> tuple[int, ...]:
        return (self.batch_size,) + tuple(self._io[key][ind][1:])

    def ishape_normal(self, ind=0):
        return self._shape("ishape_normal", ind)

    def oshape_normal(self, ind=0):
        return self._shape("oshape_normal", ind)

    def ishape_folded(self, ind=0):
        return self._shape("ishape_folded", ind)

    def oshape_folded(self, ind=0):
        return self._shape("oshape_folded", ind)

    def ishape_packed(self, ind=0):
        return self._shape("ishape_packed", ind)

    def oshape_packed(self, ind=0):
        return self._shape("oshape_packed", ind)

    @property
    def batch_size(self) -> int:
        return self._batch_size

    @batch_size.setter
    def batch_size(self, value: int) -> None:
        self._batch_size = int(value)
        self.ibuf_packed_device = [np.zeros(self.ishape_packed(), dtype=np.uint8)]
        self.obuf_packed_device = [np.zeros(self.oshape_packed(), dtype=np.uint8)]
        self.obuf_packed = [np.empty_like(self.obuf_packed_device[0])]

    # --- data movement -----------------------------------------------------------------------------------------
    def fold_input(self, ibuf_normal, ind=0):
        assert ibuf_normal.shape == self.ishape_normal(ind)
        return ibuf_normal.reshape(self.ishape_folded(ind))

    def pack_input(self, ibuf_folded, ind=0):
        return finnpy_to_packed_bytearray(ibuf_folded, self._io["idt"][ind], reverse_inner=True, reverse_endian=True)

    def unpack_output(self, obuf_packed, ind=0):
        return packed_bytearray_to_finnpy(obuf_packed, self._io["odt"][ind], self.oshape_folded(ind),
                                          reverse_inner=True, reverse_endian=True)

    def unfold_output(self, obuf_folded, ind=0):
        return obuf_folded.reshape(self.oshape_normal(ind))

    def copy_input_data_to_device(self, data, ind=0):
        np.copyto(self.ibuf_packed_device[ind], data)

    def copy_output_data_from_device(self, data, ind=0):
        np.copyto(data, self.obuf_packed_device[ind])

    # --- the "accelerator" -------------------------------------------------------------------------------------
    def _infer_one(self, x: np.ndarray) -> np.ndarray:
        key = x.tobytes()
        if key not in self._cache:          # identical inputs, identical outputs: run the graph once each
            name = self.build.model.graph.input[0].name
            out = execute_onnx(self.build.model, {name: x[None].astype(np.float32)})
            self._cache[key] = np.asarray(out[self.build.model.graph.output[0].name])[0]
        return self._cache[key]

    def execute_on_buffers(self, asynch: bool = False, batch_size: int | None = None) -> None:
        batch_size = self.batch_size if batch_size is None else batch_size
        assert batch_size <= self.batch_size, "Specified batch_size is too large."
        self.runs += 1
        assert self.runs not in self.fail_runs, "Output DMA 0 is not idle"
        self.busy = True
        try:
            folded = packed_bytearray_to_finnpy(self.ibuf_packed_device[0], self._io["idt"][0],
                                                self.ishape_folded(), reverse_inner=True, reverse_endian=True)
            x = folded.reshape(self.ishape_normal())
            out = np.zeros(self.oshape_normal(), dtype=np.float32)
            for b in range(batch_size):
                out[b] = self._infer_one(x[b])
            packed = finnpy_to_packed_bytearray(out.reshape(self.oshape_folded()), self._io["odt"][0],
                                                reverse_inner=True, reverse_endian=True)
            self.obuf_packed_device[0][:batch_size] = packed[:batch_size]
        finally:
            self.busy = False

    def execute(self, input_npy):
        """Fold, pack, run, unpack, unfold: ``input_npy`` in the normal (NHWC) shape, batch = ``batch_size``."""
        self.copy_input_data_to_device(self.pack_input(self.fold_input(input_npy)))
        self.execute_on_buffers()
        self.copy_output_data_from_device(self.obuf_packed[0])
        return self.unfold_output(self.unpack_output(self.obuf_packed[0]))


class _Sensor:
    def __init__(self, read) -> None:
        self._read = read

    @property
    def value(self) -> float:
        return self._read()


class _Rail:
    def __init__(self, name: str, read) -> None:
        self.name, self.power = name, _Sensor(read)


def standin_rails(overlay: StandInOverlay, power: PowerModel) -> dict[str, _Rail]:
    """PYNQ-style rails (``rail.power.value`` in W) following ``power`` (mW), busy while the overlay runs."""
    return {name: _Rail(name, lambda name=name: power.rails_mw(overlay.busy)[name] / 1e3)
            for name in power.rails_mw(False)}
