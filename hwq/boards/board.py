# SPDX-License-Identifier: BSD-3-Clause
"""Reading and validating board files (``hwq/boards/builtin/*.yaml``, also reachable as ``boards/``).

Boards are found by name, in any letter case, in a user's folders first (``--boards-dir``, ``$HWQ_BOARDS``), then
among the boards packaged with hwq (:func:`board_dirs`); ``Board.name`` is the file's stem, the one spelling used
in paths.

A board file names the FPGA part, the clock the build targets, the device resources, the shell kind (a Zynq
board's PYNQ shell or an Alveo card's Vitis platform), and the serial and power-sensor facts the measurement
harness needs. Unknown or missing fields are errors naming the file and field.

The fields are also checked against each other and against the tools: a Xilinx board's ``finn_board`` must be a
board finn-plus knows for its shell (``finn.util.basic``'s ``pynq_part_map`` for ``zynq``, ``alveo_part_map`` for
``alveo``) and its ``part`` must be a part of the shell's family and the one FINN uses for that board; an Alveo
``platform`` must be the card's; an open board's ``fpga.device`` must be a nextpnr device of its family, the one
its ``part`` names (and, on ECP5, the part's speed grade must be ``fpga.speed``).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from hwq.errors import ConfigError

#: The boards packaged with hwq (package data, so also in a wheel); ``boards/`` in the repository links here.
BOARDS_DIR = Path(__file__).resolve().parent / "builtin"
#: Environment variable naming folders of a user's own board files, searched before the packaged ones.
BOARDS_ENV = "HWQ_BOARDS"

SHELLS = ("zynq", "alveo", "open")
#: FPGA families the open backend (hwq.rtl, Yosys + nextpnr) builds for, from a board's ``fpga`` field.
OPEN_FAMILIES = ("ice40", "ecp5")
POWER_KINDS = ("none", "pmbus", "ina", "xrt")
#: Coefficients of the emulated power model (``power_model:``; formula in ``hwq/device/power.py``), all >= 0.
POWER_MODEL_KEYS = ("ps_mw", "pl_static_mw", "mw_per_mhz_per_klut", "mw_per_mhz_per_bram18", "idle_activity")


#: Part-number patterns of the Xilinx shells: Zynq-7000 / Zynq UltraScale+ / Kria SOMs, Alveo cards.
SHELL_PARTS = {"zynq": (re.compile(r"^(xc7z\d{3}[a-z]|xczu\d+[a-z]{2}-|xck2[46]-)", re.I), "Zynq-7000 (xc7z...), "
                        "Zynq UltraScale+ (xczu...) or Kria (xck26/xck24)"),
               "alveo": (re.compile(r"^xcu\d+[a-z]?-", re.I), "Alveo (xcu...)")}
#: nextpnr's device flags per open family, and the part each one selects (``nextpnr-ice40 --help``,
#: ``nextpnr-ecp5 --help``).
NEXTPNR_DEVICES = {
    "ice40": {"lp384": "iCE40LP384", "lp1k": "iCE40LP1K", "lp4k": "iCE40LP4K", "lp8k": "iCE40LP8K",
              "hx1k": "iCE40HX1K", "hx4k": "iCE40HX4K", "hx8k": "iCE40HX8K", "up3k": "iCE40UP3K",
              "up5k": "iCE40UP5K", "u1k": "iCE5LP1K", "u2k": "iCE5LP2K", "u4k": "iCE5LP4K"},
    "ecp5": {"12k": "LFE5U-12F", "25k": "LFE5U-25F", "45k": "LFE5U-45F", "85k": "LFE5U-85F",
             "um-25k": "LFE5UM-25F", "um-45k": "LFE5UM-45F", "um-85k": "LFE5UM-85F",
             "um5g-25k": "LFE5UM5G-25F", "um5g-45k": "LFE5UM5G-45F", "um5g-85k": "LFE5UM5G-85F"},
}
ECP5_SPEEDS = ("6", "7", "8")


class BoardError(ConfigError):
    """A board is unknown or its YAML file is invalid."""


@dataclass(frozen=True)
class Resources:
    """Device resources (counts of primitives on the part)."""

    lut: int
    ff: int
    #: 18 Kb block RAMs (a 36 Kb BRAM counts as two), the unit of FINN's estimates.
    bram18: int
    dsp: int
    uram: int


@dataclass(frozen=True)
class Board:
    """One board, as read from ``<folder>/<name>.yaml``."""

    #: The canonical spelling of the name (the file's stem): ``--board PYNQ-Z2`` finds ``pynq-z2``; paths use it.
    name: str
    #: Human-readable name.
    title: str
    #: Xilinx part number passed to FINN.
    part: str
    #: The clock the accelerator is built for (MHz); estimates of FPS and latency use it.
    clock_mhz: float
    #: ``zynq`` (PYNQ shell, Vivado), ``alveo`` (Vitis platform) or ``open`` (hwq.rtl: Yosys + nextpnr).
    shell: str
    #: FINN's board key (``Pynq-Z2``, ``U250``, ...) for the vendor steps; None on ``open`` boards.
    finn_board: str | None
    resources: Resources
    #: Serial console facts: ``port_hint`` (e.g. /dev/ttyUSB1), ``baud``, ``adapter``; empty for PCIe cards.
    serial: dict[str, Any] = field(default_factory=dict)
    #: Power sensing: ``kind`` (none, pmbus, ina, xrt), ``sensors`` (list of rails), ``notes``.
    power: dict[str, Any] = field(default_factory=dict)
    #: Vitis platform for Alveo cards (None on Zynq boards).
    platform: str | None = None
    #: Free text: where a fact comes from, what is still to be confirmed on hardware.
    notes: str = ""
    #: For the open backend: ``family`` (ice40, ecp5), nextpnr ``device`` (up5k, 25k, 85k), ``package``, ``speed``.
    fpga: dict[str, Any] = field(default_factory=dict)
    #: Emulated power model coefficients (``POWER_MODEL_KEYS``); empty when the board has none.
    power_model: dict[str, float] = field(default_factory=dict)
    #: The file it was read from (not part of :meth:`to_dict`).
    path: Path | None = field(default=None, compare=False)

    @property
    def clock_period_ns(self) -> float:
        return 1000.0 / self.clock_mhz

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "title": self.title, "part": self.part, "clock_mhz": self.clock_mhz,
            "shell": self.shell, "finn_board": self.finn_board, "resources": vars(self.resources),
            "serial": self.serial, "power": self.power, "platform": self.platform, "notes": self.notes,
            "fpga": self.fpga, "power_model": self.power_model,
        }


def board_dirs(boards_dir: str | Path | None = None) -> list[Path]:
    """The folders searched for board files, first match wins: ``boards_dir`` (``--boards-dir``), then each folder
    of ``$HWQ_BOARDS`` (separated by ``:``), then the boards packaged with hwq (:data:`BOARDS_DIR`).

    A user's board of the same name as a packaged one (in any letter case) is used instead of it. A folder that
    does not exist is an error naming where it came from.
    """
    given = [("--boards-dir", boards_dir)] if boards_dir is not None else []
    given += [(BOARDS_ENV, d) for d in os.environ.get(BOARDS_ENV, "").split(os.pathsep) if d]
    for source, folder in given:
        if not Path(folder).is_dir():
            raise BoardError(f"{source}: '{folder}' is not a folder (expected a folder of board YAML files)")
    return [Path(folder) for _, folder in given] + [BOARDS_DIR]


def _board_files(boards_dir: str | Path | None) -> dict[str, Path]:
    """Lower-case name -> board file, over :func:`board_dirs` (an earlier folder's file wins)."""
    found: dict[str, Path] = {}
    for folder in board_dirs(boards_dir):
        here: dict[str, Path] = {}
        for path in sorted(folder.glob("*.yaml")):
            key = path.stem.lower()
            if key in here:
                raise BoardError(f"{folder}: board files {here[key].name} and {path.name} differ only in letter case; "
                                 "board names are case-insensitive, keep one")
            here[key] = path
        for key, path in here.items():
            found.setdefault(key, path)
    return found


def known_boards(boards_dir: str | Path | None = None) -> list[str]:
    """Names of the boards found (see :func:`board_dirs`), each spelled as its file's stem, sorted."""
    return sorted((p.stem for p in _board_files(boards_dir).values()), key=str.lower)


def board_path(name: str, boards_dir: str | Path | None = None) -> Path:
    """The file describing board ``name`` (case-insensitive); an unknown name lists the known ones."""
    files = _board_files(boards_dir)
    if not isinstance(name, str) or name.lower() not in files:
        known = ", ".join(sorted((p.stem for p in files.values()), key=str.lower)) or "(none)"
        raise BoardError(f"unknown board '{name}'; known: {known}")
    return files[name.lower()]


def load_board(name: str, boards_dir: str | Path | None = None) -> Board:
    """Load and validate the file of board ``name``; the name is case-insensitive, ``Board.name`` is the canonical
    spelling (the file's stem), for paths such as ``build-<name>``.

    >>> load_board("PYNQ-Z2").name
    'pynq-z2'
    >>> load_board("zcu104").resources.uram
    96
    >>> load_board("nope")  # doctest: +IGNORE_EXCEPTION_DETAIL
    Traceback (most recent call last):
    BoardError: unknown board 'nope'; known: ...
    """
    path = board_path(name, boards_dir)
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise BoardError(f"{path}: not valid YAML ({err})") from None
    return board_from_dict(data, path)


_REQUIRED = {"title": str, "part": str, "clock_mhz": (int, float), "shell": str, "finn_board": str,
             "resources": dict}
_OPTIONAL = {"serial": dict, "power": dict, "platform": (str, type(None)), "notes": str, "fpga": dict,
             "power_model": dict}
#: Fields an ``open`` board needs instead of ``finn_board``.
_OPEN_REQUIRED = ("fpga",)
_FPGA_KEYS = ("family", "device", "package")
_RESOURCES = ("lut", "ff", "bram18", "dsp", "uram")


def board_from_dict(data: Any, path: Path) -> Board:
    """Validate the parsed YAML of a board file; errors name ``path`` and the field."""
    if not isinstance(data, dict):
        raise BoardError(f"{path}: expected a mapping of board fields")
    unknown = sorted(set(data) - set(_REQUIRED) - set(_OPTIONAL))
    if unknown:
        raise BoardError(f"{path}: unknown field(s) {', '.join(unknown)}")
    is_open = data.get("shell") == "open"
    for key, kind in {**_REQUIRED, **_OPTIONAL}.items():
        if key not in data:
            if (key in _REQUIRED and not (is_open and key == "finn_board")) or (is_open and key in _OPEN_REQUIRED):
                raise BoardError(f"{path}: missing field '{key}'")
            continue
        if not isinstance(data[key], kind) or isinstance(data[key], bool):
            raise BoardError(f"{path}: field '{key}' has the wrong type ({type(data[key]).__name__})")
    if data["clock_mhz"] <= 0:
        raise BoardError(f"{path}: field 'clock_mhz' must be > 0, got {data['clock_mhz']}")
    if data["shell"] not in SHELLS:
        raise BoardError(f"{path}: field 'shell' must be one of {', '.join(SHELLS)}, got '{data['shell']}'")
    res = data["resources"]
    missing = [k for k in _RESOURCES if k not in res]
    extra = sorted(set(res) - set(_RESOURCES))
    if missing or extra:
        raise BoardError(f"{path}: field 'resources' needs exactly {', '.join(_RESOURCES)}"
                         + (f" (missing {', '.join(missing)})" if missing else "")
                         + (f" (unknown {', '.join(extra)})" if extra else ""))
    for key in _RESOURCES:
        if not isinstance(res[key], int) or isinstance(res[key], bool) or res[key] < 0:
            raise BoardError(f"{path}: field 'resources.{key}' must be a non-negative integer, got {res[key]!r}")
    power = data.get("power", {"kind": "none"})
    if power.get("kind") not in POWER_KINDS:
        raise BoardError(f"{path}: field 'power.kind' must be one of {', '.join(POWER_KINDS)}, "
                         f"got {power.get('kind')!r}")
    model = data.get("power_model", {})
    if model and (sorted(model) != sorted(POWER_MODEL_KEYS) or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0 for v in model.values())):
        raise BoardError(f"{path}: field 'power_model' needs exactly {', '.join(POWER_MODEL_KEYS)}, "
                         "each a number >= 0")
    if model.get("idle_activity", 0) > 1:
        raise BoardError(f"{path}: field 'power_model.idle_activity' must be in [0, 1]")
    serial = data.get("serial", {})
    if serial and not isinstance(serial.get("baud"), int):
        raise BoardError(f"{path}: field 'serial.baud' must be an integer")
    if data["shell"] == "alveo" and not data.get("platform"):
        raise BoardError(f"{path}: field 'platform' is required for an alveo shell")
    if is_open:
        if "finn_board" in data:
            raise BoardError(f"{path}: field 'finn_board' is for Xilinx shells; an open board is built by hwq.rtl")
        fpga = data["fpga"]
        for key in _FPGA_KEYS:
            if not isinstance(fpga.get(key), str):
                raise BoardError(f"{path}: field 'fpga.{key}' is required (a string) for an open shell")
        if fpga["family"] not in OPEN_FAMILIES:
            raise BoardError(f"{path}: field 'fpga.family' must be one of {', '.join(OPEN_FAMILIES)}, "
                             f"got '{fpga['family']}'")
        check_open_part(data["part"], fpga, path)
    else:
        check_xilinx_part(data, path)
    return Board(
        name=path.stem, title=data["title"], part=data["part"], clock_mhz=float(data["clock_mhz"]),
        shell=data["shell"], finn_board=data.get("finn_board"), resources=Resources(**res),
        serial=serial, power=power, platform=data.get("platform"), notes=data.get("notes", ""),
        fpga=data.get("fpga", {}), power_model=model, path=path,
    )


