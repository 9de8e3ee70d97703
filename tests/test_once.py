# SPDX-License-Identifier: BSD-3-Clause
"""Once-QAT by vertical layering (--method once): the slices, the view, the trained members and their export."""

from __future__ import annotations

import json

import pytest
import torch

from hwq.errors import ConfigError
from hwq.quant.layered import layered_view, quantizers, slice_integers
from hwq.train import TrainConfig, run_train


def test_slicing_keeps_the_most_significant_bits_rounded():
    q = torch.arange(-7.0, 8.0)
    two = slice_integers(q, 4, 2, signed=True, narrow=True)
    assert two.min() == -1 and two.max() == 1
    assert torch.equal(two, torch.floor(q / 4 + 0.5).clamp(-1, 1))
    # nested: slicing 4 -> 3 -> 2 is 4 -> 2 wherever the middle step did not clamp
    unsigned = torch.arange(0.0, 16.0)
    assert torch.equal(slice_integers(unsigned, 4, 2, signed=False, narrow=False),
                       torch.floor(unsigned / 4 + 0.5).clamp(0, 3))
    assert torch.equal(slice_integers(q, 4, 4, signed=True, narrow=True), q)  # the top member is the run
    with pytest.raises(ValueError):
        slice_integers(q, 4, 1, signed=True, narrow=True)


@pytest.fixture(scope="module")
def once_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("once") / "run"
    config = TrainConfig(model="tfc", dataset="digits", method="once", wbits=4, abits=4, epochs=6, threads=1,
                         method_options={"once_bits": [2]})
    return run, run_train(config, run, progress=False)


def test_the_view_computes_the_member_and_the_run_is_unchanged_outside_it(once_run):
    from hwq.train.loop import load_trained_model

    model, _, _ = load_trained_model(once_run[0])
    x = torch.rand(8, 1, 8, 8)
    seen = {}

    def keep(name):
        def hook(module, inputs, out):
            seen[name] = out
        return hook

    full = model(x)
    with layered_view(model, (2, 2)):
        # registered after the view's hooks, these see what the view returns
        handles = [p.register_forward_hook(keep((n, role))) for n, p, role in quantizers(model)]
        member = model(x)
    for h in handles:
        h.remove()
    assert not torch.allclose(full, member)
    assert torch.equal(model(x), full)  # the view's hooks are gone
    assert {role for _, role in seen} == {"weight", "act"}
    for (name, role), out in seen.items():  # on a 2-bit grid: 3 narrow weight levels per row, 4 activation levels
        rows = out.detach().reshape(out.shape[0], -1) if role == "weight" else out.detach().reshape(1, -1)
        assert max(len(torch.unique(r)) for r in rows) <= (3 if role == "weight" else 4), name


def test_a_once_run_trains_both_members_and_exports_each_bit_exactly(once_run, tmp_path):
    from hwq.export import run_export
    from hwq.export.members import derive_member_run

    run, metrics = once_run
    assert metrics["config"]["method"] == "once" and metrics["test_acc"] > 0.7
    member = derive_member_run(run, 2)
    assert member == run / "member-w2a2"
    recorded = json.loads((member / "metrics.json").read_text())
    assert recorded["member_of"]["bits"] == [4, 4] and recorded["member_of"]["member_bits"] == [2, 2]
    assert recorded["model_spec"]["wbits"] == 2 and recorded["config"]["method"] == "uniform"
    assert recorded["test_acc"] > 0.6, recorded["test_acc"]  # the 2-bit member was trained, not only sliced
    report = run_export(member)
    assert report["verification"]["passed"] and report["verification"]["argmax_match"] == 1.0
    # the member's weights are the run's integers sliced: its QONNX weight integers are in 2-bit narrow range
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.util.basic import get_by_name

    onnx = ModelWrapper(str(member / "model.onnx"))
    for node in onnx.graph.node:
        if node.op_type == "Quant" and onnx.get_initializer(node.input[0]) is not None:
            bits = onnx.get_initializer(node.input[3])
            if bits is not None and float(bits) == 2.0:
                w, s = onnx.get_initializer(node.input[0]), onnx.get_initializer(node.input[1])
                assert abs(w / s).max() <= 1.0 + 1e-4
    assert get_by_name is not None
    with pytest.raises(ConfigError, match=r"--bits 3: .* holds W2/4 .*; expected one of 2, 4"):
        derive_member_run(run, 3)
    assert derive_member_run(run, 4) == run  # the run's own bits: the member is the run


def test_only_a_once_run_has_members_and_members_must_be_slices(tmp_path, once_run):
    from hwq.export.members import derive_member_run

    plain = tmp_path / "plain"
    run_train(TrainConfig(model="tfc", dataset="digits", wbits=4, abits=4, epochs=1, threads=1), plain,
              progress=False)
    with pytest.raises(ConfigError, match=r"--bits: .* was trained with --method uniform; only a --method once run"):
        derive_member_run(plain, 2)
    with pytest.raises(ConfigError, match=r"method_options.once_bits: member W4A4: expected 2..3 weight"):
        run_train(TrainConfig(model="tfc", dataset="digits", method="once", wbits=3, abits=3, epochs=1, threads=1,
                              method_options={"once_bits": [4]}), tmp_path / "bad", progress=False)
