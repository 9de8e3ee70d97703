# SPDX-License-Identifier: BSD-3-Clause
"""Oscillations on digits, with and without ``--method osc``'s dampening and freezing, and the effect of batch-norm
re-estimation (docs/methods.md, ``osc``, "Measured").

For each model, it trains ``--method osc`` twice with the same seed: once with dampening and freezing off (it then
trains exactly as ``--method uniform`` and only measures; tests/test_osc.py) and once with the method's settings.
It reports the oscillation statistics of the trained weights (:func:`hwq.quant.oscillation.oscillation_report`) and
the test accuracy before and after :func:`hwq.train.bn.reestimate_bn` on the training images.

    PYTHONPATH=$PWD OMP_NUM_THREADS=1 python scripts/osc_report.py --out /tmp/osc_report
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

OFF = {"osc_dampen": 0.0, "osc_dampen_end": 0.0, "osc_freeze_threshold": 0.0, "osc_freeze_threshold_end": 0.0}


def measure(run: Path) -> dict:
    from hwq.data import Dataset, load_dataset
    from hwq.quant.oscillation import oscillation_report
    from hwq.train.bn import reestimate_bn
    from hwq.train.loop import evaluate, load_trained_model

    model = load_trained_model(run)[0]
    dataset = load_dataset("digits")
    test_x, test_y = dataset.test_x, dataset.test_y
    before = evaluate(model, test_x, test_y)
    report = oscillation_report(model)
    reestimate_bn(model, Dataset.to_float(dataset.train_x), batch_size=100)
    after = evaluate(model, test_x, test_y)
    return {**report, "test_acc": before, "test_acc_bn_reestimated": after}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="folder of the runs and report.json")
    parser.add_argument("--models", default="mobilenet_tiny,tfc")
    parser.add_argument("--bits", type=int, default=3, help="weight and activation bits")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                        help="osc option of the second run (YAML value), e.g. osc_momentum=0.1")
    args = parser.parse_args()

    import yaml

    from hwq.train import TrainConfig, run_train

    settings = {k: yaml.safe_load(v) for k, v in (o.split("=", 1) for o in args.option)}
    out = Path(args.out)
    report = {}
    for model in args.models.split(","):
        for label, options in (("measure only (= uniform)", OFF), ("osc", settings)):
            run = out / f"{model}-w{args.bits}a{args.bits}-{'off' if options is OFF else 'osc'}"
            config = TrainConfig(model=model, method="osc", wbits=args.bits, abits=args.bits, epochs=args.epochs,
                                 seed=args.seed, threads=1, model_options=dict(options))
            run_train(config, run, progress=False, overwrite=True)
            result = measure(run)
            report[f"{model} {label}"] = result
            print(f"{model:<15} {label:<25} " + " ".join(
                f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in result.items()), flush=True)
    (out / "report.json").write_text(json.dumps({"args": vars(args), "report": report}, indent=2))


if __name__ == "__main__":
    main()
