# SPDX-License-Identifier: BSD-3-Clause
"""The training stage: ``run_train(config, out_dir)`` trains a model and writes a run directory.

``runs/NAME/`` holds ``config.yaml`` (the settings), ``checkpoint.pt`` (the last finished epoch, for resume),
``model.pt`` (final weights), ``metrics.json`` (accuracy, history, provenance) and ``train.log`` (append-only).
"""

from __future__ import annotations

import contextlib
import math
import platform
import time
from pathlib import Path
from typing import Any, Iterator

import torch
import torch.nn.functional as F
from torch import nn

import hwq
from hwq._io import read_json, write_atomic, write_json
from hwq.data import Dataset, load_dataset
from hwq.errors import CheckpointError, ConfigError
from hwq.models import ModelSpec, build_model
from hwq.models.scores import model_scores
from hwq.quant import clip_latent_weights
from hwq.train.augment import AUGMENTED_BY_DEFAULT, random_crop_flip
from hwq.train.checkpoint import load_checkpoint, save_checkpoint
from hwq.train.config import Loss, Schedule, TrainConfig

CONFIG_FILE, CHECKPOINT_FILE, MODEL_FILE, METRICS_FILE, LOG_FILE = (
    "config.yaml", "checkpoint.pt", "model.pt", "metrics.json", "train.log",
)


def model_spec_for(config: TrainConfig, dataset: Dataset) -> ModelSpec:
    """The model a config describes, with the input size of its dataset."""
    return ModelSpec(
        name=config.model, wbits=config.wbits, abits=config.abits, quant=config.quant,
        image_shape=dataset.image_shape, num_classes=dataset.num_classes, dropout=config.dropout,
        options=dict(config.model_options),
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
    """Adam, one group per learning-rate scale (a parameter may carry ``hwq_lr_scale``, e.g. thresholds)."""
    groups: dict[float, list[nn.Parameter]] = {}
    for param in model.parameters():
        if param.requires_grad:
            groups.setdefault(float(getattr(param, "hwq_lr_scale", 1.0)), []).append(param)
    return torch.optim.Adam(
        [{"params": ps, "lr_scale": scale, "lr": config.lr * scale} for scale, ps in sorted(groups.items())],
        lr=config.lr, weight_decay=config.weight_decay,
    )


def lr_factor(config: TrainConfig, epoch: int) -> float:
    """The schedule's multiplier for ``epoch`` (0-based): cosine decay to zero over ``config.epochs``."""
    if config.schedule is Schedule.CONSTANT or config.epochs <= 1:
        return 1.0
    return 0.5 * (1.0 + math.cos(math.pi * epoch / config.epochs))


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


def call_hooks(model: nn.Module, hook: str, *args: Any) -> list[Any]:
    """Call ``hook(*args)`` on every submodule that defines it (the model itself included).

    Two hooks let quantizer families shape training without a loop of their own:
    ``hwq_on_epoch_start(epoch, epochs)`` (e.g. a progressive schedule) and
    ``hwq_extra_loss() -> Tensor`` (e.g. a regulariser), added to the loss of every step, and
    ``hwq_after_step()`` (e.g. a projection of the latent weights), after every optimizer step.
    """
    return [getattr(module, hook)(*args) for module in model.modules() if hasattr(module, hook)]


@torch.no_grad()
def evaluate(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 1000) -> float:
    """Top-1 accuracy (fraction) of ``model`` in eval mode on ``uint8`` images, by the class rule
    (:mod:`hwq.classes`: the first arg-max of the classifier's integer scores, as the hardware decides)."""
    was_training = model.training
    model.eval()
    correct = 0
    for start in range(0, len(images), batch_size):
        scores = model_scores(model, Dataset.to_float(images[start:start + batch_size]))
        correct += int((torch.from_numpy(scores.classes()).to(labels.device) ==
                        labels[start:start + batch_size]).sum())
    model.train(was_training)
    return correct / max(1, len(images))


def _versions() -> dict[str, str]:
    import brevitas

    return {"hwq": hwq.__version__, "torch": torch.__version__, "brevitas": brevitas.__version__,
            "python": platform.python_version()}


def _log(out_dir: Path, line: str) -> None:
    with (out_dir / LOG_FILE).open("a") as log:
        log.write(line.rstrip("\n") + "\n")


def _progress(enabled: bool):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
        TextColumn("{task.fields[status]}"), disable=not enabled, transient=False,
    )


