# SPDX-License-Identifier: BSD-3-Clause
"""Average pools, residual adds and concatenations in the FINN build, bit-exact through the gate; errors about
nodes FINN made name the user's node they came from (docs/dataflow.md, "Pools, residual adds, concatenations").

Each network is a small Brevitas model on digits (1x8x8), trained for a few dozen steps (one thread, fixed seed),
exported with hwq's exporter and verified against PyTorch like ``hwq export`` does, then built with ``run_build``
up to ``estimate``.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch
from brevitas.nn import QuantIdentity, TruncAdaptiveAvgPool2d, TruncAvgPool2d
from brevitas.quant.scaled_int import RoundTo8bit, TruncTo8bit
from onnx import TensorProto, helper
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.custom_op.registry import getCustomOp
from torch import nn

from hwq._io import write_json
from hwq.data import Dataset, load_dataset
from hwq.dataflow import BuildConfig, run_build
from hwq.dataflow.errors import MappingError
from hwq.dataflow.provenance import describe, record_user_nodes
from hwq.export import export_qonnx_model, verify_qonnx
from hwq.quant.brevitas_map import to_injector
from hwq.quant.family import UniformFamily
from hwq.quant.spec import QuantSpec, Role, Scaling

FAMILY = UniformFamily()
SHAPE = (1, 8, 8)
#: Images the gate runs (a few: each build must stay well under 30 s on the shared 2-core machine).
GATE_IMAGES = 8


def act(bits: int, signed: bool = True) -> QuantIdentity:
    """A learned-scale activation quantizer that hands Brevitas' pools the QuantTensor they need."""
    spec = QuantSpec(Role.ACT, bits, signed=signed, narrow_range=False, scaling=Scaling.LEARNED)
    return QuantIdentity(act_quant=to_injector(spec), return_quant_tensor=True)


def conv(cin: int, cout: int, padding: int = 1) -> nn.Module:
    return nn.Sequential(FAMILY.conv2d(cin, cout, 3, 2, padding=padding), nn.BatchNorm2d(cout))


class GlobalPoolNet(nn.Module):
    """conv -> conv -> global average pool -> 4-bit quantizer -> linear classifier."""

    def __init__(self, pool: str) -> None:
        super().__init__()
        self.input_shape = SHAPE
        # FINN's quantized pool (Trunc) sums 36 values: unsigned ones (a ReLU-like quantizer) stay in Brevitas'
        # accumulator width, signed ones need not (check_pool_truncs)
        self.features = nn.Sequential(FAMILY.input_quant(), conv(1, 4), act(2), conv(4, 8, padding=0),
                                      act(2, signed=pool == "float"))
        self.pool = nn.AdaptiveAvgPool2d(1) if pool == "float" else \
            TruncAdaptiveAvgPool2d(output_size=1, trunc_quant=TruncTo8bit)
        self.post = act(4)
        self.fc = FAMILY.classifier(8, 10, 2)

    def forward(self, x):
        return self.fc(torch.flatten(self.post(self.pool(self.features(x))), 1))


