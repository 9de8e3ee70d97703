# SPDX-License-Identifier: BSD-3-Clause
"""The post-training quantization stage: ``run_quantize(run_fp, config, out_dir)`` turns a float run into a run
directory of the same architecture built with the ``uniform`` family, which ``hwq export`` and ``hwq build`` take as
they take a trained one.

Steps: (1) the uniform model is built at the requested bits and the float weights are copied in (every float
parameter has a quantized counterpart of the same name); (2) in the network's order, each weight layer's integers
are chosen (Attention Round or round-to-nearest) against the float layer's output, with the layers before it
already quantized, and each activation quantizer's scale is calibrated against the float activation; (3) the
integers are written as latent weights ``scale * q`` with the Brevitas scale set to ``scale``, so the quantizer
reproduces exactly those integers; (4) the test set is scored and the run written (``model.pt``, ``config.yaml``,
``metrics.json`` with a ``ptq`` record).

>>> metrics = run_quantize("runs/tfc-float", QuantizeConfig(wbits=4, abits=4), "runs/tfc-ar-w4a4")  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from brevitas.nn import QuantConv2d, QuantIdentity, QuantLinear
from torch import nn

from hwq import manifest as records
from hwq._io import read_json, write_atomic, write_json
from hwq.data import Dataset, load_dataset
from hwq.errors import CheckpointError, ConfigError
from hwq.models import ModelSpec, model_and_layers
from hwq.ptq.attention_round import (
    RoundingProblem, attention_round_integers, mse_weight_scale, nearest_integers,
)
from hwq.ptq.calibrate import calibrate_act_scale, captured, set_act_scale, set_weight_scale
from hwq.ptq.coding_length import allocate_bits, coding_length
from hwq.ptq.config import BitAllocation, Method, QuantizeConfig, check_ptq_bits
from hwq.train.loop import _versions, evaluate, load_trained_model, run_description
from hwq.train.rundir import (
    CHECKPOINT_FILE, CONFIG_FILE, LOG_FILE, METRICS_FILE, MODEL_FILE, holds_run, remove_downstream,
)
from hwq.train.checkpoint import save_checkpoint
from hwq.train.threads import torch_threads

WEIGHT_LAYERS = (QuantLinear, QuantConv2d)


def run_quantize(run_fp: str | Path, config: QuantizeConfig, out_dir: str | Path,
                 overwrite: bool = False) -> dict[str, Any]:
    """Quantize the float run ``run_fp`` after training into ``out_dir``; returns the ``metrics.json`` written."""
    run_fp, out_dir = Path(run_fp), Path(out_dir)
    float_config, float_spec = _float_run(run_fp)
    if out_dir.resolve() == run_fp.resolve():
        raise ConfigError(f"--out {out_dir}: is the float run itself; name a new run directory")
    if holds_run(out_dir) and not overwrite:
        raise CheckpointError(f"{out_dir}: already holds a run; pass --overwrite to replace it")
    started = time.perf_counter()
    with torch_threads(config.threads or 1), torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        float_model, _, _ = load_trained_model(run_fp)
        dataset = load_dataset(float_config.dataset, float_config.data_dir)
        calibration = dataset.with_train_subset(min(config.calibration, len(dataset.train_x)), config.seed)
        images = Dataset.to_float(calibration.train_x)
        precision = dict(config.precision)
        if config.bit_allocation is BitAllocation.LOSSY_CODING:
            precision = _lossy_coding_precision(float_model, config)
        spec = _quantized_spec(float_spec, config, precision)
        model, layers = model_and_layers(spec)
        for layer in layers:
            check_ptq_bits(f"precision.{layer.name}" if layer.name in precision else f"{layer.role[0]}bits",
                           layer.bits)
        _copy_float_weights(model, float_model, run_fp)
        _check_same_padding(model, float_model, run_fp)
        model.eval()
        per_layer = _quantize_layers(model, float_model, images, config)
        test_acc = evaluate(model, dataset.test_x, dataset.test_y)
        float_acc = evaluate(float_model, dataset.test_x, dataset.test_y)
    seconds = time.perf_counter() - started
    train_config = float_config.replace(
        quant="uniform", method=None, wbits=config.wbits, abits=config.abits, precision=precision,
        model_options=spec.options, threads=config.threads or 1)
    record = {
        "method": config.method.value, "source_run": str(run_fp),
        "source_model_sha256": records.sha256_file(run_fp / MODEL_FILE), "source_test_acc": float_acc,
        "calibration_images": len(images), "layers": per_layer, "seconds": round(seconds, 3),
        "config": config.to_dict(),
    }
    return _write_run(out_dir, train_config, spec, dataset, model, test_acc, record)


# --- inputs ----------------------------------------------------------------------------------------------------
def _float_run(run_fp: Path):
    if not run_fp.is_dir():
        raise CheckpointError(f"{run_fp}: run directory not found")
    metrics = read_json(run_fp / METRICS_FILE, "metrics file (is this a finished hwq training run?)")
    if not isinstance(metrics, dict) or metrics.get("complete") is not True:
        raise CheckpointError(f"{run_fp / METRICS_FILE}: the training did not finish; quantize a finished float run")
    config, spec = run_description(run_fp)
    if spec.quant != "float":
        raise ConfigError(f"{run_fp}: is a '{spec.quant}' run; hwq quantize takes a float run "
                          f"(hwq train --quant float)")
    return config, spec


def _quantized_spec(float_spec: ModelSpec, config: QuantizeConfig, precision: dict) -> ModelSpec:
    """The float model's architecture with the uniform family; a float ReLU becomes the unsigned (ReLU) grid."""
    options = {k: v for k, v in float_spec.options.items() if k != "float_act"}
    options["act_signed"] = float_spec.options.get("float_act", "relu") != "relu"
    return dataclasses.replace(float_spec, quant="uniform", wbits=config.wbits, abits=config.abits,
                               options=options, precision=dict(precision))


