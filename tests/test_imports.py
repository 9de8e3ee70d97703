# SPDX-License-Identifier: BSD-3-Clause
"""The host (``hwq.harness``) and the board side (``hwq.device``) do not import each other, not even through a
third module or a function-level import: what they share is :mod:`hwq.wire` (the codec), :mod:`hwq.accelerator`
and :mod:`hwq.accelerator_model` (a build's accelerator), :mod:`hwq.power_model`, :mod:`hwq.build_check` and
:mod:`hwq.checks`. Read from the source with ``ast`` (nothing is imported), so the test is exact and fast; and the
modules a PYNQ board runs import neither QONNX, FINN nor torch.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "hwq"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every module ``path`` imports, anywhere in the file (function bodies too), relative imports resolved."""
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)   # ``from hwq import wire``
    return found


#: hwq's modules and what each imports (only hwq modules that exist).
GRAPH = {_module_name(p): _imports(p) for p in PACKAGE.rglob("*.py")}
GRAPH = {name: {m for m in deps if m in GRAPH} for name, deps in GRAPH.items()}


def _with_parents(module: str) -> set[str]:
    """Importing ``a.b.c`` runs ``a/__init__``, ``a/b/__init__`` and ``a/b/c``."""
    parts = module.split(".")
    return {".".join(parts[:i]) for i in range(1, len(parts) + 1)} & GRAPH.keys()


def _reachable(start: str) -> dict[str, str]:
    """Every hwq module ``start`` may import (directly or through others), each with the module importing it."""
    seen, todo = {start: ""}, [start]
    while todo:
        current = todo.pop()
        for dep in GRAPH[current]:
            for module in _with_parents(dep):
                if module not in seen:
                    seen[module] = current
                    todo.append(module)
    return seen


def _chain(seen: dict[str, str], module: str) -> str:
    path = [module]
    while seen[path[-1]]:
        path.append(seen[path[-1]])
    return " <- ".join(path)


@pytest.mark.parametrize("side, other", [("hwq.harness", "hwq.device"), ("hwq.device", "hwq.harness")])
def test_host_and_board_side_do_not_import_each_other(side, other):
    modules = sorted(m for m in GRAPH if m == side or m.startswith(side + "."))
    assert len(modules) > 5
    for module in modules:
        seen = _reachable(module)
        crossing = sorted(m for m in seen if m == other or m.startswith(other + "."))
        assert not crossing, f"{module} imports {other}: {_chain(seen, crossing[0])}"


def test_the_import_graph_is_read_correctly():
    """The test above would pass vacuously if imports were not found: check known edges, relative ones too."""
    assert "hwq.wire" in GRAPH["hwq.device.dut"] and "hwq.wire" in GRAPH["hwq.harness.protocol"]
    assert "hwq.accelerator_model" in GRAPH["hwq.harness.measure"]          # a function-level import
    assert "hwq.device" in _reachable("hwq.flow") and "hwq.harness" in _reachable("hwq.flow")


def test_the_wire_codec_uses_the_standard_library_only():
    stdlib = set(sys.stdlib_module_names)
    assert {m.split(".")[0] for m in _imports(PACKAGE / "wire.py")} <= stdlib | {"__future__"}


def test_the_board_agent_imports_no_qonnx_finn_or_torch():
    """What runs on a PYNQ board (the agent, its session, the codec) loads without the host's heavy packages."""
    code = ("import sys, hwq.device.pynq_agent, hwq.device.dut, hwq.wire; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'qonnx', 'finn', 'torch', 'onnx', 'brevitas'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=PACKAGE.parent).stdout
    assert out.strip() == "[]"