class AvgPoolNet(nn.Module):
    """conv -> k x k TruncAvgPool2d -> quantizer -> linear classifier."""

    def __init__(self, trunc_quant=TruncTo8bit, bits: int = 2, signed: bool = True, kernel: int = 2) -> None:
        super().__init__()
        self.input_shape = SHAPE
        self.features = nn.Sequential(FAMILY.input_quant(), conv(1, 4), act(bits, signed))
        self.pool = TruncAvgPool2d(kernel_size=kernel, stride=kernel, trunc_quant=trunc_quant)
        self.post = act(2)
        self.fc = FAMILY.classifier(4 * (8 // kernel) ** 2, 10, 2)

    def forward(self, x):
        return self.fc(torch.flatten(self.post(self.pool(self.features(x))), 1))


class ResidualNet(nn.Module):
    """A residual block ``x -> conv -> act -> conv -> act, + x -> act`` whose two branches share one quantizer
    (one scale, as a Brevitas user quantizes both inputs of an add); ``shared=False`` gives each its own."""

    def __init__(self, shared: bool = True) -> None:
        super().__init__()
        self.input_shape = SHAPE
        self.stem = nn.Sequential(FAMILY.input_quant(), conv(1, 4))
        # Brevitas adds QuantTensors only of one scale: two quantizers hand over plain tensors
        self.branch_in = act(2) if shared else FAMILY.act(2, 4)
        self.body = nn.Sequential(conv(4, 4), act(2), conv(4, 4))
        self.branch_out = self.branch_in if shared else FAMILY.act(2, 4)
        self.join = act(2)
        self.fc = FAMILY.classifier(4 * 64, 10, 2)

    def forward(self, x):
        x = self.branch_in(self.stem(x))
        return self.fc(torch.flatten(self.join(x + self.branch_out(self.body(x))), 1))


class ConcatNet(nn.Module):
    """Two convolutions of one input, concatenated along the channels (one shared quantizer), then a classifier."""

    def __init__(self) -> None:
        super().__init__()
        self.input_shape = SHAPE
        self.stem = nn.Sequential(FAMILY.input_quant(), conv(1, 4), act(2))
        self.left, self.right = conv(4, 2), conv(4, 3)
        self.cat_act = act(2)
        self.fc = FAMILY.classifier(5 * 64, 10, 2)

    def forward(self, x):
        x = self.stem(x)
        y = torch.cat([self.cat_act(self.left(x)), self.cat_act(self.right(x))], dim=1)
        return self.fc(torch.flatten(y, 1))


class Exp(nn.Module):
    def forward(self, x):
        return torch.exp(x)


class FloatFunctionNet(nn.Module):
    """A float function (sigmoid, exp) between a quantizer and a convolution: the convolution reads floats."""

    def __init__(self, function: nn.Module) -> None:
        super().__init__()
        self.input_shape = SHAPE
        self.features = nn.Sequential(FAMILY.input_quant(), conv(1, 4), FAMILY.act(2, 4), function, conv(4, 4),
                                      FAMILY.act(2, 4))
        self.fc = FAMILY.classifier(4 * 64, 10, 2)

    def forward(self, x):
        return self.fc(torch.flatten(self.features(x), 1))


def _train(model: nn.Module, steps: int = 40) -> nn.Module:
    """A few Adam steps on digits, so that activations and classes vary (one thread: the same bits anywhere)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(0)
        data = load_dataset("digits")
        x = Dataset.to_float(data.train_x).reshape(len(data.train_x), *SHAPE)
        opt = torch.optim.Adam(model.parameters(), lr=0.02)
        model.train()
        for _ in range(steps):
            idx = torch.randint(0, len(x), (64,))
            loss = nn.functional.cross_entropy(model(x[idx]), data.train_y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    finally:
        torch.set_num_threads(threads)
    return model.eval()


def make_run(model: nn.Module, run, n: int = 50):
    """A run folder as ``hwq export`` leaves it: ``model.onnx``, ``export.json`` (the verification against
    PyTorch, with the ONNX file's SHA-256) and ``metrics.json`` naming the dataset."""
    run.mkdir(parents=True)
    export_qonnx_model(model, run / "model.onnx")
    data = load_dataset("digits")
    images = Dataset.to_float(data.test_x[:n]).reshape(n, *SHAPE)
    verification, _, _ = verify_qonnx(run / "model.onnx", model, images)
    assert verification["passed"], verification
    write_json(run / "export.json", {"verification": verification, "outputs": {
        "onnx_sha256": hashlib.sha256((run / "model.onnx").read_bytes()).hexdigest()}})
    write_json(run / "metrics.json", {"config": {"dataset": "digits"}})
    return run


def _build(model: nn.Module, tmp_path):
    torch.manual_seed(0)
    run = make_run(_train(model), tmp_path / "run")
    manifest = run_build(run, BuildConfig(board="pynq-z2", out_dir=str(run / "build"), verify_samples=GATE_IMAGES),
                         progress=False, stop_step="estimate")
    return manifest, ModelWrapper(str(run / "build" / "intermediate" / "create_dataflow_partition.onnx"))


def _assert_exact(manifest):
    assert manifest["status"] == "stopped" and manifest["stop_step"] == "estimate", manifest.get("error")
    exact = manifest["bit_exact"]
    assert exact["passed"] and exact["classes_match"] == 1.0 and exact["integer_output_compared"]
    assert all(t["values_differing"] == 0 for t in exact["tensors"])
    assert manifest["integer_range"]["passed"]


def _hw_ops(hw) -> list[str]:
    ops = [n.op_type for n in hw.graph.node]
    assert all(n.domain.startswith("finn.custom_op.fpgadataflow") for n in hw.graph.node), ops  # no host leftovers
    return ops


# --- average pools ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("pool", ["float", "trunc"])
def test_global_average_pool_builds_bit_exact(pool, tmp_path):
    """A float global average pool becomes GlobalAccPool, its 1/36 streamlined into the next thresholds (no Mul
    left); Brevitas' TruncAdaptiveAvgPool2d becomes FINN's quantized Pool over the whole map."""
    manifest, hw = _build(GlobalPoolNet(pool), tmp_path)
    _assert_exact(manifest)
    ops = _hw_ops(hw)
    if pool == "float":
        assert "GlobalAccPool" in ops and "Mul" not in ops
    else:
        (node,) = [n for n in hw.graph.node if n.op_type == "Pool"]
        assert getCustomOp(node).get_nodeattr("Function") == "QuantAvgPool"
    assert manifest["bit_exact"]["layerwise"]  # the pooled quantizer's integers are compared too
    assert any(layer["op_type"].startswith("GlobalAccPool" if pool == "float" else "Pool")
               for layer in manifest["estimates"]["layers"])


def test_global_average_pool_straight_into_the_classifier(tmp_path):
    """Without a quantizer after the pool the classifier reads float averages: FINN's 1/36 moves past the last
    MatMul into the label selection (a positive scale keeps the ranking); the classes match, compared by the
    float rule (no integer scores on the QONNX side)."""
    model = GlobalPoolNet("float")
    model.features[-1], model.post = FAMILY.act(2, 8), nn.Identity()
    manifest, hw = _build(model, tmp_path)
    assert manifest["status"] == "stopped" and manifest["bit_exact"]["passed"], manifest.get("error")
    assert manifest["bit_exact"]["classes_match"] == 1.0 and not manifest["bit_exact"]["integer_output_compared"]
    assert "GlobalAccPool" in _hw_ops(hw)


def test_truncated_average_pool_builds_bit_exact(tmp_path):
    """TruncAvgPool2d(2, TruncTo8bit) after a 2-bit activation: a 4-bit sum that Brevitas shifts *left* to 8
    bits; finn-plus's conversion dropped that factor 16 (the gate failed on every image) until
    NarrowWideningTrunc made it the identity Trunc it is."""
    manifest, hw = _build(AvgPoolNet(), tmp_path)
    _assert_exact(manifest)
    (node,) = [n for n in hw.graph.node if n.op_type == "Pool"]
    assert getCustomOp(node).get_nodeattr("Function") == "QuantAvgPool"
    assert getCustomOp(node).get_nodeattr("KernelSize") == [2, 2]


@pytest.mark.parametrize("bits, signed, kernel, moved", [(2, True, 2, 2), (4, False, 4, 3)])
def test_ties_round_half_even_as_in_qonnx(bits, signed, kernel, moved, tmp_path):
    """Untrained, the quantizer scales before and after the pool are simple ratios apart: with 2-bit values and a
    2x2 pool the next quantizer rounds sum / 4, and a sum of 2 (0.5) or -6 (-1.5) is a tie, which QONNX rounds to
    even and FINN's thresholds round up (26 of 128 values differed on the first image); with 4-bit unsigned values
    (scale 1/15) and a 4x4 pool the tie at a sum of 60 is a threshold of 59.999996. RoundHalfEvenAtTies moves
    those thresholds."""
    torch.manual_seed(0)
    run = make_run(AvgPoolNet(bits=bits, signed=signed, kernel=kernel).eval(), tmp_path / "run")
    manifest = run_build(run, BuildConfig(board="pynq-z2", out_dir=str(run / "build"), verify_samples=GATE_IMAGES),
                         progress=False, stop_step="estimate")
    _assert_exact(manifest)
    assert manifest["round_half_even_thresholds"] == moved


def test_a_rounding_average_pool_is_refused_naming_the_users_trunc(tmp_path):
    """Brevitas' default RoundTo8bit rounds; FINN's pool shifts (FLOOR). One line naming the user's nodes."""
    run = make_run(AvgPoolNet(trunc_quant=RoundTo8bit).eval(), tmp_path / "run")
    with pytest.raises(MappingError, match=r"^node 'Trunc_0' \(Trunc\) after 'AveragePool_0' \(AveragePool\) "
                                           r"rounds \(ROUND\).*TruncTo8bit") as err:
        run_build(run, BuildConfig(board="pynq-z2", out_dir=str(tmp_path / "b"), verify_samples=2),
                  progress=False, stop_step="estimate")
    assert "\n" not in str(err.value)


def test_a_pool_sum_brevitas_clamps_is_refused(tmp_path):
    """36 signed 2-bit values sum to -72..36; Brevitas' Trunc takes 7 bits (-64..63) and clamps, FINN's pool would
    not: refused before FINN runs, naming the user's Trunc and pool."""
    model = GlobalPoolNet("trunc")
    model.features[-1] = act(2, signed=True)
    run = make_run(model.eval(), tmp_path / "run")
    with pytest.raises(MappingError, match=r"^node 'Trunc_0' \(Trunc\) after 'GlobalAveragePool_0' "
                                           r"\(GlobalAveragePool\): the sum of 36 values in -2..1 \(-72..36\) "
                                           r"exceeds the Trunc's 7-bit input range -64..63"):
        run_build(run, BuildConfig(board="pynq-z2", out_dir=str(tmp_path / "b"), verify_samples=2),
                  progress=False, stop_step="estimate")


# --- residual adds and concatenations -----------------------------------------------------------------------------
def test_residual_add_builds_bit_exact(tmp_path):
    """The fork becomes DuplicateStreams, the add finn-plus's ElementwiseAdd (1.6.1 has no AddStreams), both
    branches' shared scale is streamlined past it into the next thresholds."""
    manifest, hw = _build(ResidualNet(), tmp_path)
    _assert_exact(manifest)
    ops = _hw_ops(hw)
    assert ops.count("DuplicateStreams") == 1 and ops.count("ElementwiseAdd") == 1
    add = hw.get_nodes_by_op_type("ElementwiseAdd")[0]
    assert all(hw.get_tensor_datatype(i).is_integer() for i in add.input)  # integers, no scale left on a branch
    assert manifest["bit_exact"]["layerwise"]


def test_concat_builds_bit_exact(tmp_path):
    """A channel concat becomes StreamingConcat. FINN orders the two branches' layers the other way round; the
    gate pairs them with the QONNX quantizers by the user's node each was made from, so it still compares layer
    by layer."""
    manifest, hw = _build(ConcatNet(), tmp_path)
    _assert_exact(manifest)
    ops = _hw_ops(hw)
    assert ops.count("StreamingConcat") == 1 and ops.count("DuplicateStreams") == 1
    assert manifest["bit_exact"]["layerwise"] and len(manifest["bit_exact"]["tensors"]) == 5


# --- errors name the user's node ----------------------------------------------------------------------------------
def test_a_float_convolution_names_the_users_conv(tmp_path):
    """A convolution after a float sigmoid (which FINN maps, to PWPolyF) keeps float inputs: FINN lowers it to
    Im2Col + MatMul and maps neither; the error names the user's Conv they were made from."""
    run = make_run(_train(FloatFunctionNet(nn.Sigmoid())), tmp_path / "run")
    with pytest.raises(MappingError, match=r"^FINN cannot map node .*'Im2Col_\d' \(Im2Col\), made from the user's "
                                           r"node 'Conv_1' \(Conv\)") as err:
        run_build(run, BuildConfig(board="pynq-z2", out_dir=str(tmp_path / "b"), verify_samples=2),
                  progress=False, stop_step="estimate")
    assert "\n" not in str(err.value)


def test_an_unmappable_user_node_is_named_as_it_is(tmp_path):
    """FINN has no HW layer for Exp: the user's own node, named as in model.onnx (and what its float output
    leaves unmapped after it, each with the user's node it was made from)."""
    run = make_run(_train(FloatFunctionNet(Exp())), tmp_path / "run")
    with pytest.raises(MappingError, match=r"^FINN cannot map node 'Exp_0' \(Exp\), '\w+' \(\w+\), made from the "
                                           r"user's node 'Conv_1' \(Conv\)"):
        run_build(run, BuildConfig(board="pynq-z2", out_dir=str(tmp_path / "b"), verify_samples=2),
                  progress=False, stop_step="estimate")


def test_provenance_follows_new_nodes_and_renames():
    """A hand-made graph: a transformation replaces the user's Sigmoid by two new nodes, then FINN's renaming of
    every node and tensor; both new nodes name the Sigmoid, the untouched Relu itself."""
    from qonnx.transformation.base import Transformation
    from qonnx.transformation.general import GiveReadableTensorNames, GiveUniqueNodeNames
    from qonnx.util.basic import qonnx_make_model

    from hwq.dataflow.provenance import tracking_user_nodes

    class SplitSigmoid(Transformation):
        def apply(self, model):
            old = model.get_nodes_by_op_type("Sigmoid")[0]
            model.set_initializer("one", np.ones(1, dtype=np.float32))
            model.graph.node.remove(old)
            model.graph.node.append(helper.make_node("Mul", [old.input[0], "one"], ["m"]))
            model.graph.node.append(helper.make_node("Sigmoid", ["m"], [old.output[0]]))
            return model, False

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["r"], name="my_relu"),
                               helper.make_node("Sigmoid", ["r"], ["y"], name="my_sigmoid")], "g", [x], [y])
    model = record_user_nodes(ModelWrapper(qonnx_make_model(graph)))
    with tracking_user_nodes():
        model = model.transform(SplitSigmoid()).transform(GiveUniqueNodeNames()).transform(GiveReadableTensorNames())
    assert [describe(model, n) for n in model.graph.node] == [
        "'Relu_0' (Relu), made from the user's node 'my_relu' (Relu)",
        "'Mul_0' (Mul), made from the user's node 'my_sigmoid' (Sigmoid)",
        "'Sigmoid_0' (Sigmoid), made from the user's node 'my_sigmoid' (Sigmoid)"]
    assert "before" not in ModelWrapper.transform.__code__.co_varnames  # qonnx's own transform is back


