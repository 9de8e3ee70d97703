#!/usr/bin/env python3
# SPDX-License-Identifier: BSD-3-Clause
"""hwq's on-board agent: serve a FINN accelerator on a PYNQ board over the MLPerf Tiny protocol.

On the board (as root, in the PYNQ Python environment; deployment steps in docs/harness.md):

    python3 pynq_agent.py --driver deploy/driver --bitfile deploy/bitfile/finn-accel.bit --port /dev/ttyPS0 \\
        --classes 10 --name pynq-z2-tfc

Without a board, the same agent on a named stand-in overlay (the build's HW graph) on a fresh pty, whose path
it prints first; measure it from another shell with ``hwq measure --port <path> ...``:

    python scripts/pynq_agent.py --stand-in runs/NAME/build-pynq-z2

On a board the agent imports only ``hwq/wire.py`` (the protocol codec it shares with the host) and
``hwq/device/{dut,pty,pynq_agent}.py``, with the standard library, NumPy and pyserial; ``--stand-in`` also needs
the host's packages (QONNX, FINN), since it executes the build's HW graph.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path

# Run from a checkout or from the folder the deployment copies hwq/ into (docs/harness.md).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from hwq.device.pynq_agent import DEFAULT_MAX_BATCH, AgentConfig, serve_agent  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", help="serial device or pyserial URL (default: a fresh pty, path printed first)")
    ap.add_argument("--baud", type=int, default=115200)
    ap.add_argument("--driver", dest="driver_dir", default="deploy/driver", help="FINN's generated PYNQ driver dir")
    ap.add_argument("--bitfile", default="deploy/bitfile/finn-accel.bit")
    ap.add_argument("--platform", default="zynq-iodma", choices=["zynq-iodma", "alveo"])
    ap.add_argument("--stand-in", dest="stand_in", metavar="BUILD_DIR",
                    help="no board: a stand-in overlay executing this build's HW graph")
    ap.add_argument("--classes", dest="num_classes", type=int, help="classes of a top-1 accelerator")
    ap.add_argument("--name", default="hwq-pynq", help="answered to name%%")
    ap.add_argument("--model-id", dest="model_id", default="hwq", help="answered to profile%%")
    ap.add_argument("--no-rails", dest="rails", action="store_false", help="do not read the board's rail sensors")
    ap.add_argument("--rail-interval", dest="rail_interval_s", type=float, default=0.01, help="seconds")
    ap.add_argument("--gpio-pin", dest="gpio_pin", type=int, help="PYNQ GPIO toggled at window edges")
    ap.add_argument("--max-batch", dest="max_batch", type=int, default=DEFAULT_MAX_BATCH)
    ap.add_argument("-v", "--verbose", action="store_true", help="log every command to stderr")
    args = ap.parse_args(argv)
    verbose = args.verbose
    del args.verbose
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    serve_agent(AgentConfig(**vars(args)), stop, announce=lambda path: print(path, flush=True),
                log=(lambda line: print(line, file=sys.stderr, flush=True)) if verbose else None)


if __name__ == "__main__":
    main()