def run_train(
    config: TrainConfig, out_dir: str | Path, resume: bool = False, overwrite: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Train ``config`` into ``out_dir`` and return the metrics written to ``metrics.json``.

    With ``resume``, training continues from ``out_dir/checkpoint.pt`` up to ``config.epochs``.
    An existing run is never replaced unless ``overwrite`` is set.

    >>> metrics = run_train(TrainConfig(epochs=1), "runs/example", overwrite=True)  # doctest: +SKIP
    >>> 0.0 <= metrics["test_acc"] <= 1.0                                          # doctest: +SKIP
    True
    """
    out_dir = Path(out_dir)
    has_run = (out_dir / CHECKPOINT_FILE).exists() or (out_dir / METRICS_FILE).exists()
    if has_run and not (resume or overwrite):
        raise CheckpointError(
            f"{out_dir}: already holds a training run; pass --resume to continue it or --overwrite to replace it"
        )
    if resume and not (out_dir / CHECKPOINT_FILE).exists():
        raise CheckpointError(f"{out_dir / CHECKPOINT_FILE}: checkpoint not found, nothing to resume")
    if overwrite and not resume:
        for name in (CHECKPOINT_FILE, MODEL_FILE, METRICS_FILE):
            (out_dir / name).unlink(missing_ok=True)
    out_dir.mkdir(parents=True, exist_ok=True)

    device = pick_device(config.device)
    dataset = load_dataset(config.dataset, config.data_dir)
    if config.train_subset is not None:
        dataset = dataset.with_train_subset(config.train_subset, config.seed)
    spec = model_spec_for(config, dataset)
    torch.manual_seed(config.seed)
    model = build_model(spec).to(device)
    if config.init_from and not resume:
        load_init_weights(model, config.init_from)
    optimizer = make_optimizer(model, config)
    teacher = None
    if config.teacher:
        teacher = load_trained_model(config.teacher)[0].to(device)
    start_epoch, history = 0, []
    if resume:
        state = load_checkpoint(out_dir / CHECKPOINT_FILE, required=("model", "optimizer", "epoch", "rng"))
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["rng"])
        start_epoch = int(state["epoch"])
        history = list(state.get("history", []))[:start_epoch]
    write_atomic(out_dir / CONFIG_FILE, lambda p: p.write_text(config.to_yaml()))
    _log(out_dir, f"# {'resume' if resume else 'start'} {time.strftime('%Y-%m-%d %H:%M:%S')} "
                  f"epochs {start_epoch}->{config.epochs} device {device} config {config.to_dict()}")

    augment = config.dataset in AUGMENTED_BY_DEFAULT
    train_x, train_y = dataset.train_x.to(device), dataset.train_y.to(device)
    test_x, test_y = dataset.test_x.to(device), dataset.test_y.to(device)
    steps = math.ceil(len(train_x) / config.batch_size)
    started = time.perf_counter()
    with deterministic(device.type == "cpu"), _progress(progress) as bar:
        task = bar.add_task("train", total=(config.epochs - start_epoch) * steps, status="")
        for epoch in range(start_epoch, config.epochs):
            epoch_start = time.perf_counter()
            model.train()
            call_hooks(model, "hwq_on_epoch_start", epoch, config.epochs)
            for group in optimizer.param_groups:
                group["lr"] = config.lr * group["lr_scale"] * lr_factor(config, epoch)
            # The order of an epoch depends only on (seed, epoch), so a resumed run sees the same batches.
            generator = torch.Generator().manual_seed(config.seed * 100_003 + epoch)
            order = torch.randperm(len(train_x), generator=generator).to(device)
            loss_sum, correct = 0.0, 0
            for step in range(steps):
                idx = order[step * config.batch_size:(step + 1) * config.batch_size]
                images = train_x[idx]
                if augment:
                    images = random_crop_flip(images, generator)
                inputs = Dataset.to_float(images)
                logits = model(inputs)
                loss = loss_fn(config.loss, logits, train_y[idx])
                if teacher is not None:
                    with torch.no_grad():
                        teacher_logits = teacher(inputs)
                    soft = distillation_loss(logits, teacher_logits, config.distill_temperature)
                    loss = (1.0 - config.distill_weight) * loss + config.distill_weight * soft
                for extra in call_hooks(model, "hwq_extra_loss"):
                    loss = loss + extra
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                clip_latent_weights(model)
                call_hooks(model, "hwq_after_step")
                loss_sum += float(loss.detach()) * len(idx)
                correct += int((logits.argmax(1) == train_y[idx]).sum())
                bar.update(task, advance=1)
            test_acc = evaluate(model, test_x, test_y)
            record = {
                "epoch": epoch + 1, "loss": loss_sum / len(train_x), "train_acc": correct / len(train_x),
                "test_acc": test_acc, "lr": optimizer.param_groups[0]["lr"],
                "seconds": round(time.perf_counter() - epoch_start, 3),
            }
            history.append(record)
            bar.update(task, status=f"epoch {epoch + 1}/{config.epochs} loss {record['loss']:.4f} "
                                    f"test {100 * test_acc:.2f}%")
            _log(out_dir, f"epoch {epoch + 1} " + " ".join(f"{k} {v}" for k, v in record.items() if k != "epoch"))
            save_checkpoint(out_dir / CHECKPOINT_FILE, {
                "model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch + 1,
                "rng": torch.get_rng_state(), "history": history,
            })
            metrics = _metrics(config, spec, dataset, history, epoch + 1, time.perf_counter() - started, device)
            write_json(out_dir / METRICS_FILE, metrics)

    if not history or history[-1]["epoch"] != config.epochs:  # zero epochs, or resumed at the end
        metrics = _metrics(config, spec, dataset, history, config.epochs, time.perf_counter() - started, device)
        metrics["test_acc"] = evaluate(model, test_x, test_y)
    model_state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    save_checkpoint(out_dir / MODEL_FILE, model_state)
    metrics["complete"] = True
    write_json(out_dir / METRICS_FILE, metrics)
    _log(out_dir, f"# done test_acc {metrics['test_acc']:.4f}")
    return metrics


def _metrics(
    config: TrainConfig, spec: ModelSpec, dataset: Dataset, history: list[dict], epochs: int, seconds: float,
    device: torch.device,
) -> dict[str, Any]:
    last = history[-1] if history else {}
    return {
        "stage": "train",
        "test_acc": last.get("test_acc"),
        "train_acc": last.get("train_acc"),
        "epochs": epochs,
        "complete": False,
        "dataset": {"name": dataset.name, "n_train": len(dataset.train_x), "n_test": len(dataset.test_x),
                    "image_shape": list(dataset.image_shape)},
        "config": config.to_dict(),
        "model_spec": {**spec.__dict__, "image_shape": list(spec.image_shape)},
        "seconds": round(seconds, 3),
        "device": str(device),
        "versions": _versions(),
        "history": history,
    }


def load_init_weights(model: nn.Module, run_dir: str | Path) -> int:
    """Copy ``run_dir/model.pt`` entries whose names and shapes match into ``model``; returns how many.

    A full-precision run and its binary counterpart share parameter names (``features.2.weight``), so this starts
    quantization-aware training from trained weights. Nothing matching is an error, not a silent random start.
    """
    path = Path(run_dir) / MODEL_FILE
    state = load_checkpoint(path)
    own = model.state_dict()
    matching = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if not matching:
        raise CheckpointError(f"{path}: no weights match the model's parameter names and shapes (init_from)")
    model.load_state_dict(matching, strict=False)
    return len(matching)


def load_trained_model(run_dir: str | Path) -> tuple[nn.Module, TrainConfig, ModelSpec]:
    """Rebuild a run's model from ``metrics.json`` and load ``model.pt`` into it (eval mode, CPU)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CheckpointError(f"{run_dir}: run directory not found")
    metrics = read_json(run_dir / METRICS_FILE, "metrics file (is this a finished hwq training run?)")
    try:
        config = TrainConfig.from_dict(metrics["config"], source=str(run_dir / METRICS_FILE))
        raw = dict(metrics["model_spec"])
    except (KeyError, TypeError):
        raise CheckpointError(f"{run_dir / METRICS_FILE}: lacks 'config' or 'model_spec'") from None
    raw["image_shape"] = tuple(raw["image_shape"])
    spec = ModelSpec(**raw)
    model = build_model(spec)
    state = load_checkpoint(run_dir / MODEL_FILE)
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise CheckpointError(f"{run_dir / MODEL_FILE}: weights do not fit model '{spec.name}' ({err})") from None
    model.eval()
    return model, config, spec
