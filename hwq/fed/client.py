# SPDX-License-Identifier: BSD-3-Clause
"""One client's round: start from the global weights, train the local epochs on the shard, return the weights.

A client is hwq's own training epoch (:func:`hwq.train.loop._train_epoch`, the once-QAT ``layered`` objective)
on a dataset that holds only its shard, with a fresh Adam (FedAvg sends weights, not optimizer state) and a seed
of its own, :func:`client_seed` of ``(seed, round, client)``: its batches, dropout masks and drawn bit-widths are
the same whichever worker runs it and whatever ran there before, so the run does not depend on the worker count.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from hwq.data import Dataset
from hwq.train.config import TrainConfig


def client_seed(seed: int, round_: int, client: int) -> int:
    """The seed of ``client`` in ``round_`` (0-based), distinct for every pair and every run seed."""
    return (seed * 1_000_003 + round_ * 10_007 + client) % (2 ** 31)


@torch.no_grad()
def materialized(model: torch.nn.Module, dataset: Dataset) -> torch.nn.Module:
    """``model`` after one eval-mode pass over a few training images: Brevitas creates a weight quantizer's scale
    parameter (from the weights' statistics) at the first forward pass, and a state dict holds it only from then
    on, so the server's and every client's models must have made one to exchange the same entries."""
    model.eval()
    model(Dataset.to_float(dataset.train_x[:2]))
    model.train()
    return model


def train_client(config: dict[str, Any], state: dict[str, torch.Tensor], dataset: Dataset, shard: torch.Tensor,
                 round_: int, client: int, local_epochs: int) -> tuple[dict[str, torch.Tensor], int, dict[str, Any]]:
    """Train ``client``'s ``shard`` of ``dataset`` for ``local_epochs`` from ``state``; returns the new state, the
    shard's size (the client's FedAvg weight) and the last epoch's loss and training accuracy. ``config`` is the
    clients' TrainConfig as a dict (what travels to a Ray task)."""
    from hwq.models import build_model
    from hwq.train.hooks import ModelHooks
    from hwq.train.loop import _Run, _train_epoch, deterministic, make_optimizer, model_spec_for
    from hwq.train.progress import EpochProgress
    from hwq.train.threads import torch_threads

    seed = client_seed(int(config["seed"]), round_, client)
    train = TrainConfig.from_dict(config, source="fedavg client").replace(seed=seed)
    local = dataclasses.replace(dataset, train_x=dataset.train_x[shard], train_y=dataset.train_y[shard],
                                test_x=dataset.test_x[:0], test_y=dataset.test_y[:0])  # the server evaluates
    with torch_threads(train.threads or 1), torch.random.fork_rng(devices=[]), deterministic(True):
        torch.manual_seed(seed)
        spec = model_spec_for(train, local)
        model = materialized(build_model(spec), local)
        model.load_state_dict(state)  # before the optimizer: Brevitas replaces scale parameters on load
        optimizer = make_optimizer(model, train)
        run = _Run(train, torch.device("cpu"), local, spec, model, optimizer, None, [], 0, {}, ModelHooks(model))
        with EpochProgress(False, train.epochs, 1, 0) as bar:
            for epoch in range(round_ * local_epochs, (round_ + 1) * local_epochs):
                record = _train_epoch(run, epoch, bar)
    result = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    return result, len(shard), {"loss": record["loss"], "train_acc": record["train_acc"]}
