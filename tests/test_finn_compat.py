# SPDX-License-Identifier: BSD-3-Clause
"""hwq.dataflow.finn_compat: the finn-plus workarounds leave no global state behind, and the finn-plus code they
copy is still the installed finn-plus's (a finn-plus upgrade that changes it fails here, naming the workaround)."""

from __future__ import annotations

import ast
import hashlib
import importlib
import importlib.metadata
import inspect
import os
import textwrap

import numpy as np
import pytest

from hwq.dataflow import finn_compat
from hwq.dataflow.finn_compat import DUMMY_VIVADO, FORKS, finn_session, import_finn_layers, import_finn_steps


# --- the forked finn-plus code ---------------------------------------------------------------------------------------
def _resolve(upstream: str):
    module, qualname = upstream.split(":")
    obj = import_finn_steps() if module == "finn.builder.build_dataflow_steps" else importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


def _function_tree(func) -> ast.FunctionDef:
    return ast.parse(textwrap.dedent(inspect.getsource(func))).body[0]


def code_hash(func) -> str:
    """sha256 (16 hex digits) of ``func``'s code read back from its syntax tree, without its docstring: any change
    to the signature, decorators or body counts; comments, layout and docstrings do not."""
    return _tree_hash(_function_tree(func))


def _tree_hash(tree: ast.FunctionDef) -> str:
    first = tree.body[0] if tree.body else None
    if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
        tree.body = tree.body[1:]
    # ast.unparse: the code in a canonical layout, comment-free, and the same on Python 3.11 and 3.12 (ast.dump's
    # fields are not: 3.12 adds type_params)
    return hashlib.sha256(ast.unparse(tree).encode()).hexdigest()[:16]


def applied_transforms(func, skip_marked: bool = False) -> list[str]:
    """The transforms ``func`` applies, in source order: ``X`` for each ``model.transform(X(...))`` (the variable's
    name for ``model.transform(x)``), and ``f()`` for each call of another step function (``_minimize_bit_width``).
    ``skip_marked`` leaves out the lines marked ``# hwq`` (hwq's insertions into a copy of finn-plus's code)."""
    lines = inspect.getsourcelines(func)[0]  # line 1 of the parsed function is lines[0]
    out = []
    for node in ast.walk(_function_tree(func)):
        if not isinstance(node, ast.Call) or skip_marked and "# hwq" in lines[node.lineno - 1]:
            continue
        if isinstance(node.func, ast.Attribute) and node.func.attr == "transform" and node.args:
            arg = node.args[0]
            target = arg.func if isinstance(arg, ast.Call) else arg
            out.append((node.lineno, node.col_offset, ast.unparse(target).split(".")[-1]))
        elif isinstance(node.func, ast.Name) and node.func.id.startswith(("_minimize", "step_")):
            out.append((node.lineno, node.col_offset, node.func.id + "()"))
    return [name for *_, name in sorted(out)]


def _revisit(fork, detail: str) -> str:
    package = "qonnx" if fork.upstream.startswith("qonnx.") else "finn-plus"
    return (f"{package} {importlib.metadata.version(package)} changed {fork.upstream}; revisit workaround "
            f"{fork.workaround} (hwq/dataflow/finn_compat.py): {detail}")


@pytest.mark.parametrize("fork", FORKS, ids=[f.upstream.split(":")[1] for f in FORKS])
def test_the_forked_finn_plus_code_is_unchanged(fork):
    found = code_hash(_resolve(fork.upstream))
    assert found == fork.code_hash, _revisit(
        fork, f"its code hash is {found}, the workaround was written against {fork.code_hash}; port what changed, "
              f"then set Fork.code_hash to {found}")


@pytest.mark.parametrize("ours, upstream", [
    (finn_compat.streamline, "finn.builder.build_dataflow_steps:step_streamline"),
    (finn_compat.minimize_bit_width, "finn.builder.build_dataflow_steps:_minimize_bit_width"),
])
def test_hwq_copies_apply_finn_plus_transforms_in_finn_plus_order(ours, upstream):
    """The copies are upstream's sequence plus the lines marked ``# hwq``: nothing dropped, reordered or added
    unmarked; and every pass of hwq's in them is on a marked line."""
    from hwq.dataflow import passes

    fork = next(f for f in FORKS if f.upstream == upstream)
    theirs, mine = applied_transforms(_resolve(upstream)), applied_transforms(ours, skip_marked=True)
    assert mine == theirs, _revisit(fork, f"it applies {theirs}, hwq's copy (without its '# hwq' lines) {mine}")
    assert len(theirs) >= 6 and not set(mine) & (set(vars(passes)) | {"clamp"})
    assert len(applied_transforms(ours)) > len(mine)


def test_the_minimize_steps_are_the_helper_hwq_copies():
    """Both finn-plus steps that hwq's minimize_bit_width replaces run ``_minimize_bit_width`` first."""
    for step in ("step_minimize_bit_width_initial", "step_minimize_bit_width"):
        assert applied_transforms(_resolve(f"finn.builder.build_dataflow_steps:{step}"))[0] == "_minimize_bit_width()"


