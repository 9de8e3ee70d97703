# SPDX-License-Identifier: BSD-3-Clause
"""The on-board agent for PYNQ boards: a FINN-generated accelerator behind the MLPerf Tiny protocol.

It runs on the board's Linux (a PYNQ image: Python 3, numpy, pynq; plus pyserial), loads the bitfile through
FINN's generated PYNQ driver, and serves :class:`hwq.device.dut.DutSession` (the same protocol code as the
emulated board) on the board's UART or USB serial port. Timing is the board's own monotonic clock
(``time.perf_counter_ns``) around the timed DMA runs; power comes from the board's rail sensors through PYNQ
(``pynq.get_rails()``), sampled while a window runs, where the board has any. Deployment: ``docs/harness.md``;
the command line is ``scripts/pynq_agent.py``.

What it drives is anything with the buffer interface of FINN's driver class ``FINNExampleOverlay``
(``batch_size``, ``ishape_normal``, ``fold_input``, ``pack_input``, ``copy_input_data_to_device``,
``execute_on_buffers``, ``copy_output_data_from_device``, ``obuf_packed``, ``unpack_output``, ``unfold_output``):
on a board the real overlay, in tests the named stand-in :class:`hwq.device.standin_overlay.StandInOverlay`.

>>> accel = OverlayAccelerator(load_finn_overlay("deploy/driver", "deploy/bitfile/finn-accel.bit"),
...                            num_classes=10, rails=PynqRails.detect())         # doctest: +SKIP
>>> run_agent(accel, SerialLink("/dev/ttyPS0", 115200), name="pynq-z2-tfc")      # doctest: +SKIP
"""

from __future__ import annotations

import importlib.util
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from hwq.device.dut import AcceleratorError, DutSession, Window, reply_bytes, serve_link
from hwq.device.pty import PtyLink

#: Inferences per DMA run at most: bounds the buffers the driver allocates (batch x input bytes).
DEFAULT_MAX_BATCH = 1024


class PynqRails:
    """Board power rails through PYNQ's sensor API: ``rails`` maps a rail name to an object with a ``power``
    sensor whose ``value`` is in watts (``pynq.get_rails()``; rails without a power sensor are left out).

    While a timed window runs, a thread samples every rail every ``interval_s``; the window reports each rail's
    mean (mW), the samples at its start and end included, so even a window shorter than the interval has two.
    """

    def __init__(self, rails: dict, interval_s: float = 0.01) -> None:
        self.rails = {name: rail for name, rail in rails.items() if getattr(rail, "power", None) is not None}
        if not self.rails:
            raise AcceleratorError("no rail with a power sensor")
        self.interval_s = interval_s
        self.samples = 0            # taken in the last window

    @classmethod
    def detect(cls, interval_s: float = 0.01) -> PynqRails | None:
        """The board's rails, or None where PYNQ finds no power sensor (PYNQ-Z1/Z2 have none)."""
        import pynq

        try:
            return cls(pynq.get_rails(), interval_s)
        except AcceleratorError:
            return None

    def read_mw(self) -> dict[str, float]:
        return {name: 1e3 * float(rail.power.value) for name, rail in self.rails.items()}

    @contextmanager
    def window(self) -> Iterator[dict[str, float]]:
        """Sample while the ``with`` body runs; the yielded dict holds the mean per rail (mW) afterwards."""
        means: dict[str, float] = {}
        sums = {name: 0.0 for name in self.rails}
        count = [0]
        stop = threading.Event()

        def take() -> None:
            for name, mw in self.read_mw().items():
                sums[name] += mw
            count[0] += 1

        def sample() -> None:
            while not stop.wait(self.interval_s):
                take()

        take()
        thread = threading.Thread(target=sample, name="rail sampler", daemon=True)
        thread.start()
        try:
            yield means
        finally:
            stop.set()
            thread.join()
            take()
            self.samples = count[0]
            means.update({name: total / count[0] for name, total in sums.items()})


