# SPDX-License-Identifier: BSD-3-Clause
"""The two pure pieces of FedAvg: the clients' shards of the training set and the server's weighted average.

>>> [len(s) for s in split_shards(10, 3, seed=0)]
[4, 3, 3]
>>> import torch
>>> average_states([{"w": torch.tensor([0.0])}, {"w": torch.tensor([3.0])}], [1, 2])["w"].tolist()
[2.0]
"""

from __future__ import annotations

import torch

from hwq.errors import ConfigError


def split_shards(n_images: int, clients: int, seed: int) -> list[torch.Tensor]:
    """IID shards: the indices ``0..n_images-1`` in a random order drawn from ``seed``, cut into ``clients``
    contiguous pieces whose sizes differ by at most one (the first ``n_images % clients`` one larger); each shard
    is sorted, so a client's data does not depend on how the permutation was cut."""
    if clients > n_images:
        raise ConfigError(f"--clients: {clients} clients but only {n_images} training images; expected at most "
                          f"{n_images} (every client needs a shard)")
    order = torch.randperm(n_images, generator=torch.Generator().manual_seed(seed))
    base, extra = divmod(n_images, clients)
    shards, start = [], 0
    for client in range(clients):
        size = base + (client < extra)
        shards.append(order[start:start + size].sort().values)
        start += size
    return shards


def average_states(states: list[dict[str, torch.Tensor]], weights: list[int]) -> dict[str, torch.Tensor]:
    """FedAvg's server step: every floating-point entry (weights, scales, batch-norm running mean and variance)
    is ``sum_k n_k * x_k / sum_k n_k`` with ``n_k`` the client's training images, summed in client order in
    float64 and cast back, so the result depends on the clients' results only, not on when they arrived. An
    integer entry is a counter (batch norm's ``num_batches_tracked``, read only with ``momentum=None``, which no
    hwq model uses): it takes the largest client's value."""
    if not states or len(states) != len(weights):
        raise ValueError("average_states: expected one weight per state, and at least one state")
    keys = list(states[0])
    for k, state in enumerate(states[1:], 1):
        if list(state) != keys:
            raise ValueError(f"average_states: client {k}'s entries differ from client 0's")
    total = float(sum(weights))
    averaged = {}
    for key in keys:
        values = [state[key] for state in states]
        if values[0].is_floating_point():
            acc = torch.zeros(values[0].shape, dtype=torch.float64)
            for value, weight in zip(values, weights):
                acc += value.to(torch.float64) * (weight / total)
            averaged[key] = acc.to(values[0].dtype)
        else:
            averaged[key] = torch.stack(values).max(dim=0).values
    return averaged
