# SPDX-License-Identifier: BSD-3-Clause
"""The cost model's ground truth: FINN's estimate of a built model, from hwq's own FINN build.

:func:`finn_reference` exports an untrained model (its BatchNorm statistics drawn at random, so that the thresholds
differ from layer to layer as a trained model's do) and runs hwq's build up to its ``estimate`` step, whose
per-layer figures equal FINN's builder's. The gate's images are random pixels (no dataset is read). A few seconds
for a TFC, about half a minute for a CNV: this is what one cost query would take without the cost model.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from hwq.catalog import DATASET_SHAPES


def _random_bn_statistics(model, generator) -> None:
    """Random running statistics for an untrained model's BatchNorms (tests/conftest.py's, seeded)."""
    import torch

    for module in model.modules():
        if isinstance(module, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
            module.running_mean.copy_(torch.empty_like(module.running_mean).uniform_(-3.3, 3.3, generator=generator))
            module.running_var.copy_(torch.empty_like(module.running_var).uniform_(0.5, 2.0, generator=generator))


def export_untrained(work: str | Path, model: str, dataset: str, wbits: int, abits: int,
                     precision: Mapping[str, int] | None = None, seed: int = 0) -> Path:
    """``work`` as a run folder hwq can build: an untrained ``model`` (random BatchNorm statistics) exported to
    ``model.onnx``, ``metrics.json`` naming the dataset and ``images.npz``, two random images for the gates."""
    import torch

    from hwq._io import write_json
    from hwq.export import export_qonnx_model
    from hwq.models import ModelSpec, model_and_layers

    work = Path(work)
    work.mkdir(parents=True, exist_ok=True)
    shape, classes = DATASET_SHAPES[dataset]
    torch.manual_seed(seed)
    net, _ = model_and_layers(ModelSpec(model, wbits, abits, image_shape=shape, num_classes=classes,
                                        precision=dict(precision or {})))
    net.eval()
    _random_bn_statistics(net, torch.Generator().manual_seed(seed))
    export_qonnx_model(net, work / "model.onnx")
    write_json(work / "metrics.json", {"config": {"dataset": dataset}})
    images = np.random.default_rng(seed).integers(0, 256, (2, *shape), dtype=np.uint8)
    np.savez(work / "images.npz", images=images)
    return work


def finn_reference(work: str | Path, model: str, dataset: str, wbits: int, abits: int,
                   precision: Mapping[str, int] | None = None, board: str = "pynq-z2",
                   target_fps: float | None = None, seed: int = 0) -> dict[str, Any]:
    """hwq's FINN build of an untrained ``model`` into ``work`` up to its estimate step: the manifest's
    ``estimates`` (per layer and total), with ``seconds`` (the export and the build)."""
    from hwq.dataflow import BuildConfig, run_build

    started = time.perf_counter()
    work = export_untrained(work, model, dataset, wbits, abits, precision, seed)
    config = BuildConfig(board=board, target_fps=target_fps, verify_samples=2, force=True,
                         calibration=str(work / "images.npz"))
    manifest = run_build(work, config, progress=False, stop_step="estimate")
    if manifest["status"] != "stopped":
        raise RuntimeError(f"{work}: the FINN build failed: {manifest.get('error')}")
    return {**manifest["estimates"], "seconds": time.perf_counter() - started}
