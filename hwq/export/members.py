# SPDX-License-Identifier: BSD-3-Clause
"""``hwq export RUN --bits b``: a lower-precision member of a once-QAT run (``--method once``) as a run of its own.

The member is ``RUN/member-w<b>a<b>/``, a run directory like a trained one (``model.pt``, ``config.yaml``,
``metrics.json``) holding an ordinary ``uniform`` network at ``b`` bits whose integers are the slices of the run's
(:func:`hwq.quant.layered.member_model`): no weight of its own. Its batch-norm statistics are re-estimated on
training images at its own precision (the statistics are not weights: the run's were collected over all the
members' passes). Its ``metrics.json`` records ``member_of`` (the run, its ``model.pt`` SHA-256, the bits) and
its own test accuracy; ``hwq export`` and ``hwq build`` then take it like any run.
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path
from typing import Any

import torch

from hwq import manifest as records
from hwq.errors import ConfigError

#: Training images the member's batch-norm statistics are re-estimated on (10 batches of 100).
BN_IMAGES = 1000


def member_dir(run_dir: str | Path, bits: int) -> Path:
    return Path(run_dir) / f"member-w{bits}a{bits}"


def derive_member_run(run_dir: str | Path, bits: int) -> Path:
    """Write the ``bits``-bit member of a ``--method once`` run; returns its directory (the run's own
    directory for the run's own bits, whose member is the run)."""
    from hwq._io import write_json
    from hwq.data import Dataset, load_dataset
    from hwq.models import build_model
    from hwq.quant.layered import member_model
    from hwq.train.bn import reestimate_bn
    from hwq.train.checkpoint import save_checkpoint
    from hwq.train.loop import evaluate, load_trained_model
    from hwq.train.rundir import CONFIG_FILE, METRICS_FILE, MODEL_FILE

    run_dir = Path(run_dir)
    top, config, spec = load_trained_model(run_dir)
    members = _trained_members(config, run_dir)
    if bits not in members:
        raise ConfigError(f"--bits {bits}: {run_dir} holds W{'/'.join(map(str, members))} (its own bits and "
                          f"method_options.once_bits); expected one of {', '.join(map(str, members))}")
    if bits == config.wbits:  # the widest member is the run itself: nothing to slice
        return run_dir
    out = member_dir(run_dir, bits)
    dataset = load_dataset(config.dataset, config.data_dir)
    member_spec = dataclasses.replace(spec, wbits=bits, abits=bits)
    torch.manual_seed(config.seed)
    images = Dataset.to_float(dataset.train_x[:BN_IMAGES]).reshape(-1, *spec.image_shape)
    member = member_model(top, build_model(member_spec), images[:100])
    reestimate_bn(member, images)
    member.eval()
    accuracy = evaluate(member, dataset.test_x, dataset.test_y)  # uint8 images: evaluate scales them

    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    save_checkpoint(out / MODEL_FILE, {k: v.detach().cpu() for k, v in member.state_dict().items()})
    member_config = config.replace(wbits=bits, abits=bits, method="uniform", method_options={})
    (out / CONFIG_FILE).write_text(member_config.to_yaml())
    metrics = records.read(run_dir / METRICS_FILE) or {}
    metrics.update({
        "config": member_config.to_dict(), "model_spec": {**member_spec.__dict__,
                                                          "image_shape": list(member_spec.image_shape)},
        "test_acc": accuracy, "results": {**metrics.get("results", {}), "test_acc": accuracy},
        "member_of": {"run": str(run_dir), "model_sha256": records.sha256_file(run_dir / MODEL_FILE),
                      "bits": [config.wbits, config.abits], "member_bits": [bits, bits],
                      "bn_reestimated_on": len(images), "run_test_acc": metrics.get("test_acc")},
        "complete": True, "status": "done",
        "outputs": {"model": MODEL_FILE, "model_sha256": records.sha256_file(out / MODEL_FILE)},
        "inputs": {"run_model": records.file_record(run_dir / MODEL_FILE)},
    })
    write_json(out / METRICS_FILE, metrics)
    return out


def _trained_members(config: Any, run_dir: Path) -> list[int]:
    """The bit-widths a once-QAT run trained: its own and its ``once_bits``; any other run is an error."""
    if config.method != "once":
        raise ConfigError(f"--bits: {run_dir} was trained with --method {config.method or config.quant}; only a "
                          "--method once run holds lower bit-widths (docs/mixed_precision.md, once-QAT)")
    from hwq.options import OBJECTIVE_OPTIONS, option_named

    once = option_named(OBJECTIVE_OPTIONS["layered"], "once_bits").read(config.method_options, "method_options")
    return sorted({config.wbits, *map(int, once)})
