# SPDX-License-Identifier: BSD-3-Clause
"""``--method osc``: oscillation tracking, dampening and freezing on hand-made tensors, BN re-estimation, and a
digits run that exports and builds with FINN bit-exactly."""

import pytest
import torch

from hwq.quant import get_family
from hwq.quant.oscillation import OscillationIntQuant, OscillationTracker, cosine_anneal, dampening_loss
from hwq.train.hooks import ModelHooks


def _int_quant(layer) -> OscillationIntQuant:
    (found,) = [m for m in layer.modules() if isinstance(m, OscillationIntQuant)]
    return found


def test_oscillation_frequency_of_a_hand_made_sequence():
    """An oscillation is a change opposite to the previous change; the frequency is their EMA."""
    sequence = [[0, 0], [1, 0], [0, 1], [1, 2], [1, 2], [0, 1], [0, 2]]
    # entry 0: +1, -1 (osc), +1 (osc), 0, -1 (osc), 0   entry 1: 0, +1, +1, 0, -1 (osc), +1 (osc)
    events = [[0, 0], [1, 0], [1, 0], [0, 0], [1, 1], [0, 1]]
    m = 0.25
    tracker = OscillationTracker(momentum=m)
    expected = torch.zeros(2)
    tracker.update(torch.tensor(sequence[0], dtype=torch.float32), 0.0)
    for ints, event in zip(sequence[1:], events):
        tracker.update(torch.tensor(ints, dtype=torch.float32), 0.0)
        expected = (1 - m) * expected + m * torch.tensor(event, dtype=torch.float32)
        assert torch.allclose(tracker.frequency, expected)
    assert tracker.last_events == 1 and int(tracker.updates) == len(sequence) and not tracker.frozen.any()


def test_dampening_loss_is_the_formula_on_a_hand_made_tensor():
    w = torch.tensor([0.26, -0.9, 0.05, 0.74], requires_grad=True)
    s, low, high = 0.25, -0.75, 0.75  # 3-bit narrow grid: integers -3..3
    w_q = torch.tensor([0.25, -0.75, 0.0, 0.75])
    expected = (0.25 - 0.26) ** 2 + (-0.75 - -0.75) ** 2 + (0.0 - 0.05) ** 2 + (0.75 - 0.74) ** 2
    loss = dampening_loss(w, w_q, torch.tensor(low), torch.tensor(high))
    assert float(loss.detach()) == pytest.approx(expected)
    # and the layer's own: lambda * sum((sg(s * int) - clip(w, s n, s p))^2) with its scale
    layer = get_family("osc", {"osc_dampen": 0.5, "osc_dampen_end": 0.5}).linear(4, 1, bits=3)
    with torch.no_grad():
        layer.weight.copy_(w.detach().reshape(1, 4))
    quant = _int_quant(layer)
    quant.hwq_on_step(0.0)
    qt = layer.quant_weight()
    scale = float(qt.scale.detach())
    int_w = torch.round(layer.weight.detach() / scale).clamp(-3, 3)
    by_hand = 0.5 * (scale * int_w - layer.weight.detach().clamp(-3 * scale, 3 * scale)).square().sum()
    assert float(quant.hwq_extra_loss().detach()) == pytest.approx(float(by_hand), rel=1e-6)
    assert float(quant.hwq_extra_loss()) == 0.0  # taken once per forward pass


@pytest.mark.parametrize("bits", [2, 4, 8])
def test_weights_are_tracked_at_every_bit_width_but_one(bits):
    layer = get_family("osc").linear(8, 4, bits=bits)
    quant = _int_quant(layer)
    quant.hwq_on_step(0.0)
    layer(torch.randn(2, 8))
    assert quant.tracker.prev_int.shape == (4, 8) and float(quant.tracker.prev_int.abs().max()) <= 2 ** (bits - 1) - 1
    assert not [m for m in get_family("osc").linear(8, 4, bits=1).modules() if isinstance(m, OscillationIntQuant)]


def test_schedules_go_from_start_to_end_on_a_cosine():
    assert cosine_anneal(0.0, 0.1, 0.01) == pytest.approx(0.1)
    assert cosine_anneal(0.5, 0.1, 0.01) == pytest.approx(0.055)
    assert cosine_anneal(1.0, 0.1, 0.01) == pytest.approx(0.01)
    quant = _int_quant(get_family("osc").linear(4, 2, bits=4))
    quant.hwq_on_step(1.0)
    assert quant.dampen_weight == pytest.approx(0.1) and quant.freeze_threshold == pytest.approx(0.01)


