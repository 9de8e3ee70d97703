# SPDX-License-Identifier: BSD-3-Clause
"""Importing hwq changes no process-wide state: the model and family registries (README, "Registries") are the
only things filled at import time (``tests/test_catalog.py`` checks they hold what the catalog lists)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

#: Run in a fresh interpreter: import every third-party module hwq's modules import at module level (so that
#: their own import-time effects happen first), record the process-wide state, import every hwq module, record it
#: again, and print both.
_PROBE = textwrap.dedent('''
    import ast, importlib, json, logging, multiprocessing, os, pathlib, signal, sys, warnings
    import hwq

    def module_level_imports(tree):
        """Modules imported outside function bodies (where a module's import runs them)."""
        stack, out = list(tree.body), set()
        while stack:
            node = stack.pop()
            if isinstance(node, ast.Import):
                out |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                out |= {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
            elif not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                stack.extend(ast.iter_child_nodes(node))
        return out

    # the module files, found without importing anything (pkgutil.walk_packages imports every package)
    root = pathlib.Path(hwq.__file__).parent
    files = {".".join(("hwq",) + p.relative_to(root).with_suffix("").parts).removesuffix(".__init__"): p
             for p in sorted(root.rglob("*.py"))}
    modules = sorted(name for name in files if name not in ("hwq", "hwq.__main__"))
    third = set()
    for name in modules:
        third |= {m for m in module_level_imports(ast.parse(files[name].read_text())) if m.split(".")[0] != "hwq"}
    for name in sorted(third):
        try:
            importlib.import_module(name)
        except ImportError:  # "from package import name" where name is not a module
            pass

    def state():
        s = {"environ": sorted(os.environ.items()), "sys.path": list(sys.path), "cwd": os.getcwd(),
             "warnings": [repr(f) for f in warnings.filters],
             "streams": [repr(s) for s in (sys.stdin, sys.stdout, sys.stderr)],
             "signals": [repr(signal.getsignal(n)) for n in (signal.SIGINT, signal.SIGTERM, signal.SIGPIPE)],
             "root logger": [logging.root.level, repr(logging.root.handlers)],
             "recursion limit": sys.getrecursionlimit(),
             "start method": multiprocessing.get_start_method(allow_none=True)}
        s["loggers"] = sorted((name, lg.level, lg.propagate, lg.disabled, len(lg.handlers))
                              for name, lg in logging.root.manager.loggerDict.items()
                              if isinstance(lg, logging.Logger) and not name.startswith("hwq"))
        if "numpy" in sys.modules:
            import numpy
            s["numpy"] = [repr(numpy.geterr()), repr(numpy.get_printoptions())]
        if "torch" in sys.modules:
            import torch
            s["torch"] = [torch.get_num_threads(), torch.are_deterministic_algorithms_enabled(),
                          repr(torch.get_default_dtype())]
        if "brevitas.core.stats.stats_op" in sys.modules:
            s["brevitas stats registry"] = len(sys.modules["brevitas.core.stats.stats_op"].SIGNEDNESS_STATS)
        return s

    before, hwq_before = state(), sorted(m for m in sys.modules if m.startswith("hwq."))
    for name in modules:
        importlib.import_module(name)
    after = state()
    # loggers created since (by a module imported only now) are new, not changed
    known = {entry[0] for entry in before["loggers"]}
    after["loggers"] = [entry for entry in after["loggers"] if entry[0] in known]
    print(json.dumps({"modules": len(modules), "before": before, "after": after, "before_modules": hwq_before}))
''')


def test_importing_every_hwq_module_changes_no_process_wide_state():
    done = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["modules"] > 50
    changed = {key: (value, result["after"][key]) for key, value in result["before"].items()
               if result["after"][key] != value}
    assert not changed, f"importing hwq changed {sorted(changed)}: {changed}"
    assert "hwq.quant" not in result["before_modules"], "the probe imported hwq before its first record"