def _copy_float_weights(model: nn.Module, float_model: nn.Module, run_fp: Path) -> None:
    """Every float parameter and buffer into the quantized model under the same name (the quantized model adds only
    its quantizers' scales); a float entry without a counterpart is an error naming it."""
    own = model.state_dict()
    state = float_model.state_dict()
    missing = [k for k, v in state.items() if k not in own or own[k].shape != v.shape]
    if missing:
        raise CheckpointError(f"{run_fp / MODEL_FILE}: '{missing[0]}' has no counterpart in the quantized model")
    model.load_state_dict(state, strict=False)


def _check_same_padding(model: nn.Module, float_model: nn.Module, run_fp: Path) -> None:
    """A constant padding that differs between the float and the quantized model is an error naming it: the float
    weights were trained for the float padding (MobileNet's depthwise convolutions pad with -1 when the float run
    was made with 1-bit ``--abits``, which a multi-bit activation grid does not hold)."""
    float_modules = dict(float_model.named_modules())
    for name, module in model.named_modules():
        if isinstance(module, nn.modules.padding._ConstantPadNd):
            value = float_modules[name].value
            if value != module.value:
                raise ConfigError(
                    f"{run_fp}: the float model pads {name} with {value:g}, the quantized one with {module.value:g}; "
                    f"train the float run with --option pad_value={module.value:g} (or --abits 2 or more)")


def _lossy_coding_precision(float_model: nn.Module, config: QuantizeConfig) -> dict[str, int]:
    weights = {name: m.weight for name, m in float_model.named_modules()
               if isinstance(m, (nn.Linear, nn.Conv2d))}
    return allocate_bits(weights, config.budget_bits, config.coding_eps)


# --- the layers ------------------------------------------------------------------------------------------------
def _quantize_layers(model: nn.Module, float_model: nn.Module, images: torch.Tensor,
                     config: QuantizeConfig) -> list[dict[str, Any]]:
    """Each weight layer and activation quantizer in the network's order, with those before it done."""
    float_modules = dict(float_model.named_modules())
    modules = list(model.named_modules())
    targets_wanted = [name for name, m in modules if isinstance(m, WEIGHT_LAYERS + (QuantIdentity,))]
    with torch.no_grad():
        float_out = captured(float_model, {n: float_modules[n] for n in targets_wanted}, images, "output")
    report = []
    for index, (name, module) in enumerate(modules):
        if isinstance(module, WEIGHT_LAYERS):
            with torch.no_grad():
                inputs = captured(model, {name: module}, images, "input")[name]
            following = [(n, m) for n, m in modules[index + 1:] if not n.startswith(name + ".")]
            report.append(_round_layer(name, module, following, inputs, float_out[name], config))
        elif isinstance(module, QuantIdentity) and not getattr(module, "hwq_input_quant", False):
            with torch.no_grad():
                inputs = captured(model, {name: module}, images, "input")[name]
            bits = int(module.act_quant.bit_width())
            signed = bool(module.act_quant.is_signed)
            scale = calibrate_act_scale(inputs, float_out[name], bits, signed)
            set_act_scale(module, scale)
            with torch.no_grad():
                error = float((module(inputs) - float_out[name]).pow(2).mean())
            report.append({"name": name, "role": "act", "bits": bits, "signed": signed, "scale": scale,
                           "mse": error})
    return report


