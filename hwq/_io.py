# SPDX-License-Identifier: BSD-3-Clause
"""Atomic file writes, so an interrupted run never leaves a half-written result behind."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable


def write_atomic(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp_path)`` and then move the temporary file onto ``path`` in one step.

    >>> write_atomic("out.txt", lambda p: p.write_text("hello"))  # doctest: +SKIP
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes it 0600; a result file gets the usual permissions
    try:
        write(tmp_path)
        os.replace(tmp_path, path)
    except OSError as err:  # a full disk while writing: name the file the user asked for, not the hidden one
        if err.errno is None or err.filename not in (None, str(tmp_path), tmp_path):
            raise
        raise OSError(err.errno, err.strerror, str(path)) from err
    finally:
        tmp_path.unlink(missing_ok=True)
    return path


def _umask() -> int:
    """The process's umask, read without changing it (Linux: /proc/self/status); 0o022 where it cannot be read."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    return 0o022


def write_json(path: str | Path, obj: Any) -> Path:
    """Write ``obj`` as indented JSON, atomically."""
    text = json.dumps(obj, indent=2, sort_keys=False) + "\n"
    return write_atomic(path, lambda p: p.write_text(text))


def read_json(path: str | Path, what: str = "JSON file") -> Any:
    """Read a JSON file, turning a missing or malformed file into a one-line HwqError."""
    from hwq.errors import HwqError

    path = Path(path)
    if not path.is_file():
        raise HwqError(f"{path}: {what} not found")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise HwqError(f"{path}: not valid JSON ({err.msg} at line {err.lineno})") from None


def read_yaml_mapping(path: str | Path, what: str) -> dict:
    """Read a YAML file that must hold a mapping; missing file, bad YAML or another type is a ConfigError."""
    import yaml

    from hwq.errors import ConfigError

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: {what} not found")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({err})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of {what} fields")
    return data