def test_a_weight_flipping_every_step_is_frozen_and_then_never_changes_while_others_move():
    family = get_family("osc", {"osc_momentum": 0.3, "osc_freeze_threshold": 0.5, "osc_freeze_threshold_end": 0.5,
                                "osc_dampen": 0.0, "osc_dampen_end": 0.0})
    layer = family.linear(3, 1, bits=3)
    hooks = ModelHooks(layer)
    quant = _int_quant(layer)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[0.9, 0.3, -0.5]]))
    scale = float(layer.quant_weight().scale)  # max|w| / 3: the first entry is the grid's end
    x = torch.ones(1, 3)

    def step(w0: float, w1: float, progress: float = 0.5) -> list[int]:
        with torch.no_grad():
            layer.weight[0, 0] = w0 * scale
            layer.weight[0, 1] = w1 * scale
        hooks("hwq_on_step", progress)
        layer(x)
        hooks("hwq_after_step")
        return quant.tracker.prev_int[0].tolist()

    # entry 1 flips between 1 and 2 every step (events from the third step: frequency 0.3, then 0.51 > 0.5, frozen
    # at the fourth step and from the fifth forward pass on kept at round(EMA of its integers)); entry 0 stays at 3
    flips, frequency = [], []
    for i in range(8):
        flips.append(step(3.0, 1.2 if i % 2 == 0 else 1.8))
        frequency.append(float(quant.tracker.frequency[0, 1]))
    assert [f[1] for f in flips[:5]] == [1.0, 2.0, 1.0, 2.0, 1.0]
    assert len({f[1] for f in flips[5:]}) == 1
    assert frequency[:4] == pytest.approx([0.0, 0.0, 0.3, 0.51])  # above the threshold 0.5 at the fourth step
    assert bool(quant.tracker.frozen[0, 1]) and not bool(quant.tracker.frozen[0, 0])
    assert float(quant.tracker.frequency[0, 0]) == 0.0
    frozen_int = float(quant.tracker.frozen_int[0, 1])
    # From now on its integer never changes, however far its latent weight is pushed; entry 0 still moves.
    for w0, w1 in [(2.0, 3.0), (1.0, -2.0), (0.0, 0.0), (-2.0, 2.6)]:
        ints = step(w0, w1)
        assert ints[1] == frozen_int and ints[0] == w0
        layer.eval()
        assert float(torch.round(layer.quant_weight().int(float_datatype=True)[0, 1])) == frozen_int  # eval too
        layer.train()

    # and under an optimizer: no gradient for it, its latent weight stays at frozen_int * scale, others move
    optimizer = torch.optim.SGD([layer.weight], lr=0.1)  # entry 0 from -2 s to -3 s (s = 0.3) in 5 steps
    before = layer.quant_weight().int(float_datatype=True).detach().clone()
    for _ in range(5):
        hooks("hwq_on_step", 0.9)
        optimizer.zero_grad()
        layer(x).sum().backward()
        assert float(layer.weight.grad[0, 1]) == 0.0 and float(layer.weight.grad[0, 0]) != 0.0
        optimizer.step()
        hooks("hwq_after_step")
    after = layer.quant_weight().int(float_datatype=True).detach()
    assert float(after[0, 1]) == frozen_int and not torch.equal(after[0, 0], before[0, 0])


def test_without_dampening_and_freezing_osc_trains_as_uniform():
    """osc with lambda = 0 and threshold 0 only measures: its steps are uniform's, bit for bit."""
    off = {"osc_dampen": 0.0, "osc_dampen_end": 0.0, "osc_freeze_threshold": 0.0, "osc_freeze_threshold_end": 0.0}
    torch.manual_seed(0)
    osc = torch.nn.Sequential(get_family("osc", off).linear(6, 4, bits=2), get_family("osc", off).act(2, 4))
    torch.manual_seed(0)
    uni = torch.nn.Sequential(get_family("uniform").linear(6, 4, bits=2), get_family("uniform").act(2, 4))
    x = torch.randn(16, 6)
    for model in (osc, uni):
        hooks, optimizer = ModelHooks(model), torch.optim.Adam(model.parameters(), lr=0.05)
        for i in range(10):
            hooks("hwq_on_step", i / 10)
            optimizer.zero_grad()
            (model(x) - 0.3).square().sum().backward()
            optimizer.step()
            hooks("hwq_after_step")
    assert torch.equal(osc[0].weight, uni[0].weight)
    assert int(_int_quant(osc).tracker.updates) == 10


def test_bn_reestimation_recomputes_running_statistics_from_training_batches():
    from hwq.models.tensor_norm import TensorNorm
    from hwq.train.bn import reestimate_bn

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4), TensorNorm())
    images = torch.randn(300, 3) * 2 + 1
    with torch.no_grad():
        hidden = model[0](images)
    model.eval()
    assert reestimate_bn(model, images, batch_size=100) == 2
    # momentum-1 batch statistics averaged over the three batches (the reference code's estimate)
    batches = hidden.split(100)
    assert torch.allclose(model[1].running_mean, torch.stack([b.mean(0) for b in batches]).mean(0), atol=1e-5)
    assert torch.allclose(model[1].running_var, torch.stack([b.var(0) for b in batches]).mean(0), atol=1e-5)
    assert not model.training and model[1].momentum == 0.1  # mode and momentum restored


def test_digits_tfc_w2a2_with_method_osc_records_its_options_exports_and_builds_bit_exactly(tmp_path):
    from hwq.dataflow import BuildConfig, run_build
    from hwq.export import run_export
    from hwq.train import TrainConfig, run_train

    config = TrainConfig(method="osc", wbits=2, abits=2, epochs=2, lr=0.01, threads=1,
                         model_options={"osc_momentum": 0.1, "osc_freeze_threshold": 0.05,
                                        "osc_freeze_threshold_end": 0.05})
    run = tmp_path / "osc"
    metrics = run_train(config, run, progress=False)
    assert metrics["config"]["method"] == "osc" and metrics["model_spec"]["options"]["osc_momentum"] == 0.1
    assert metrics["model_spec"]["options"]["osc_dampen_end"] == 0.1
    assert metrics["test_acc"] > 0.5
    from hwq.quant.oscillation import oscillation_report
    from hwq.train.loop import load_trained_model

    report = oscillation_report(load_trained_model(run)[0])
    assert report["weights"] > 0 and report["frozen"] > 0  # some weights were frozen, and the run still exports:
    assert run_export(run)["verification"]["passed"]
    manifest = run_build(run, BuildConfig(board="pynq-z2", verify_samples=10), progress=False)
    assert manifest["status"] == "done" and manifest["bit_exact"]["passed"]
