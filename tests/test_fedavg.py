# SPDX-License-Identifier: BSD-3-Clause
"""Quantization-robust FedAvg (hwq fedavg): shards, the server's average, the clients' determinism, and a 2-client
run on a local Ray that is the same on 1 and 2 workers and exports its W2A2 and W4A4 members bit-exactly."""

from __future__ import annotations

import json

import pytest
import torch

from hwq.errors import ConfigError
from hwq.fed import FedConfig, run_fedavg
from hwq.fed.average import average_states, split_shards
from hwq.train import TrainConfig

TRAIN = TrainConfig(model="tfc", dataset="digits", wbits=4, abits=4, threads=1)


def test_shards_are_a_seeded_partition_of_near_equal_sizes():
    shards = split_shards(1437, 4, seed=3)
    assert [len(s) for s in shards] == [360, 359, 359, 359]
    joined = torch.cat(shards)
    assert torch.equal(joined.sort().values, torch.arange(1437))  # every image in exactly one shard
    assert all(torch.equal(s, s.sort().values) for s in shards)
    assert all(torch.equal(a, b) for a, b in zip(shards, split_shards(1437, 4, seed=3)))
    assert not torch.equal(shards[0], split_shards(1437, 4, seed=4)[0])
    assert [len(s) for s in split_shards(5, 5, seed=0)] == [1] * 5
    with pytest.raises(ConfigError, match=r"^--clients: 6 clients but only 5 training images; expected at most 5"):
        split_shards(5, 6, seed=0)


def test_the_average_is_weighted_by_samples_and_counters_take_the_largest():
    a = {"w": torch.tensor([1.0, 2.0]), "bn.running_var": torch.tensor([4.0]),
         "bn.num_batches_tracked": torch.tensor(3)}
    b = {"w": torch.tensor([5.0, -2.0]), "bn.running_var": torch.tensor([8.0]),
         "bn.num_batches_tracked": torch.tensor(7)}
    avg = average_states([a, b], [1, 3])
    assert torch.equal(avg["w"], torch.tensor([4.0, -1.0]))  # (1 * 1 + 3 * 5) / 4, (1 * 2 - 3 * 2) / 4
    assert torch.equal(avg["bn.running_var"], torch.tensor([7.0]))
    assert avg["bn.num_batches_tracked"] == 7 and avg["bn.num_batches_tracked"].dtype == torch.int64
    assert avg["w"].dtype == torch.float32
    assert torch.equal(average_states([a, a], [2, 5])["w"], a["w"])
    with pytest.raises(ValueError, match="client 1's entries differ"):
        average_states([a, {"w": a["w"]}], [1, 1])


def test_bad_federation_settings_are_one_line_errors_naming_the_flag(tmp_path):
    for kwargs, flag in (({"clients": 0}, "--clients"), ({"rounds": 0}, "--rounds"),
                         ({"local_epochs": -1}, "--local-epochs"), ({"workers": 0}, "--workers"),
                         ({"members": ()}, "--members"), ({"sample": "some"}, "--sample")):
        with pytest.raises(ConfigError, match=f"^{flag}: "):
            FedConfig(**kwargs)
    for members in ((5,), (1,), (4,)):  # beyond the run's bits, not a slice, nothing below the run's own
        with pytest.raises(ConfigError, match=r"^--members: .*W4A4|^--members: expected at least one bit-width"):
            FedConfig(members=members).train_config(TRAIN)
    with pytest.raises(ConfigError, match="^--method: a federated run trains with --method once"):
        FedConfig().train_config(TRAIN.replace(method="lsq"))
    with pytest.raises(ConfigError, match=r"^--clients: 2000 clients but only 1437 training images"):
        run_fedavg(TRAIN, FedConfig(clients=2000), tmp_path / "run")
    assert not (tmp_path / "run").exists()
    clients = FedConfig(members=(2, 3, 4), sample="all").train_config(TRAIN)
    assert clients.method == "once" and clients.method_options == {"once_bits": [2, 3], "once_sample": "all"}


