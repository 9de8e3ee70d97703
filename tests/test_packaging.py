# SPDX-License-Identifier: BSD-3-Clause
"""The board files are package data: declared in pyproject.toml, found through importlib.resources, in a built
wheel, and ``hwq boards`` works from that wheel installed outside the checkout."""

from __future__ import annotations

import fnmatch
import importlib.resources
import os
import shutil
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from pathlib import Path

import pytest

from hwq.boards import BOARDS_DIR, known_boards

ROOT = Path(__file__).resolve().parents[1]
PACKAGE_DATA = ("hwq.boards", "builtin/*.yaml")


def _declared_globs() -> list[str]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return config["tool"]["setuptools"]["package-data"][PACKAGE_DATA[0]]


def test_pyproject_declares_the_board_files_as_package_data():
    assert PACKAGE_DATA[1] in _declared_globs()
    package_dir = ROOT / "hwq" / "boards"
    shipped = {p.relative_to(package_dir).as_posix() for p in package_dir.rglob("*.yaml")}
    assert shipped and all(any(fnmatch.fnmatch(f, g) for g in _declared_globs()) for f in shipped), shipped


def test_importlib_resources_sees_every_board_file():
    """What the wheel would hold: the package's ``builtin/*.yaml``, which is where the loader looks."""
    folder = importlib.resources.files("hwq.boards").joinpath("builtin")
    names = sorted(p.name for p in folder.iterdir() if fnmatch.fnmatch(p.name, "*.yaml"))
    assert names == sorted(f"{n}.yaml" for n in known_boards()) and len(names) >= 10
    assert Path(str(folder)).resolve() == BOARDS_DIR


def test_the_repository_boards_folder_links_to_the_package_data():
    """``boards/`` stays the path users know: a symlink git tracks, to the packaged folder."""
    link = ROOT / "boards"
    assert link.is_symlink() and link.resolve() == BOARDS_DIR
    assert os.readlink(link) == "hwq/boards/builtin"
    tracked = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-s", "boards", "hwq/boards/builtin"],
                             capture_output=True, text=True)
    if tracked.returncode != 0:
        pytest.skip("not a git checkout")
    modes = {line.split("\t")[1]: line.split()[0] for line in tracked.stdout.splitlines()}
    assert modes.pop("boards") == "120000", "boards must be committed as a symlink"
    assert sorted(modes) == sorted(f"hwq/boards/builtin/{p.name}" for p in BOARDS_DIR.glob("*.yaml"))


def _source_copy(dest: Path) -> Path:
    """The files a wheel is built from (pyproject, readme, license, the package), without build leftovers."""
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, dest / name)
    shutil.copytree(ROOT / "hwq", dest / "hwq", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return dest


def _build_wheel(tmp_path: Path) -> Path:
    # No build isolation: the project venv's setuptools builds it, so no package index is needed.
    src, out = _source_copy(tmp_path / "src"), tmp_path / "wheel"
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(src), "--no-deps", "--no-build-isolation", "-q",
                    "--disable-pip-version-check", "-w", str(out)], check=True, capture_output=True, cwd=tmp_path)
    (wheel,) = out.glob("hwq-*.whl")
    return wheel


def test_wheel_holds_every_board_and_hwq_boards_runs_from_it_outside_the_checkout(tmp_path):
    (tmp_path / "src").mkdir()
    wheel = _build_wheel(tmp_path)
    names = zipfile.ZipFile(wheel).namelist()
    assert sorted(n for n in names if n.startswith("hwq/boards/builtin/")) == \
        sorted(f"hwq/boards/builtin/{p.name}" for p in BOARDS_DIR.glob("*.yaml"))

    # A fresh venv holding only the wheel; its dependencies (PyYAML, finn-plus for the part tables) are read from
    # this venv's site-packages through a .pth line, which comes after the fresh site-packages and does not run
    # the editable install's hook there, so `hwq` is the wheel's copy.
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index", "-q",
                    "--disable-pip-version-check", str(wheel)], check=True, capture_output=True)
    fresh_site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                                     check=True, capture_output=True, text=True).stdout.strip())
    (fresh_site / "zz_project_deps.pth").write_text(sysconfig.get_path("purelib") + "\n")
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "HWQ_BOARDS")}
    where = subprocess.run([str(python), "-c", "import hwq.boards; print(hwq.boards.BOARDS_DIR)"], cwd=outside,
                           env=env, check=True, capture_output=True, text=True).stdout.strip()
    assert Path(where).is_relative_to(fresh_site), where
    done = subprocess.run([str(venv / "bin" / "hwq"), "boards"], cwd=outside, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    listed = [line.split()[0] for line in done.stdout.splitlines()]
    assert listed == known_boards()