def check_xilinx_part(data: dict, path: Path) -> None:
    """A Xilinx board's ``part`` must belong to its shell's family, its ``finn_board`` must be a board finn-plus
    knows for that shell, with that part; an Alveo ``platform`` must be the card's."""
    from finn.util.basic import alveo_part_map, pynq_part_map  # finn-plus's own board -> part tables

    shell, part, finn_board = data["shell"], data["part"], data["finn_board"]
    pattern, family = SHELL_PARTS[shell]
    if not pattern.match(part):
        raise BoardError(f"{path}: field 'part' '{part}' is not a part a {shell} shell runs on: expected {family}")
    known = pynq_part_map if shell == "zynq" else alveo_part_map
    if finn_board not in known:
        raise BoardError(f"{path}: field 'finn_board' '{finn_board}' is not a {shell} board finn-plus knows; "
                         f"known: {', '.join(sorted(known))}")
    if known[finn_board].lower() != part.lower():
        raise BoardError(f"{path}: field 'part' '{part}' is not the part finn-plus uses for finn_board "
                         f"'{finn_board}' ({known[finn_board]})")
    if shell == "alveo" and not data["platform"].lower().startswith(f"xilinx_{finn_board.lower()}_"):
        raise BoardError(f"{path}: field 'platform' '{data['platform']}' is not a platform of the "
                         f"{finn_board} (expected xilinx_{finn_board.lower()}_...)")


