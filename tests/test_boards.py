# SPDX-License-Identifier: BSD-3-Clause
"""Board descriptions: every shipped file loads and is plausible; bad files and names fail clearly."""

from __future__ import annotations

import os
import shutil

import pytest
import yaml

from hwq.boards import BOARDS_DIR, BoardError, board_dirs, known_boards, load_board
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


def _board_file(tmp_path, source, change):
    data = yaml.safe_load((BOARDS_DIR / f"{source}.yaml").read_text())
    change(data)
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(data))
    return tmp_path / "bad.yaml"


@pytest.mark.parametrize("source, change, message", [
    ("pynq-z2", lambda d: d.update(finn_board="Pynq-Z9"),
     "field 'finn_board' 'Pynq-Z9' is not a zynq board finn-plus knows; known: AUP-ZU3_8GB, KV260_SOM"),
    ("pynq-z2", lambda d: d.update(part="xc7z999-bogus"),
     "field 'part' 'xc7z999-bogus' is not a part a zynq shell runs on: expected Zynq-7000"),
    ("pynq-z2", lambda d: d.update(part="xc7z010clg400-1"),
     "field 'part' 'xc7z010clg400-1' is not the part finn-plus uses for finn_board 'Pynq-Z2' (xc7z020clg400-1)"),
    ("pynq-z2", lambda d: d.update(part="xcu250-figd2104-2L-e"), "is not a part a zynq shell runs on"),
    ("pynq-z2", lambda d: d.update(finn_board="U250"), "'U250' is not a zynq board finn-plus knows"),
    ("alveo-u250", lambda d: d.update(part="xczu7ev-ffvc1156-2-e"),
     "is not a part a alveo shell runs on: expected Alveo (xcu...)"),
    ("alveo-u250", lambda d: d.update(platform="xilinx_u50_gen3x16_xdma_5_202210_1"),
     "field 'platform' 'xilinx_u50_gen3x16_xdma_5_202210_1' is not a platform of the U250"),
    ("ulx3s-85f", lambda d: d["fpga"].update(device="85f"),
     "field 'fpga.device' '85f' is not a nextpnr-ecp5 device; expected one of 12k, 25k"),
    ("ulx3s-85f", lambda d: d["fpga"].update(device="25k"),
     "field 'part' 'LFE5U-85F-6BG381C' is not the part fpga.device '25k' selects (LFE5U-25F-...)"),
    ("ulx3s-85f", lambda d: d["fpga"].update(speed="8"),
     "field 'fpga.speed' '8' is not the speed grade of part 'LFE5U-85F-6BG381C' ('6')"),
    ("icebreaker", lambda d: d.update(part="iCE40HX8K-CT256"),
     "field 'part' 'iCE40HX8K-CT256' is not the part fpga.device 'up5k' selects (iCE40UP5K-...)"),
    ("icebreaker", lambda d: d.update(finn_board="Pynq-Z2"), "field 'finn_board' is for Xilinx shells"),
])
def test_fields_are_checked_against_each_other_and_the_tools(tmp_path, source, change, message):
    path = _board_file(tmp_path, source, change)
    with pytest.raises(BoardError) as err:
        load_board("bad", boards_dir=tmp_path)
    assert str(err.value).startswith(f"{path}: ") and message in str(err.value) and "\n" not in str(err.value)


def test_every_shipped_board_matches_finn_and_nextpnr():
    from finn.util.basic import part_map

    from hwq.boards.board import NEXTPNR_DEVICES

    for name in known_boards():
        board = load_board(name)
        if board.shell == "open":
            assert board.part.upper().startswith(NEXTPNR_DEVICES[board.fpga["family"]][board.fpga["device"]].upper())
        else:
            assert part_map[board.finn_board] == board.part


def test_copy_of_valid_board_loads(tmp_path):
    shutil.copy(BOARDS_DIR / "kv260.yaml", tmp_path / "mine.yaml")
    assert load_board("mine", boards_dir=tmp_path).part == "xck26-sfvc784-2LV-c"


def test_cli_lists_boards(capsys):
    assert main(["boards"]) == 0
    out = capsys.readouterr().out
    for name in EXPECTED:
        assert name in out


# --- names in any letter case, a user's own board folders --------------------------------------------------------
def test_names_are_case_insensitive_with_the_file_stem_as_canonical_spelling():
    assert load_board("PYNQ-Z2").name == load_board("pynq-z2").name == "pynq-z2"
    assert load_board("Ulx3s-85F").path == BOARDS_DIR / "ulx3s-85f.yaml"
    assert known_boards() == sorted(p.stem for p in BOARDS_DIR.glob("*.yaml"))


def _user_board(folder, name, source="kv260", **changes):
    folder.mkdir(parents=True, exist_ok=True)
    data = yaml.safe_load((BOARDS_DIR / f"{source}.yaml").read_text())
    data.update(changes)
    (folder / f"{name}.yaml").write_text(yaml.safe_dump(data))
    return folder / f"{name}.yaml"


