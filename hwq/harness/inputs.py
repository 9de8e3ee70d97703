# SPDX-License-Identifier: BSD-3-Clause
"""What a measurement takes from a build: its manifest, checked and hashed (:mod:`hwq.build_check`, shared with
the emulated board), and the test set its ``accelerator`` section names.

>>> inputs = check_build("runs/x/build-pynq-z2")                              # doctest: +SKIP
>>> name, images, labels = load_test_set(config, model, samples=10)          # doctest: +SKIP
"""

from __future__ import annotations

from hwq.build_check import GATES, BuildInputs, build_problems, check_build  # noqa: F401  (re-exported)


def load_test_set(config, model, samples: int | None = None):
    """``(dataset name, images, labels)``: the first ``samples`` (else ``config.samples``, else all) test images."""
    from hwq.data import load_dataset

    spec = model.accelerator                     # the test set the build was verified on, as its section names it
    name = spec.dataset
    ds = load_dataset(name, config.data_dir or spec.data_dir)
    samples = samples or config.samples
    n = len(ds.test_y) if samples is None else min(samples, len(ds.test_y))
    return name, ds.test_x[:n].numpy(), ds.test_y[:n].numpy()

