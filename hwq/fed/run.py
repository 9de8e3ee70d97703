# SPDX-License-Identifier: BSD-3-Clause
"""The federated stage: ``run_fedavg(train, fed, out_dir)`` trains one global once-QAT model by FedAvg on Ray and
writes an ordinary hwq run directory (``config.yaml``, ``model.pt``, ``metrics.json``, ``train.log``), so
``hwq export RUN --bits b`` exports each member as it does for a centrally trained ``--method once`` run.

Each round, every client (:mod:`hwq.fed.client`) is a Ray task that trains its shard from the global weights;
the server averages the returned weights in client order, weighted by shard size (:mod:`hwq.fed.average`), and
scores the new global model at every bit-width it serves (the run's own and each member, as sliced by
:func:`hwq.quant.layered.layered_view`, with the averaged batch-norm statistics); ``metrics.json``'s
``history`` has one record per round.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any, Callable

import torch

from hwq import manifest as records
from hwq._io import write_json
from hwq.errors import CheckpointError
from hwq.fed.average import average_states, split_shards
from hwq.fed.client import materialized, train_client
from hwq.fed.config import FedConfig
from hwq.train.config import TrainConfig


def run_fedavg(train: TrainConfig, fed: FedConfig, out_dir: str | Path, overwrite: bool = False,
               echo: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Train ``fed.rounds`` rounds of ``fed.clients`` clients and return the run's metrics. ``echo`` (e.g.
    ``print``) gets one line per round; a run already in ``out_dir`` is replaced only with ``overwrite``. A run
    that fails midway leaves no ``metrics.json`` (only ``config.yaml`` and ``train.log``), so it is not a run.

    >>> from hwq.train import TrainConfig
    >>> metrics = run_fedavg(TrainConfig(wbits=4, abits=4), FedConfig(clients=2, rounds=2, members=(2,)),
    ...                      "runs/fed", overwrite=True)                               # doctest: +SKIP
    >>> sorted(metrics["member_acc"])                                                  # doctest: +SKIP
    ['2', '4']
    """
    import ray

    from hwq.methods import check_method_precision
    from hwq.models import model_and_layers
    from hwq.ray_local import ray_session
    from hwq.train.loop import _log, _versions, deterministic, model_spec_for, run_dataset
    from hwq.train.rundir import CONFIG_FILE, METRICS_FILE, MODEL_FILE, holds_run
    from hwq.train.checkpoint import save_checkpoint
    from hwq.train.threads import torch_threads

    out_dir = Path(out_dir)
    config = fed.train_config(train).replace(threads=train.threads or 1)
    config = config.replace(schedule=config.schedule_used())
    if holds_run(out_dir):
        if not overwrite:
            raise CheckpointError(f"{out_dir}: already holds a training run; pass --overwrite to replace it")
        shutil.rmtree(out_dir)
    dataset = run_dataset(config)
    shards = split_shards(len(dataset.train_x), fed.clients, config.seed)
    spec = model_spec_for(config, dataset)
    with torch_threads(config.threads), torch.random.fork_rng(devices=[]), deterministic(True):
        torch.manual_seed(config.seed)
        model, layers = model_and_layers(spec)
        materialized(model, dataset)
    check_method_precision(config.method, spec.precision, layers)
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}

    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / CONFIG_FILE).write_text(config.to_yaml())
    _log(out_dir, f"# fedavg {time.strftime('%Y-%m-%d %H:%M:%S')} {fed.to_dict()} config {config.to_dict()}")
    started, history = time.perf_counter(), []
    with ray_session(fed.address, fed.workers or _cores()):  # a local Ray by default, as hwq sweep starts it
        task = ray.remote(num_cpus=1)(train_client)
        data_ref, config_dict = ray.put(dataset), config.to_dict()
        for round_ in range(fed.rounds):
            round_start = time.perf_counter()
            state_ref = ray.put(state)
            futures = [task.remote(config_dict, state_ref, data_ref, shard, round_, client, fed.local_epochs)
                       for client, shard in enumerate(shards)]
            results = ray.get(futures)  # in client order, whichever finished first
            state = average_states([r[0] for r in results], [r[1] for r in results])
            model.load_state_dict(state)
            record = {"round": round_ + 1, "epoch": (round_ + 1) * fed.local_epochs,
                      **_member_accuracies(model, config, dataset, fed),
                      "client_loss": [r[2]["loss"] for r in results],
                      "client_train_acc": [r[2]["train_acc"] for r in results],
                      "seconds": round(time.perf_counter() - round_start, 3)}
            history.append(record)
            _log(out_dir, f"round {round_ + 1} member_acc {record['member_acc']}")
            if echo:
                echo(f"round {round_ + 1}/{fed.rounds}: " + ", ".join(
                    f"W{b}A{b} {100 * acc:.2f}%" for b, acc in record["member_acc"].items()))

    save_checkpoint(out_dir / MODEL_FILE, state)
    last = history[-1]
    metrics = {
        "stage": "fedavg", "status": "done", "complete": True, "inputs": {},
        "outputs": {"model": MODEL_FILE, "model_sha256": records.sha256_file(out_dir / MODEL_FILE)},
        "steps": [{"name": f"round {h['round']}", "seconds": h["seconds"], "status": "done"} for h in history],
        "tool_versions": _versions(), "versions": _versions(),
        "results": {"test_acc": last["test_acc"], "member_acc": last["member_acc"], "epochs": config.epochs},
        "test_acc": last["test_acc"], "member_acc": last["member_acc"], "train_acc": None, "epochs": config.epochs,
        "dataset": {"name": dataset.name, "n_train": len(dataset.train_x), "n_test": len(dataset.test_x),
                    "image_shape": list(dataset.image_shape)},
        "config": config.to_dict(), "model_spec": {**spec.__dict__, "image_shape": list(spec.image_shape)},
        "fedavg": {**fed.to_dict(), "shard_sizes": [len(s) for s in shards], "split": "iid",
                   "workers_used": None if fed.address else (fed.workers or _cores())},
        "seconds": round(time.perf_counter() - started, 3), "device": "cpu", "threads": config.threads,
        "recipe": {"name": config.recipe.value}, "history": history,
    }
    write_json(out_dir / METRICS_FILE, metrics)
    _log(out_dir, f"# done member_acc {last['member_acc']}")
    return metrics


def _member_accuracies(model, config: TrainConfig, dataset, fed: FedConfig) -> dict[str, Any]:
    """Test accuracy of the global model at its own bits and at each member's (the slices, eval mode)."""
    from hwq.quant.layered import layered_view
    from hwq.train.loop import evaluate
    from hwq.train.threads import torch_threads

    with torch_threads(config.threads):
        accuracy = {str(config.wbits): evaluate(model, dataset.test_x, dataset.test_y)}
        for bits in config.method_options["once_bits"]:
            with layered_view(model, (bits, bits)):
                accuracy[str(bits)] = evaluate(model, dataset.test_x, dataset.test_y)
    ordered = dict(sorted(accuracy.items(), key=lambda kv: int(kv[0])))
    return {"test_acc": accuracy[str(config.wbits)], "member_acc": ordered}


def _cores() -> int:
    from hwq.train.threads import available_cores

    return available_cores()
