# SPDX-License-Identifier: BSD-3-Clause
"""The training stage: ``run_train(config, out_dir)`` trains a model and writes a run directory.

``runs/NAME/`` holds ``config.yaml`` (the settings), ``checkpoint.pt`` (the last finished epoch, for resume),
``model.pt`` (final weights), ``metrics.json`` (accuracy, history, provenance) and ``train.log`` (append-only).
A run in progress keeps its last finished epoch in ``checkpoint.pt`` (Ctrl-C and SIGTERM included), so it can be
resumed; an overwrite trains beside the old run and replaces it only when done (hwq.train.rundir).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import platform
import time
from pathlib import Path
from typing import Any, Iterator

import torch
import torch.nn.functional as F
from torch import nn

import hwq
from hwq import manifest as records
from hwq._io import read_json, write_atomic, write_json
from hwq.data import Dataset, load_dataset
from hwq.errors import CheckpointError, ConfigError, Interrupted
from hwq.models import ModelSpec, build_model, model_and_layers
from hwq.models.modes import evaluating
from hwq.models.scores import model_scores
from hwq.train.augment import AUGMENTED_BY_DEFAULT, random_crop_flip
from hwq.train.checkpoint import check_state_dict, load_checkpoint, save_checkpoint
from hwq.options import BITAT_OPTIONS, option_named
from hwq.train.config import Loss, Schedule, TrainConfig
from hwq.methods import check_method_precision, method_named
from hwq.mixed.search import SearchPlan
from hwq.train.hooks import ModelHooks, call_hooks  # noqa: F401  (call_hooks: part of this module's API)
from hwq.train.objectives import Objective, make_objective
from hwq.train.optimizers import make_optimizer_named
from hwq.train.progress import EpochProgress
from hwq.train.rundir import (
    CHECKPOINT_FILE, CONFIG_FILE, LOG_FILE, METRICS_FILE, MODEL_FILE, StagedReplacement, holds_run, naming_errors,
    remove_downstream,
)
from hwq.train.recipe import TwoStepPlan
from hwq.train.resume import interrupted_detail, resume_checkpoint
from hwq.train.threads import resolve_threads, torch_threads


def model_spec_for(config: TrainConfig, dataset: Dataset) -> ModelSpec:
    """The model a config describes, with the input size of its dataset. A BiTAT run records its design even when
    the config leaves it to the default, so a later change of the default cannot change what the run was; an unset
    ``bitat_aggregate`` records whether the block objective ran (it needs a teacher: on with ``--teacher``)."""
    options = dict(config.model_options)
    if config.quant == "bitat":
        options.setdefault("bitat_design", option_named(BITAT_OPTIONS, "bitat_design").default)
        if options["bitat_design"] == "second" and options.get("bitat_aggregate") is None:
            options["bitat_aggregate"] = config.teacher is not None
    return ModelSpec(
        name=config.model, wbits=config.wbits, abits=config.abits, quant=config.quant,
        image_shape=dataset.image_shape, num_classes=dataset.num_classes, dropout=config.dropout, options=options,
        precision=dict(config.precision),
    )


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device: 'cuda' requested but no CUDA device is available")
    return torch.device(name)


@contextlib.contextmanager
def deterministic(enabled: bool) -> Iterator[None]:
    """Deterministic kernels for the duration of a run, restoring the caller's setting afterwards."""
    before = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(enabled)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before)


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """The method's optimizer (Adam unless the method names another), one group per learning-rate scale (a
    parameter may carry ``hwq_lr_scale``, e.g. thresholds)."""
    name = method_named(config.method).optimizer if config.method else "adam"
    return make_optimizer_named(name, model, config.lr, config.weight_decay, config.method_options)


def make_run_objective(config: TrainConfig) -> Objective:
    """The method's objective (plain unless the method names another), its options read from the config."""
    return make_objective(method_named(config.method).objective if config.method else "plain",
                          config.method_options)