def _round_layer(name: str, module: nn.Module, following: list, inputs: torch.Tensor, targets: torch.Tensor,
                 config: QuantizeConfig) -> dict[str, Any]:
    bits = int(module.quant_weight().bit_width)
    levels = 2 ** (bits - 1) - 1  # the uniform family's narrow signed grid -levels..levels
    weight = module.weight.detach().clone()
    scale = mse_weight_scale(weight, levels)
    problem = RoundingProblem(
        weight=weight, scale=scale, grid=torch.arange(-levels, levels + 1, dtype=weight.dtype),
        forward=_layer_operation(module), inputs=inputs, targets=targets,
        channel_weight=_normalisation_gain(following, weight.shape[0]),
    )
    nearest = nearest_integers(problem)
    with torch.no_grad():
        nearest_error = float(problem.error(nearest))
    started = time.perf_counter()
    if config.method is Method.ATTENTION_ROUND:
        integers = attention_round_integers(problem, config.iterations, config.lr, config.sigma_start,
                                            config.sigma_end, config.batch_size, config.seed)
    else:
        integers = nearest
    with torch.no_grad():
        error = float(problem.error(integers))
        module.weight.copy_(scale * integers)
    set_weight_scale(module, scale)
    with torch.no_grad():
        got = module.quant_weight()
        if not torch.equal(torch.round(got.value / got.scale), integers):
            raise RuntimeError(f"{name}: the quantizer does not reproduce the chosen integers")
    return {"name": name, "role": "weight", "bits": bits, "scale": scale, "output_mse": error,
            "nearest_output_mse": nearest_error, "changed_from_nearest": int((integers != nearest).sum()),
            "weights": integers.numel(), "coding_length": coding_length(weight),
            "seconds": round(time.perf_counter() - started, 3)}


def _layer_operation(module: nn.Module):
    if isinstance(module, QuantConv2d):
        return lambda x, w: F.conv2d(x, w, None, module.stride, module.padding, module.dilation, module.groups)
    return lambda x, w: F.linear(x, w)


def _normalisation_gain(following: list, channels: int) -> torch.Tensor:
    """``gamma / sqrt(var + eps)`` of the BatchNorm right after the layer (ones when none follows)."""
    if following and isinstance(following[0][1], (nn.BatchNorm1d, nn.BatchNorm2d)):
        bn = following[0][1]
        if bn.num_features == channels:
            gain = bn.running_var.add(bn.eps).rsqrt()
            return (gain * bn.weight if bn.affine else gain).detach().abs()
    return torch.ones(channels)


# --- the run directory -----------------------------------------------------------------------------------------
def _write_run(out_dir: Path, train_config, spec: ModelSpec, dataset: Dataset, model: nn.Module, test_acc: float,
               record: dict[str, Any]) -> dict[str, Any]:
    out_dir.mkdir(parents=True, exist_ok=True)
    # A run replaced (--overwrite): later stages' outputs and a training checkpoint describe other weights.
    remove_downstream(out_dir)
    (out_dir / CHECKPOINT_FILE).unlink(missing_ok=True)
    save_checkpoint(out_dir / MODEL_FILE, {k: v.detach().cpu() for k, v in model.state_dict().items()})
    write_atomic(out_dir / CONFIG_FILE, lambda p: p.write_text(train_config.to_yaml()))
    metrics = {
        "stage": "train", "status": "done", "complete": True,
        "inputs": {"float_model": records.file_record(Path(record["source_run"]) / MODEL_FILE)},
        "outputs": {"model": MODEL_FILE, "model_sha256": records.sha256_file(out_dir / MODEL_FILE)},
        "steps": [{"name": f"quantize {layer['name']}", "seconds": layer.get("seconds"), "status": "done"}
                  for layer in record["layers"]],
        "tool_versions": _versions(), "versions": _versions(),
        "results": {"test_acc": test_acc, "epochs": train_config.epochs},
        "test_acc": test_acc, "train_acc": None, "epochs": train_config.epochs,
        "dataset": {"name": dataset.name, "n_train": len(dataset.train_x), "n_test": len(dataset.test_x),
                    "image_shape": list(dataset.image_shape)},
        "config": train_config.to_dict(),
        "model_spec": {**spec.__dict__, "image_shape": list(spec.image_shape)},
        "seconds": record["seconds"], "device": "cpu", "threads": torch.get_num_threads(),
        "recipe": {"name": "ptq"}, "history": [], "ptq": record,
    }
    write_json(out_dir / METRICS_FILE, metrics)
    with (out_dir / LOG_FILE).open("a") as log:
        log.write(f"# quantize {record['method']} from {record['source_run']} test_acc {test_acc:.4f}\n")
    return metrics