def test_random_sampling_draws_every_bit_width_from_the_seed_and_step():
    from hwq.train.objectives import make_objective

    def draws(seed):
        objective = make_objective("layered", {"once_bits": [2, 3], "once_sample": "random"})
        objective.attach(torch.nn.Linear(1, 1), TRAIN.replace(seed=seed))
        seen = []
        for step in range(1, 41):
            objective.on_batch(None, None, step / 40)
            seen.append(objective.drawn_bits())
        return seen

    assert set(draws(0)) == {None, (2, 2), (3, 3)}  # the run's own (None) and each member
    assert draws(0) == draws(0) and draws(0) != draws(1)


def test_a_client_round_depends_on_its_seed_round_and_client_only():
    from hwq.data import load_dataset
    from hwq.fed.client import client_seed, materialized, train_client
    from hwq.models import build_model
    from hwq.train.loop import model_spec_for

    config = FedConfig(members=(2,), rounds=2).train_config(TRAIN).replace(train_subset=200)
    dataset = load_dataset("digits").with_train_subset(200, 0)
    torch.manual_seed(0)
    state = materialized(build_model(model_spec_for(config, dataset)), dataset).state_dict()
    shard = torch.arange(0, 100)
    first, n, record = train_client(config.to_dict(), state, dataset, shard, 1, 0, 1)
    torch.manual_seed(123)  # the caller's random state is not the client's
    again, _, _ = train_client(config.to_dict(), state, dataset, shard, 1, 0, 1)
    other, _, _ = train_client(config.to_dict(), state, dataset, shard, 1, 1, 1)
    assert n == 100 and 0 <= record["train_acc"] <= 1
    assert list(first) == list(state)
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert not torch.equal(first["features.2.weight"], other["features.2.weight"])
    assert not torch.equal(first["features.2.weight"], state["features.2.weight"])
    assert len({client_seed(0, r, c) for r in range(50) for c in range(50)}) == 2500


@pytest.fixture(scope="module")
def fed_runs(tmp_path_factory):
    """The same 2-client, 2-round digits TFC W4A4 run (members 2 and 4) on 2 Ray workers (through the CLI) and
    on 1."""
    from hwq.cli import main

    root = tmp_path_factory.mktemp("fed")
    two, one = root / "two", root / "one"
    assert main(["fedavg", "--model", "tfc", "--dataset", "digits", "--wbits", "4", "--abits", "4",
                 "--members", "2,4", "--clients", "2", "--rounds", "2", "--workers", "2", "--threads", "1",
                 "--out", str(two)]) == 0
    run_fedavg(TRAIN, FedConfig(clients=2, rounds=2, members=(2, 4), workers=1), one)
    return two, one


@pytest.mark.slow
def test_the_federated_model_does_not_depend_on_the_worker_count(fed_runs):
    two, one = fed_runs
    a, b = torch.load(two / "model.pt"), torch.load(one / "model.pt")
    assert list(a) == list(b) and all(torch.equal(a[k], b[k]) for k in a)
    metrics = json.loads((two / "metrics.json").read_text())
    assert [h["round"] for h in metrics["history"]] == [1, 2]
    assert set(metrics["member_acc"]) == {"2", "4"} and metrics["member_acc"]["4"] > 0.6
    assert metrics["fedavg"]["shard_sizes"] == [719, 718] and metrics["config"]["method"] == "once"
    other = json.loads((one / "metrics.json").read_text())["history"]
    assert [h["member_acc"] for h in metrics["history"]] == [h["member_acc"] for h in other]
    assert [h["client_loss"] for h in metrics["history"]] == [h["client_loss"] for h in other]


@pytest.mark.slow
def test_the_federated_run_exports_its_w2_and_w4_members_bit_exactly(fed_runs):
    from hwq.cli import main

    run = fed_runs[0]
    for bits, where in ((2, run / "member-w2a2"), (4, run)):
        assert main(["export", str(run), "--bits", str(bits)]) == 0
        report = json.loads((where / "export.json").read_text())
        assert report["verification"]["passed"] and report["verification"]["argmax_match"] == 1.0, bits
    member = json.loads((run / "member-w2a2" / "metrics.json").read_text())
    assert member["member_of"]["member_bits"] == [2, 2] and member["model_spec"]["wbits"] == 2
    assert member["test_acc"] > 0.5