def test_code_hash_ignores_docstrings_comments_and_layout_but_not_code():
    def tree_hash(source: str) -> str:
        return _tree_hash(ast.parse(textwrap.dedent(source)).body[0])

    base = tree_hash("""
        def step(model, cfg):
            \"\"\"Docs.\"\"\"
            return model.transform(X(), apply_to_subgraphs=True)
    """)
    assert base == tree_hash("""
        def step(model, cfg):  # a comment
            return model.transform(
                X(), apply_to_subgraphs=True)
    """)
    assert base != tree_hash("def step(model, cfg):\n    return model.transform(X())\n")
    assert base != tree_hash("def step(model, cfg, extra=None):\n    return model.transform(X(), "
                             "apply_to_subgraphs=True)\n")


# --- finn_session leaves no global state -----------------------------------------------------------------------------
def _finn_state():
    from finn.custom_op.fpgadataflow.hls.vectorvectoractivation_hls import VVAU_hls
    from finn.util import settings as finn_settings
    from finn.util.logging import log

    from finn.custom_op.fpgadataflow.thresholding import Thresholding

    return (finn_settings._SETTINGS, log.level, log.propagate, vars(VVAU_hls)["get_template_param_values"],
            vars(Thresholding)["minimize_weight_bit_width"])


def _thresholding(thresholds):
    """A one-node HW graph: ``Thresholding_hls`` on an INT4 stream of 2 channels."""
    from onnx import TensorProto, helper
    from qonnx.core.datatype import DataType
    from qonnx.core.modelwrapper import ModelWrapper

    node = helper.make_node("Thresholding_hls", ["x", "t"], ["y"], domain="finn.custom_op.fpgadataflow.hls",
                            backend="fpgadataflow", NumChannels=2, PE=1, numSteps=1, inputDataType="INT4",
                            weightDataType="INT4", outputDataType="BINARY", ActVal=0, numInputVectors=[1])
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])])
    model = ModelWrapper(helper.make_model(graph))
    model.set_tensor_datatype("x", DataType["INT4"])
    model.set_initializer("t", np.array(thresholds, dtype=np.float32).reshape(2, 1))
    model.set_tensor_datatype("t", DataType["INT4"])
    return model


@pytest.mark.parametrize("thresholds, smallest", [([[-1], [0]], "INT2"), ([[-3], [2]], "INT3"), ([[0], [0]], "INT2")])
def test_threshold_types_hold_minus_one_and_zero(tmp_path, thresholds, smallest):
    """Workaround 9: finn-plus gives thresholds {-1, 0} the type BIPOLAR (no 0) and raises; inside a session the
    smallest type is INT2, which the HLS layer then widens to its input's INT4 as it does for every other case."""
    from finn.custom_op.fpgadataflow.thresholding import Thresholding
    from finn.transformation.fpgadataflow.minimize_weight_bit_width import MinimizeWeightBitWidth
    from finn.util.basic import getHWCustomOp

    import_finn_layers()
    if thresholds == [[-1], [0]]:
        with pytest.raises(Exception, match="can't be expressed with type BIPOLAR"):
            _thresholding(thresholds).transform(MinimizeWeightBitWidth())
    with finn_session(tmp_path / "codegen"):
        model = _thresholding(thresholds)
        assert str(Thresholding.minimize_weight_bit_width(getHWCustomOp(model.graph.node[0]), model)) == smallest
        model = _thresholding(thresholds).transform(MinimizeWeightBitWidth())
    assert str(model.get_tensor_datatype("t")) == "INT4"


def test_finn_session_restores_only_what_it_set(tmp_path, monkeypatch):
    monkeypatch.delenv("XILINX_VIVADO", raising=False)
    monkeypatch.setenv("HWQ_CALLER", "kept")
    env, state = dict(os.environ), _finn_state()
    with finn_session(tmp_path / "codegen"):
        assert os.environ["XILINX_VIVADO"] == DUMMY_VIVADO and os.environ["HWQ_CALLER"] == "kept"
        # set by other code (another thread) during the session: not finn_session's to undo; the old restore,
        # os.environ.clear() + update(saved), dropped it, and left the environment empty for a moment
        os.environ["HWQ_SET_INSIDE"] = "1"
        assert _finn_state() != state
    assert "XILINX_VIVADO" not in os.environ and os.environ.pop("HWQ_SET_INSIDE") == "1"
    # every key the caller had is as it was (a module first imported inside the session may add its own, as
    # sklearn's import adds KMP_DUPLICATE_LIB_OK: it keeps them)
    assert {k: os.environ.get(k) for k in env} == env and _finn_state() == state


def test_finn_session_keeps_a_real_vivado_path_and_restores_on_error(tmp_path, monkeypatch):
    monkeypatch.setenv("XILINX_VIVADO", "/opt/Xilinx/Vivado/2024.2")
    state = _finn_state()
    with pytest.raises(RuntimeError, match="boom"), finn_session(tmp_path / "codegen"):
        assert os.environ["XILINX_VIVADO"] == "/opt/Xilinx/Vivado/2024.2"
        raise RuntimeError("boom")
    assert os.environ["XILINX_VIVADO"] == "/opt/Xilinx/Vivado/2024.2" and _finn_state() == state


def test_keeping_process_output_gives_back_stdout_and_the_root_loggers_handlers():
    """What FINN's builder does to the process (its stdout redirection and logging setup) ends with the block."""
    import io
    import logging
    import sys

    from hwq.dataflow.finn_compat import keeping_process_output

    before = sys.stdout, sys.stderr, logging.getLogger().handlers[:]
    with keeping_process_output():
        sys.stdout, sys.stderr = io.StringIO(), io.StringIO()
        logging.getLogger().addHandler(logging.StreamHandler(sys.stdout))
    assert (sys.stdout, sys.stderr, logging.getLogger().handlers) == before
