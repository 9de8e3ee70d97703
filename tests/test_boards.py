# SPDX-License-Identifier: BSD-3-Clause
"""Board descriptions: every shipped file loads and is plausible; bad files and names fail clearly."""

from __future__ import annotations

import shutil

import pytest
import yaml

from hwq.boards import BOARDS_DIR, BoardError, known_boards, load_board
from hwq.cli import main

EXPECTED = {"pynq-z1", "pynq-z2", "ultra96-v2", "zcu104", "kv260", "aup-zu3", "alveo-u250"}


def test_all_required_boards_ship_and_validate():
    assert EXPECTED <= set(known_boards())
    for name in known_boards():
        board = load_board(name)
        assert board.name == name and board.clock_mhz > 0
        assert board.resources.lut > (5_000 if board.shell == "open" else 10_000) and board.resources.bram18 > 0
        assert board.shell in ("zynq", "alveo", "open")
        assert board.power["kind"] in ("none", "pmbus", "ina", "xrt")
        if board.shell == "zynq":
            assert board.serial["baud"] == 115200 and board.serial["port_hint"].startswith("/dev/")


def test_known_facts():
    z2 = load_board("Pynq-Z2")  # case-insensitive
    assert (z2.part, z2.clock_period_ns, z2.resources.bram18, z2.resources.dsp) == ("xc7z020clg400-1", 10.0, 280, 220)
    assert load_board("zcu104").resources.uram == 96
    assert load_board("alveo-u250").platform.startswith("xilinx_u250")


def test_unknown_board_lists_known_ones():
    with pytest.raises(BoardError) as err:
        load_board("zedboard")
    assert "unknown board 'zedboard'" in str(err.value)
    assert "pynq-z2" in str(err.value) and "zcu104" in str(err.value)


@pytest.mark.parametrize("change, message", [
    (lambda d: d.pop("part"), "missing field 'part'"),
    (lambda d: d.update(shell="versal"), "field 'shell'"),
    (lambda d: d["resources"].pop("dsp"), "missing dsp"),
    (lambda d: d["resources"].update(lut=-1), "resources.lut"),
    (lambda d: d.update(clock_mhz=0), "clock_mhz"),
    (lambda d: d.update(colour="red"), "unknown field(s) colour"),
    (lambda d: d["power"].update(kind="magic"), "power.kind"),
])
def test_invalid_board_file_names_file_and_field(tmp_path, change, message):
    data = yaml.safe_load((BOARDS_DIR / "pynq-z2.yaml").read_text())
    change(data)
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(data))
    with pytest.raises(BoardError) as err:
        load_board("bad", boards_dir=tmp_path)
    assert str(tmp_path / "bad.yaml") in str(err.value) and message in str(err.value)


def test_copy_of_valid_board_loads(tmp_path):
    shutil.copy(BOARDS_DIR / "kv260.yaml", tmp_path / "mine.yaml")
    assert load_board("mine", boards_dir=tmp_path).part == "xck26-sfvc784-2LV-c"


def test_cli_lists_boards(capsys):
    assert main(["boards"]) == 0
    out = capsys.readouterr().out
    for name in EXPECTED:
        assert name in out