def lr_factor(config: TrainConfig, epoch: int, plan: TwoStepPlan | None = None) -> float:
    """The schedule's multiplier for ``epoch`` (0-based): cosine (to zero) or linear decay (``1 - t / T``) over
    ``config.epochs``, or, with the two-step recipe's ``plan``, over the step ``epoch`` belongs to."""
    first, length = plan.window(epoch) if plan is not None else (0, config.epochs)
    schedule, t = config.schedule_used(), epoch - first
    if schedule is Schedule.CONSTANT or length <= 1:
        return 1.0
    if schedule is Schedule.LINEAR:
        return 1.0 - t / length
    return 0.5 * (1.0 + math.cos(math.pi * t / length))


def loss_fn(kind: Loss, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    if kind is Loss.CROSS_ENTROPY:
        return F.cross_entropy(logits, labels)
    target = 2.0 * F.one_hot(labels, logits.shape[1]).to(logits.dtype) - 1.0
    return torch.clamp(1.0 - target * logits, min=0.0).pow(2).mean()


def distillation_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """``T^2 * KL(softmax(teacher / T) || softmax(student / T))``, averaged over the batch."""
    log_p_student = F.log_softmax(student / temperature, dim=1)
    p_teacher = F.softmax(teacher / temperature, dim=1)
    return F.kl_div(log_p_student, p_teacher, reduction="batchmean") * temperature**2


def attach_teacher(model: nn.Module, teacher: nn.Module | None) -> None:
    """Offer ``teacher`` (or None) to every submodule with ``hwq_attach_teacher(name, teacher)``, e.g. a layer
    whose objective compares its output with the teacher's layer of the same ``name`` (BiTAT's block objective)."""
    for name, module in model.named_modules():
        if hasattr(module, "hwq_attach_teacher"):
            module.hwq_attach_teacher(name, teacher)


@torch.no_grad()
def evaluate(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 1000) -> float:
    """Top-1 accuracy (fraction) of ``model`` in eval mode on ``uint8`` images, by the class rule
    (:mod:`hwq.classes`: the first arg-max of the classifier's integer scores, as the hardware decides)."""
    correct = 0
    with evaluating(model):
        for start in range(0, len(images), batch_size):
            scores = model_scores(model, Dataset.to_float(images[start:start + batch_size]))
            correct += int((torch.from_numpy(scores.classes()).to(labels.device) ==
                            labels[start:start + batch_size]).sum())
    return correct / max(1, len(images))


def _versions() -> dict[str, str]:
    import brevitas

    return {"hwq": hwq.__version__, "torch": torch.__version__, "brevitas": brevitas.__version__,
            "python": platform.python_version()}


def _log(out_dir: Path, line: str) -> None:
    with naming_errors(out_dir / LOG_FILE), (out_dir / LOG_FILE).open("a") as log:
        log.write(line.rstrip("\n") + "\n")


def _write_json(path: Path, obj: Any) -> None:
    with naming_errors(path):
        write_json(path, obj)


def train_inputs(config: TrainConfig) -> dict[str, Path]:
    """The files a training is made from besides its dataset: the teacher's and the initial run's weights (the
    record's ``inputs``; the flow compares them to decide whether the training is up to date)."""
    return {name: Path(run) / MODEL_FILE for name, run in (("teacher", config.teacher),
                                                           ("init_from", config.init_from)) if run}


def _record_failure(out_dir: Path, err: BaseException) -> None:
    """Mark the run's ``metrics.json`` (when a run in progress wrote one) ``interrupted`` or ``failed``."""
    path = out_dir / METRICS_FILE
    metrics = records.read(path)
    if metrics is not None and metrics.get("status") == "running":
        try:
            records.fail(metrics, path, err)
        except OSError:  # a full disk: the checkpoint and the last epoch's metrics are what counts
            pass


# --- the stage -------------------------------------------------------------------------------------------------
def run_train(
    config: TrainConfig, out_dir: str | Path, resume: bool = False, overwrite: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Train ``config`` into ``out_dir`` and return the metrics written to ``metrics.json``.

    With ``resume``, training continues from ``out_dir/checkpoint.pt`` up to ``config.epochs`` (only the
    settings in ``RESUMABLE_CHANGES`` may differ from the run's). An existing run is never replaced unless
    ``overwrite`` is set, and then only once the new one has finished training. Ctrl-C or SIGTERM raise
    :class:`~hwq.errors.Interrupted` saying what was kept and how to resume.

    >>> metrics = run_train(TrainConfig(epochs=1), "runs/example", overwrite=True)  # doctest: +SKIP
    >>> 0.0 <= metrics["test_acc"] <= 1.0                                          # doctest: +SKIP
    True
    """
    out_dir = Path(out_dir)
    config = config.replace(schedule=config.schedule_used())  # config.yaml records the schedule used
    if resume and overwrite:
        raise ConfigError("--resume continues the run in --out, --overwrite replaces it: pass one of them")
    if resume:
        checkpoint = resume_checkpoint(config, out_dir)
        return _train_in_place(config, out_dir, checkpoint, progress)
    if holds_run(out_dir):
        if not overwrite:
            raise CheckpointError(
                f"{out_dir}: already holds a training run; pass --resume to continue it or --overwrite to replace it"
            )
        return _train_replacing(config, out_dir, progress)
    return _train_in_place(config, out_dir, None, progress)


def _train_in_place(config: TrainConfig, out_dir: Path, checkpoint: dict | None, progress: bool) -> dict[str, Any]:
    """A new run into a folder without one, or a resumed run: every finished epoch is kept in place."""
    try:
        return _train(config, out_dir, checkpoint, progress, "resume" if checkpoint else "start")
    except KeyboardInterrupt as err:
        _record_failure(out_dir, err)
        detail = interrupted_detail(out_dir, config.epochs, f"resume with: hwq train --out {out_dir} --resume")
        raise Interrupted.wrap(err, detail) from None
    except Exception as err:
        _record_failure(out_dir, err)
        raise


def _train_replacing(config: TrainConfig, out_dir: Path, progress: bool) -> dict[str, Any]:
    """An overwrite: train beside the old run, which is replaced only when the new one has finished."""
    staged = StagedReplacement(out_dir)
    try:
        with staged as staging:
            metrics = _train(config, staging, None, progress, "overwrite")
        return metrics
    except KeyboardInterrupt as err:
        if staged.replaced:  # the signal arrived during the swap and was held until it was done
            raise Interrupted.wrap(err, f"training had finished; {out_dir} holds the new run") from None
        raise Interrupted.wrap(err, f"the overwrite was discarded; {out_dir} still holds the previous run") from None


# --- training --------------------------------------------------------------------------------------------------
@dataclasses.dataclass
class _Run:
    """What one training run works on; the loop changes the model, the optimizer and the history."""

    config: TrainConfig
    device: torch.device
    dataset: Dataset
    spec: ModelSpec
    model: nn.Module
    optimizer: torch.optim.Optimizer
    teacher: nn.Module | None
    history: list[dict]
    start_epoch: int
    #: The record's ``inputs`` (:func:`train_inputs`, hashed once per run).
    inputs: dict = dataclasses.field(default_factory=dict)
    #: The model's hooks, found once (:mod:`hwq.train.hooks`).
    hooks: ModelHooks | None = None
    #: The two-step recipe's plan (None for the plain recipe).
    plan: TwoStepPlan | None = None
    #: How a step turns a batch into gradients (:mod:`hwq.train.objectives`); None: the config's method's.
    objective: Objective | None = None
    #: The bit-width search of a method that searches under ``--budget`` (None for the others).
    search: SearchPlan | None = None

    def __post_init__(self) -> None:
        if self.objective is None:
            self.objective = make_run_objective(self.config)
        self.objective.attach(self.model, self.config)


def _train(
    config: TrainConfig, out_dir: Path, checkpoint: dict | None, progress: bool, mode: str,
) -> dict[str, Any]:
    """Train into ``out_dir`` (from ``checkpoint`` when resuming) with the thread count fixed for the run."""
    threads = resolve_threads(config.threads)
    config = config.replace(threads=threads)  # config.yaml and metrics.json record the count used
    device = pick_device(config.device)
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    # The caller's thread count and global random state are restored afterwards: no hidden global changes.
    with torch_threads(threads), torch.random.fork_rng(devices=[]), deterministic(device.type == "cpu"):
        run = _prepare(config, device, checkpoint)
        with naming_errors(out_dir / CONFIG_FILE):
            write_atomic(out_dir / CONFIG_FILE, lambda p: p.write_text(config.to_yaml()))
        _log(out_dir, f"# {mode} {time.strftime('%Y-%m-%d %H:%M:%S')} epochs {run.start_epoch}->{config.epochs} "
                      f"device {device} threads {torch.get_num_threads()} config {config.to_dict()}")
        _fit(run, out_dir, progress, started)
        return _finish(run, out_dir, started)


def run_dataset(config: TrainConfig) -> Dataset:
    """The dataset a run trains and is scored on: ``config.dataset`` with its training and test subsets."""
    dataset = load_dataset(config.dataset, config.data_dir)
    if config.train_subset is not None:
        dataset = dataset.with_train_subset(config.train_subset, config.seed)
    if config.test_subset is not None:
        dataset = dataset.with_test_subset(config.test_subset)
    return dataset


def _prepare(config: TrainConfig, device: torch.device, checkpoint: dict | None) -> _Run:
    """Data, model, optimizer and teacher; a checkpoint's weights, optimizer, random state and history."""
    dataset = run_dataset(config)
    dataset = dataclasses.replace(dataset, train_x=dataset.train_x.to(device), train_y=dataset.train_y.to(device),
                                  test_x=dataset.test_x.to(device), test_y=dataset.test_y.to(device))
    search = SearchPlan.for_run(config)
    if search is not None and checkpoint is not None and "search" in checkpoint:
        # A resumed search continues at the map its last finished epoch trained (config.yaml has the first one).
        config = config.replace(precision=dict(checkpoint["search"]["precision"] or config.precision))
        search.solves = list(checkpoint["search"]["solves"])
    spec = model_spec_for(config, dataset)
    torch.manual_seed(config.seed)
    model, layers = model_and_layers(spec)
    check_method_precision(config.method, spec.precision, layers)
    model = model.to(device)
    if config.init_from and checkpoint is None:
        load_init_weights(model, config.init_from)
    if checkpoint is not None:
        # Before the optimizer is made: Brevitas replaces its scale parameters on load (new Parameter objects),
        # and an optimizer made earlier would keep updating the old ones, so a resumed k-bit run froze its scales.
        model.load_state_dict(checkpoint["model"])
    optimizer = make_optimizer(model, config)
    teacher = load_trained_model(config.teacher)[0].to(device) if config.teacher else None
    attach_teacher(model, teacher)
    start_epoch, history = 0, []
    plan = TwoStepPlan.for_run(config, checkpoint)
    if checkpoint is not None:
        optimizer.load_state_dict(checkpoint["optimizer"])
        torch.set_rng_state(checkpoint["rng"])
        start_epoch = int(checkpoint["epoch"])
        history = list(checkpoint.get("history", []))[:start_epoch]
    inputs = {name: records.file_record(path) for name, path in train_inputs(config).items()}
    return _Run(config, device, dataset, spec, model, optimizer, teacher, history, start_epoch, inputs,
                ModelHooks(model), plan, search=search)


def _fit(run: _Run, out_dir: Path, progress: bool, started: float) -> None:
    """The epochs from ``run.start_epoch`` on; after each, the checkpoint and metrics are written atomically."""
    config = run.config
    steps = math.ceil(len(run.dataset.train_x) / config.batch_size)
    if run.search is not None and run.search.due(run.start_epoch) and not run.search.solved(run.start_epoch):
        _search(run, run.start_epoch, out_dir)  # before the first epoch, or a finished run resumed to more epochs
    with EpochProgress(progress, config.epochs, steps, run.start_epoch) as bar:
        for epoch in range(run.start_epoch, config.epochs):
            record = _train_epoch(run, epoch, bar)
            run.history.append(record)
            bar.epoch_done(record)
            _log(out_dir, f"epoch {epoch + 1} " + " ".join(f"{k} {v}" for k, v in record.items() if k != "epoch"))
            if run.search is not None and run.search.due(epoch + 1):
                _search(run, epoch + 1, out_dir)
            save_checkpoint(out_dir / CHECKPOINT_FILE, {
                "model": run.model.state_dict(), "optimizer": run.optimizer.state_dict(), "epoch": epoch + 1,
                "rng": torch.get_rng_state(), "history": run.history,
                **({"recipe": {**run.plan.record(), "step": run.plan.step_of(epoch)}} if run.plan else {}),
                **({"search": run.search.record()} if run.search else {}),
            })
            _write_json(out_dir / METRICS_FILE, _metrics(run, epoch + 1, time.perf_counter() - started))


def _search(run: _Run, epochs_done: int, out_dir: Path) -> None:
    """Solve the run's bit-width search now and, if the map changes, go on training at the new one."""
    config = run.config
    precision = run.search.choose(run.model, run.spec, dict(config.precision), run.dataset.train_x,
                                  run.dataset.train_y, config.batch_size, config.seed, epochs_done)
    solved = run.search.solves[-1]
    _log(out_dir, f"search after {epochs_done} epochs: {precision} lut {solved['lut']} fps {solved['fps']:.0f} "
                  f"sensitivity {solved['sensitivity']:.4g} ({solved['seconds']} s)")
    if run.search.widths(precision) != run.search.widths(config.precision):
        _switch_precision(run, precision)
    else:  # the same bits named explicitly: recorded as the map, the model as it is
        run.config = config.replace(precision=precision)
        run.spec = model_spec_for(run.config, run.dataset)


def _switch_precision(run: _Run, precision: dict[str, int]) -> None:
    """Rebuild the run's model at ``precision`` with the same latent weights, BatchNorms, activation scales and
    weight ranges, and its optimizer with the Adam moments of every parameter that carries over."""
    config = run.config.replace(precision=precision)
    spec = model_spec_for(config, run.dataset)
    with torch.random.fork_rng(devices=[]):  # building draws an initialisation the copy below replaces
        model, layers = model_and_layers(spec)
    check_method_precision(config.method, spec.precision, layers)
    model = model.to(run.device)
    # A weight scale is stored as its range (max |w|), the step being range / (2^(b-1) - 1), so it carries over to
    # another width; a 1-bit (sign) weight has none, and a layer made 1-bit drops its range.
    keys = model.load_state_dict(run.model.state_dict(), strict=False)
    unexpected = [k for k in keys.unexpected_keys if ".weight_quant." not in k]
    if unexpected:
        raise CheckpointError(f"precision {precision}: '{unexpected[0]}' has no counterpart in the rebuilt model")
    model.train(run.model.training)
    optimizer = make_optimizer(model, config)
    old = dict(run.model.named_parameters())
    for name, param in model.named_parameters():
        if name in old and old[name] in run.optimizer.state and old[name].shape == param.shape:
            optimizer.state[param] = {k: (v.clone() if torch.is_tensor(v) else v)
                                      for k, v in run.optimizer.state[old[name]].items()}
    run.config, run.spec, run.model, run.optimizer, run.hooks = config, spec, model, optimizer, ModelHooks(model)
    run.objective.attach(model, config)
    attach_teacher(model, run.teacher)


def train_step(run: _Run, inputs: torch.Tensor, labels: torch.Tensor,
               progress: float) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimizer step on a batch (``progress``: the training's progress, 0..1, at the step's end); returns the
    loss and the logits. ``scripts/bench_train_step.py`` times exactly this against Brevitas' own loop."""
    config, model, optimizer, hooks = run.config, run.model, run.optimizer, run.hooks
    hooks("hwq_on_step", progress)

    def closure() -> tuple[torch.Tensor, torch.Tensor]:
        logits = model(inputs)
        loss = loss_fn(config.loss, logits, labels)
        if run.teacher is not None:
            with torch.no_grad():
                teacher_logits = run.teacher(inputs)
            soft = distillation_loss(logits, teacher_logits, config.distill_temperature)
            loss = (1.0 - config.distill_weight) * loss + config.distill_weight * soft
        for extra in hooks("hwq_extra_loss"):
            loss = loss + extra
        return loss, logits

    run.objective.on_batch(inputs, labels, progress)
    loss, logits = run.objective.gradients(closure, optimizer)
    optimizer.step()
    hooks.clip_latent_weights()
    hooks("hwq_after_step")
    return loss, logits


def _train_epoch(run: _Run, epoch: int, bar: EpochProgress) -> dict[str, Any]:
    """One pass over the training images; returns the epoch's history record."""
    config, model, optimizer = run.config, run.model, run.optimizer
    train_x, train_y = run.dataset.train_x, run.dataset.train_y
    steps = math.ceil(len(train_x) / config.batch_size)
    augment = config.dataset in AUGMENTED_BY_DEFAULT
    epoch_start = time.perf_counter()
    model.train()
    run.hooks("hwq_on_epoch_start", epoch, config.epochs)
    if run.plan is not None:
        run.plan.start_epoch(model, optimizer, epoch)
    for group in optimizer.param_groups:
        group["lr"] = config.lr * group["lr_scale"] * lr_factor(config, epoch, run.plan)
    # The order of an epoch depends only on (seed, epoch), so a resumed run sees the same batches.
    generator = torch.Generator().manual_seed(config.seed * 100_003 + epoch)
    order = torch.randperm(len(train_x), generator=generator).to(run.device)
    loss_sum, correct = 0.0, 0
    for step in range(steps):
        idx = order[step * config.batch_size:(step + 1) * config.batch_size]
        images = train_x[idx]
        if augment:
            images = random_crop_flip(images, generator)
        progress_at_end = (epoch + (step + 1) / steps) / config.epochs
        loss, logits = train_step(run, Dataset.to_float(images), train_y[idx], progress_at_end)
        loss_sum += float(loss.detach()) * len(idx)
        correct += int((logits.argmax(1) == train_y[idx]).sum())
        bar.step()
    test_acc = evaluate(model, run.dataset.test_x, run.dataset.test_y)
    record = {
        "epoch": epoch + 1, "loss": loss_sum / len(train_x), "train_acc": correct / len(train_x),
        "test_acc": test_acc, "lr": optimizer.param_groups[0]["lr"],
        "seconds": round(time.perf_counter() - epoch_start, 3),
    }
    if run.plan is not None:
        record.update(step=run.plan.step_of(epoch), weight_decay=optimizer.param_groups[0]["weight_decay"])
    return record


def _finish(run: _Run, out_dir: Path, started: float) -> dict[str, Any]:
    """Write ``model.pt`` and the complete ``metrics.json``; later stages' outputs of older weights go."""
    config = run.config
    metrics = _metrics(run, config.epochs, time.perf_counter() - started)
    if not run.history or run.history[-1]["epoch"] != config.epochs:  # a checkpoint without its history
        metrics["test_acc"] = metrics["results"]["test_acc"] = evaluate(run.model, run.dataset.test_x,
                                                                         run.dataset.test_y)
    # A run trained further (resumed after it had finished) replaces weights that later stages were made from;
    # a folder that held no weights keeps whatever it holds.
    removed = remove_downstream(out_dir) if (out_dir / MODEL_FILE).exists() else []
    if run.search is not None:  # the map the model was trained and is built with, as for any --precision run
        with naming_errors(out_dir / CONFIG_FILE):
            write_atomic(out_dir / CONFIG_FILE, lambda p: p.write_text(config.to_yaml()))
    save_checkpoint(out_dir / MODEL_FILE, {k: v.detach().cpu() for k, v in run.model.state_dict().items()})
    metrics["complete"] = True
    metrics["status"] = "done"
    metrics["outputs"] = {"model": MODEL_FILE, "model_sha256": records.sha256_file(out_dir / MODEL_FILE),
                          "checkpoint": CHECKPOINT_FILE}
    _write_json(out_dir / METRICS_FILE, metrics)
    _log(out_dir, f"# done test_acc {metrics['test_acc']:.4f}"
                  + (f"; removed {', '.join(removed)} (made from the previous weights)" if removed else ""))
    return metrics


def _metrics(run: _Run, epochs: int, seconds: float) -> dict[str, Any]:
    """``metrics.json``: the record of :mod:`hwq.manifest` (``running`` until the training finishes; one step per
    epoch) with the training's own fields."""
    last = run.history[-1] if run.history else {}
    dataset, spec = run.dataset, run.spec
    return {
        "stage": "train",
        "status": "running",
        "inputs": run.inputs,
        "outputs": {},
        "steps": [{"name": f"epoch {h['epoch']}", "seconds": h.get("seconds"), "status": "done"}
                  for h in run.history],
        "tool_versions": _versions(),
        "results": {"test_acc": last.get("test_acc"), "train_acc": last.get("train_acc"), "epochs": epochs},
        "test_acc": last.get("test_acc"),
        "train_acc": last.get("train_acc"),
        "epochs": epochs,
        "complete": False,
        "dataset": {"name": dataset.name, "n_train": len(dataset.train_x), "n_test": len(dataset.test_x),
                    "image_shape": list(dataset.image_shape)},
        "config": run.config.to_dict(),
        "model_spec": {**spec.__dict__, "image_shape": list(spec.image_shape)},
        "seconds": round(seconds, 3),
        "device": str(run.device),
        # Read back from torch inside the run: the count the bits were computed with.
        "threads": torch.get_num_threads(),
        "versions": _versions(),
        "recipe": run.plan.record() if run.plan else {"name": run.config.recipe.value},
        **({"search": run.search.record()} if run.search else {}),
        "history": run.history,
    }


def load_init_weights(model: nn.Module, run_dir: str | Path) -> int:
    """Copy ``run_dir/model.pt`` entries whose names and shapes match into ``model``; returns how many.

    A full-precision run and its binary counterpart share parameter names (``features.2.weight``), so this starts
    quantization-aware training from trained weights. Nothing matching is an error, not a silent random start.
    """
    path = Path(run_dir) / MODEL_FILE
    state = check_state_dict(load_checkpoint(path), path)
    own = model.state_dict()
    matching = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if not matching:
        raise CheckpointError(f"{path}: no weights match the model's parameter names and shapes (init_from)")
    model.load_state_dict(matching, strict=False)
    return len(matching)


def load_trained_model(
    run_dir: str | Path, weights: str = MODEL_FILE,
) -> tuple[nn.Module, TrainConfig, ModelSpec]:
    """Rebuild a run's model from ``metrics.json`` and load its weights into it (eval mode, CPU).

    ``weights`` is ``model.pt`` (the finished training) or ``checkpoint.pt`` (its last finished epoch).
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CheckpointError(f"{run_dir}: run directory not found")
    config, spec = run_description(run_dir)
    model = build_model(spec)
    path = run_dir / weights
    state = load_checkpoint(path, required=("model",) if weights == CHECKPOINT_FILE else ())
    state = check_state_dict(state["model"] if weights == CHECKPOINT_FILE else state, path)
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        reason = str(err).strip().splitlines()[0]
        raise CheckpointError(f"{path}: weights do not fit model '{spec.name}' ({reason})") from None
    model.eval()
    return model, config, spec


#: The design of a BiTAT run whose record names none: runs trained before 2026-12-02 had only the first.
BITAT_DESIGN_UNRECORDED = "first"


def run_description(run_dir: Path) -> tuple[TrainConfig, ModelSpec]:
    """The config and model spec ``metrics.json`` records; a damaged file is a CheckpointError naming it."""
    path = run_dir / METRICS_FILE
    metrics = read_json(path, "metrics file (is this a finished hwq training run?)")
    try:
        config = TrainConfig.from_dict(metrics["config"], source=str(path))
        raw = dict(metrics["model_spec"])
        raw["image_shape"] = tuple(raw["image_shape"])
        if raw.get("quant") == "bitat":  # recorded before the second design existed
            raw["options"] = {"bitat_design": BITAT_DESIGN_UNRECORDED, **(raw.get("options") or {})}
        return config, ModelSpec(**raw)
    except (KeyError, TypeError, ValueError):
        raise CheckpointError(f"{path}: lacks a readable 'config' or 'model_spec'") from None