def test_a_failing_finn_transform_names_the_users_node(tmp_path):
    """A step that fails as a FINN transform does, naming a node of its input (here: a custom step after
    streamline, raising about FINN's GlobalAccPool_0): the one-line error adds the user's node it came from."""
    from hwq.dataflow import STEPS
    from hwq.dataflow.driver import Step, step_names
    from hwq.dataflow.errors import ModelFileError

    def step_fails(model, ctx):
        (pool,) = model.get_nodes_by_op_type("GlobalAccPool")
        raise ValueError(f"{pool.name}: unsupported configuration")

    upto = STEPS[:step_names(STEPS).index("streamline") + 1]
    run = make_run(GlobalPoolNet("float").eval(), tmp_path / "run")
    with pytest.raises(ModelFileError, match=r"step 'fails' failed \(ValueError: GlobalAccPool_0: unsupported "
                                             r"configuration \[node 'GlobalAccPool_0' \(GlobalAccPool\) was made "
                                             r"from the user's node 'GlobalAveragePool_0' \(GlobalAveragePool\)\]\)"):
        run_build(run, BuildConfig(board="pynq-z2", out_dir=str(tmp_path / "b"), verify_samples=2),
                  progress=False, steps=[*upto, Step("fails", step_fails)])


@pytest.mark.slow
def test_hwq_resnet20_builds(tmp_path):
    """hwq's own ResNet-20 (w2a2, digits-sized): its adds join a batch-normed float branch and a quantized one,
    so they stay float ElementwiseMul/ElementwiseAdd layers, and its average pool feeds the classifier directly
    (classes by the float rule). About 3 minutes on the shared 2-core machine, most of it in StreamlinePlus;
    finn-plus's MoveMulPastJoinAdd raised on its per-channel scales before hwq's copy compared them whole."""
    from hwq.models import ModelSpec, build_model

    torch.manual_seed(0)
    model = _train(build_model(ModelSpec("resnet20", 2, 2, image_shape=SHAPE, num_classes=10)), steps=10)
    run = make_run(model, tmp_path / "run", n=20)
    manifest = run_build(run, BuildConfig(board="pynq-z2", out_dir=str(run / "build"), verify_samples=5),
                         progress=False, stop_step="estimate")
    assert manifest["status"] == "stopped" and manifest["bit_exact"]["passed"], manifest.get("error")
    assert manifest["bit_exact"]["classes_match"] == 1.0
    ops = _hw_ops(ModelWrapper(str(run / "build" / "intermediate" / "create_dataflow_partition.onnx")))
    assert ops.count("ElementwiseAdd") == 9 * 2 and ops.count("DuplicateStreams") == 9 and "GlobalAccPool" in ops