def check_open_part(part: str, fpga: dict, path: Path) -> None:
    """An open board's ``fpga.device`` must be a nextpnr device of its family, the one ``part`` names; on ECP5
    the part's speed grade (``LFE5U-85F-6...``) must be ``fpga.speed``."""
    devices = NEXTPNR_DEVICES[fpga["family"]]
    device = fpga["device"]
    if device not in devices:
        raise BoardError(f"{path}: field 'fpga.device' '{device}' is not a nextpnr-{fpga['family']} device; "
                         f"expected one of {', '.join(devices)}")
    prefix = devices[device]
    if not part.upper().startswith(prefix.upper() + "-") and part.upper() != prefix.upper():
        raise BoardError(f"{path}: field 'part' '{part}' is not the part fpga.device '{device}' selects "
                         f"({prefix}-...)")
    if fpga["family"] == "ecp5":
        speed = fpga.get("speed")
        if speed is not None and str(speed) not in ECP5_SPEEDS:
            raise BoardError(f"{path}: field 'fpga.speed' must be one of {', '.join(ECP5_SPEEDS)}, got {speed!r}")
        grade = part[len(prefix) + 1:len(prefix) + 2]
        if speed is not None and grade != str(speed):
            raise BoardError(f"{path}: field 'fpga.speed' '{speed}' is not the speed grade of part '{part}' "
                             f"('{grade}')")