def test_a_users_folder_is_searched_first_and_replaces_a_shipped_board_of_the_same_name(tmp_path, monkeypatch):
    monkeypatch.delenv("HWQ_BOARDS", raising=False)
    mine = _user_board(tmp_path / "mine", "My-Board")
    override = _user_board(tmp_path / "mine", "PYNQ-Z2", source="pynq-z2", clock_mhz=125)
    assert load_board("my-board", boards_dir=tmp_path / "mine").name == "My-Board"
    assert load_board("pynq-z2", boards_dir=tmp_path / "mine").path == override
    assert load_board("pynq-z2", boards_dir=tmp_path / "mine").clock_mhz == 125.0
    assert load_board("pynq-z2").clock_mhz == 100.0  # without the folder: the shipped one
    names = known_boards(tmp_path / "mine")
    assert "My-Board" in names and "PYNQ-Z2" in names and "pynq-z2" not in names and "zcu104" in names
    assert mine.parent in board_dirs(tmp_path / "mine")


def test_hwq_boards_env_is_searched_after_boards_dir(tmp_path, monkeypatch):
    first = _user_board(tmp_path / "first", "lab", clock_mhz=150)
    second = _user_board(tmp_path / "second", "lab", clock_mhz=200)
    _user_board(tmp_path / "third", "other")
    monkeypatch.setenv("HWQ_BOARDS", f"{second.parent}{os.pathsep}{tmp_path / 'third'}")
    assert load_board("LAB").path == second and load_board("other").name == "other"
    assert load_board("lab", boards_dir=first.parent).path == first
    assert board_dirs(first.parent) == [first.parent, second.parent, tmp_path / "third", BOARDS_DIR]


def test_a_missing_folder_or_names_differing_only_in_case_are_errors(tmp_path, monkeypatch):
    monkeypatch.delenv("HWQ_BOARDS", raising=False)
    with pytest.raises(BoardError, match=r"^--boards-dir: '.*nope' is not a folder"):
        load_board("pynq-z2", boards_dir=tmp_path / "nope")
    monkeypatch.setenv("HWQ_BOARDS", str(tmp_path / "gone"))
    with pytest.raises(BoardError, match=r"^HWQ_BOARDS: '.*gone' is not a folder"):
        known_boards()
    monkeypatch.delenv("HWQ_BOARDS")
    _user_board(tmp_path / "twins", "lab")
    _user_board(tmp_path / "twins", "LAB")
    with pytest.raises(BoardError, match="LAB.yaml and lab.yaml differ only in letter case"):
        load_board("zcu104", boards_dir=tmp_path / "twins")


def test_unknown_board_lists_the_users_boards_too(tmp_path):
    _user_board(tmp_path, "lab")
    with pytest.raises(BoardError, match=r"unknown board 'zedboard'; known: .*kv260, lab, orangecrab"):
        load_board("zedboard", boards_dir=tmp_path)


def test_cli_lists_a_users_boards_with_their_file(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("HWQ_BOARDS", raising=False)
    path = _user_board(tmp_path, "Lab-Board")
    assert main(["boards", "--boards-dir", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line for line in lines if line.startswith("Lab-Board ")][0].endswith(f"({path})")
    assert not any(line.endswith(".yaml)") for line in lines if not line.startswith("Lab-Board "))
    assert main(["boards", "--boards-dir", str(tmp_path / "nope")]) == 2
    assert "hwq boards: error: --boards-dir: " in capsys.readouterr().err


def test_a_users_board_folder_reaches_the_build_and_the_recipe(exported_tfc_w1a1, tmp_path):
    """``--boards-dir`` (and a recipe's ``build: {boards_dir: ...}``) finds a board file of the user's own: the
    build is named after it, its manifest records it, and a name that is nowhere is a one-line error."""
    import json
    import shutil

    import yaml

    from hwq.cli import main
    from hwq.flow import Recipe

    mine = tmp_path / "my-boards"
    mine.mkdir()
    shutil.copy(BOARDS_DIR / "pynq-z2.yaml", mine / "lab-z2.yaml")
    run = tmp_path / "run"
    shutil.copytree(exported_tfc_w1a1, run, ignore=shutil.ignore_patterns("build-*"))
    assert main(["build", str(run), "--board", "LAB-Z2", "--boards-dir", str(mine), "--verify-samples", "5",
                 "--no-progress"]) == 0
    manifest = json.loads((run / "build-lab-z2" / "manifest.json").read_text())
    assert manifest["status"] == "done" and manifest["board"]["name"] == "lab-z2"
    assert main(["build", str(run), "--board", "lab-z2", "--no-progress"]) == 2  # not without the folder

    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump({"run_dir": str(run), "train": {},
                                      "build": {"board": "Lab-Z2", "boards_dir": str(mine)}}))
    assert Recipe.from_yaml(recipe).build_config()[1].board == "lab-z2"