class OverlayAccelerator:
    """A FINN overlay as a :class:`hwq.device.dut.Accelerator`.

    ``infer N W`` loads the input once into a batch of ``min(N, max_batch)`` copies, runs the W warm-ups, then
    times the DMA runs of the N inferences (the board's clock, in microseconds since the agent started); the
    output of the last run becomes the scores (one-hot on the class for a top-1 accelerator with
    ``num_classes``, else the raw output values). ``mark`` is called at both window edges (a GPIO toggle that an
    external power monitor sees). Any failure of the overlay becomes an :class:`AcceleratorError`, which the
    session answers as ``e-[infer: ...]`` and survives.
    """

    def __init__(self, overlay, *, num_classes: int | None = None, rails: PynqRails | None = None,
                 mark: Callable[[], None] | None = None, max_batch: int = DEFAULT_MAX_BATCH,
                 firmware: str = "hwq pynq agent", model_id: str = "hwq") -> None:
        self.overlay, self.num_classes, self.rails, self.mark = overlay, num_classes, rails, mark
        self.max_batch, self.firmware, self.model_id = max_batch, firmware, model_id
        self._set_batch(1)
        self.input_shape = tuple(overlay.ishape_normal())[1:]
        self.input_bytes = int(np.prod(self.input_shape))
        self._loaded: tuple[bytes, int] | None = None       # (input, batch) now in the device buffer
        self._t_start = time.perf_counter_ns()

    def _set_batch(self, batch: int) -> None:
        if self.overlay.batch_size != batch:        # the setter reallocates the DMA buffers
            self.overlay.batch_size = batch

    def _load(self, data: bytes, batch: int) -> None:
        if self._loaded == (data, batch):
            return
        self._set_batch(batch)
        x = np.frombuffer(data, dtype=np.uint8).reshape((1,) + self.input_shape)
        folded = self.overlay.fold_input(np.repeat(x, batch, axis=0))
        self.overlay.copy_input_data_to_device(self.overlay.pack_input(folded))
        self._loaded = (data, batch)

    def _run(self, count: int, batch: int) -> None:
        for _ in range(count // batch):
            self.overlay.execute_on_buffers(batch_size=batch)
        if count % batch:
            self.overlay.execute_on_buffers(batch_size=count % batch)

    def _scores(self) -> list[float]:
        self.overlay.copy_output_data_from_device(self.overlay.obuf_packed[0])
        out = np.asarray(self.overlay.unfold_output(self.overlay.unpack_output(self.overlay.obuf_packed[0])))
        last = out[0].reshape(-1) if out.ndim > 1 else out.reshape(-1)     # every run fills slot 0 first
        if self.num_classes and last.size == 1:
            label = int(last[0])
            if not 0 <= label < self.num_classes:
                raise AcceleratorError(f"accelerator returned class {label}, expected 0..{self.num_classes - 1}")
            return [1.0 if k == label else 0.0 for k in range(self.num_classes)]
        return [float(v) for v in last]

    # --- Accelerator -------------------------------------------------------------------------------------------
    def profile(self) -> tuple[str, str]:
        return self.firmware, self.model_id

    def timestamp_us(self) -> int:
        return (time.perf_counter_ns() - self._t_start) // 1000

    def infer(self, data: bytes, n: int, warmup: int) -> Window:
        batch = max(1, min(n, self.max_batch))
        try:
            self._load(data, batch)
            self._run(warmup, batch)
            with self.rails.window() if self.rails else _no_rails() as rails_mw:
                if self.mark:
                    self.mark()
                t0 = self.timestamp_us()
                self._run(n, batch)
                t1 = self.timestamp_us()
                if self.mark:
                    self.mark()
            return Window(t0, t1, self._scores(), dict(rails_mw) if self.rails else None)
        except AcceleratorError:
            raise
        except Exception as err:      # the overlay's own errors (an assertion on a DMA, a PYNQ RuntimeError)
            self._loaded = None
            raise AcceleratorError(f"{type(err).__name__}: {err}") from err

    def rails_mw(self, busy: bool = False) -> dict[str, float] | None:
        return self.rails.read_mw() if self.rails else None


@contextmanager
def _no_rails() -> Iterator[dict[str, float]]:
    yield {}


@contextmanager
def _first_on_sys_path(folder: Path) -> Iterator[None]:
    sys.path.insert(0, str(folder))
    try:
        yield
    finally:
        if str(folder) in sys.path:
            sys.path.remove(str(folder))


def load_finn_overlay(driver_dir: str | Path, bitfile: str | Path, platform: str = "zynq-iodma",
                      download: bool = True):
    """FINN's generated PYNQ driver (``deploy/driver``: ``driver.py`` with ``io_shape_dict``, ``driver_base.py``
    with ``FINNExampleOverlay``) loading ``bitfile``; raises :class:`AcceleratorError` naming what is missing."""
    driver_dir, bitfile = Path(driver_dir), Path(bitfile)
    for path in (driver_dir / "driver.py", driver_dir / "driver_base.py", bitfile):
        if not path.is_file():
            raise AcceleratorError(f"{path}: not found (copy the build's deploy/ folder to the board)")
    # driver.py imports driver_base (and its bundled finn/qonnx helpers) by name from its own folder, all at
    # module level: the folder is on sys.path while it loads, and taken off again.
    spec = importlib.util.spec_from_file_location("finn_pynq_driver", driver_dir / "driver.py")
    module = importlib.util.module_from_spec(spec)
    with _first_on_sys_path(driver_dir.resolve()):
        spec.loader.exec_module(module)
    if not hasattr(module, "io_shape_dict"):
        raise AcceleratorError(f"{driver_dir / 'driver.py'}: no io_shape_dict (not a FINN-generated driver)")
    return module.FINNExampleOverlay(bitfile_name=str(bitfile), platform=platform,
                                     io_shape_dict=module.io_shape_dict, batch_size=1, download=download)


class SerialLink:
    """The board's serial port (``/dev/ttyPS0``, a USB gadget's ``/dev/ttyGS0``, or a pyserial URL) as the
    agent's link: ``read`` returns what arrived within 0.1 s, or None once the port is gone."""

    def __init__(self, port: str, baud: int = 115200) -> None:
        import serial

        self._serial_error = serial.SerialException
        self.path = port
        try:
            self._port = serial.serial_for_url(port, baudrate=baud, timeout=0.1)
        except (serial.SerialException, ValueError) as err:
            raise AcceleratorError(f"{port}: cannot open serial port ({err})") from None

    def read(self) -> bytes | None:
        try:
            return self._port.read(self._port.in_waiting or 1)
        except (self._serial_error, OSError):
            return None

    def write(self, data: bytes) -> None:
        try:
            self._port.write(data)
        except (self._serial_error, OSError):
            pass            # the host went away: the next read says so

    def close(self) -> None:
        self._port.close()


def run_agent(accelerator, link, name: str = "hwq-pynq", stop: threading.Event | None = None,
              log: Callable[[str], None] | None = None) -> None:
    """Serve the protocol for ``accelerator`` on ``link`` (a :class:`SerialLink` or :class:`PtyLink`) until
    ``stop`` is set or the link closes. Prints the boot lines first, as a device does after reset."""
    session, stop = DutSession(accelerator, name), stop or threading.Event()
    link.write(reply_bytes(session.reboot()))

    def handle(command: str) -> None:
        started = time.perf_counter()
        lines = session.handle(command)
        link.write(reply_bytes(lines))
        if log:
            errors = [line for line in lines if line.startswith("e-")]
            log(f"{command[:40]!r}: {len(lines)} lines, {1e3 * (time.perf_counter() - started):.1f} ms"
                + (f" {errors[0]}" if errors else ""))

    serve_link(link.read, handle, stop)


@contextmanager
def agent_thread(accelerator, name: str = "hwq-pynq") -> Iterator[PtyLink]:
    """The agent on a fresh pty in a thread for the ``with`` body (a dry run on a PC, and the tests); a host opens
    the yielded link's ``path``. Leaving the body stops the agent and closes the pty."""
    link, stop = PtyLink(), threading.Event()
    thread = threading.Thread(target=run_agent, args=(accelerator, link, name, stop), daemon=True,
                              name=f"pynq agent {link.path}")
    thread.start()
    try:
        yield link
    finally:
        stop.set()
        thread.join(timeout=5)
        link.close()


@dataclass(frozen=True)
class AgentConfig:
    """What ``scripts/pynq_agent.py`` starts: the overlay (or a stand-in), the link, the power sensing."""

    port: str | None = None             # serial device or pyserial URL; None: a fresh pty, its path printed first
    baud: int = 115200                  # the PYNQ boards' USB-UART default
    driver_dir: str = "deploy/driver"   # FINN's generated PYNQ driver (driver.py, driver_base.py)
    bitfile: str = "deploy/bitfile/finn-accel.bit"
    platform: str = "zynq-iodma"        # FINN's name for the Zynq shell; "alveo" for Alveo cards
    stand_in: str | None = None         # a build directory: StandInOverlay instead of the bitfile (no board)
    num_classes: int | None = None      # top-1 accelerators: scores become one-hot over this many classes
    name: str = "hwq-pynq"              # answered to name%
    model_id: str = "hwq"               # answered to profile%
    rails: bool = True                  # read the board's rail sensors (PYNQ), where it has any
    rail_interval_s: float = 0.01       # sampling period of the rails during a window (s)
    gpio_pin: int | None = None         # PYNQ GPIO index toggled at window edges (for an external monitor)
    max_batch: int = DEFAULT_MAX_BATCH


def open_accelerator(config: AgentConfig) -> OverlayAccelerator:
    """The overlay of ``config`` (FINN's driver and bitfile, or the stand-in for a build) as an accelerator."""
    rails, mark, classes = None, None, config.num_classes
    if config.stand_in:
        from hwq.accelerator_model import BuildModel
        from hwq.device.standin_overlay import StandInOverlay, standin_rails
        from hwq.errors import HwqError
        from hwq.power_model import PowerModel

        build = BuildModel.from_build_dir(config.stand_in)
        overlay, classes = StandInOverlay(build), classes or build.num_classes
        if config.rails:
            try:
                rails = PynqRails(standin_rails(overlay, PowerModel.from_accelerator(build.accelerator)),
                                  config.rail_interval_s)
            except HwqError:
                rails = None
        firmware = f"hwq pynq agent (stand-in overlay for {Path(config.stand_in).name})"
    else:
        overlay = load_finn_overlay(config.driver_dir, config.bitfile, config.platform)
        rails = PynqRails.detect(config.rail_interval_s) if config.rails else None
        firmware = f"hwq pynq agent {Path(config.bitfile).name}"
    if config.gpio_pin is not None:
        mark = _gpio_toggle(config.gpio_pin)
    return OverlayAccelerator(overlay, num_classes=classes, rails=rails, mark=mark, max_batch=config.max_batch,
                              firmware=firmware, model_id=config.model_id)


def _gpio_toggle(index: int) -> Callable[[], None]:
    """Toggle PYNQ GPIO ``index`` (an EMIO/MIO line routed to a header) at each window edge."""
    from pynq import GPIO

    pin, state = GPIO(GPIO.get_gpio_pin(index), "out"), [0]

    def toggle() -> None:
        state[0] ^= 1
        pin.write(state[0])

    return toggle


def serve_agent(config: AgentConfig, stop: threading.Event | None = None,
                announce: Callable[[str], None] = print, log: Callable[[str], None] | None = None) -> None:
    """Open the accelerator and the link of ``config`` and serve until ``stop`` or the link closes; ``announce``
    gets the port path first (the pty's, when no port is given), as ``hwq emulate`` prints it."""
    accelerator = open_accelerator(config)
    link = SerialLink(config.port, config.baud) if config.port else PtyLink()
    announce(link.path)
    try:
        run_agent(accelerator, link, config.name, stop, log)
    finally:
        link.close()
