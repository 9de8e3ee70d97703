# SPDX-License-Identifier: BSD-3-Clause
"""The ``hwq`` command. Each verb parses its arguments and calls one function of a stage; nothing else."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import warnings
from pathlib import Path
from typing import Iterator

from hwq.errors import HwqError, Interrupted, os_error_message


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a quantized model into a run directory")
    p.add_argument("--config", help="YAML file of training settings, which the flags below override "
                                    "(default: none, so the defaults below; with --resume, the run's config.yaml)")
    # Literal lists and defaults keep `hwq --help` free of the torch import; tests check them against the
    # registries and TrainConfig's defaults.
    p.add_argument("--model", help="tfc, sfc, lfc, cnv, resnet20, mobilenet, mobilenet_tiny, reactnet, reactnet_tiny "
                                    "(default: tfc)")
    p.add_argument("--dataset", help="digits, mnist, cifar10 (default: digits)")
    p.add_argument("--method", help="training method: uniform, n2uq, bitat, lsq, noise, osc, saq, hero, lns-madam, "
                                    "lqnet, dirnet, ssql, adder, once, bmpq, saq-gen; sets the quantizer family, "
                                    "which --quant may replace for saq and hero ('hwq models' lists them) (default: "
                                    "uniform, or the one named like --quant)")
    p.add_argument("--quant", help="quantizer family: uniform, float, n2uq, bitat, lsq, noise, osc, lqnet, dirnet, "
                                   "adder (default: uniform, or the method's)")
    p.add_argument("--wbits", type=int, help="weight bit-width, 1 = binary (default: 1)")
    p.add_argument("--abits", type=int, help="activation bit-width, 1 = binary (default: 1)")
    p.add_argument("--epochs", type=int, help="epochs to train, at least 1; with --resume, the new total "
                                              "(default: 10)")
    p.add_argument("--batch-size", dest="batch_size", type=int, help="images per optimizer step (default: 100)")
    p.add_argument("--lr", type=float, help="Adam learning rate, > 0 (default: 0.02)")
    p.add_argument("--schedule", help="learning-rate schedule: cosine, constant or linear (default: linear with "
                                         "--recipe two-step, else cosine)")
    p.add_argument("--loss", help="cross_entropy or sqr_hinge (default: cross_entropy)")
    p.add_argument("--dropout", type=float, help="dropout fraction in [0, 1) (default: 0.2)")
    p.add_argument("--weight-decay", dest="weight_decay", type=float, help="Adam weight decay, >= 0 (default: 0.0)")
    p.add_argument("--seed", type=int, help="random seed (default: 0)")
    p.add_argument("--device", help="cpu, cuda or auto; bit-for-bit repeatable on cpu only (default: cpu)")
    p.add_argument("--threads", type=int,
                   help="CPU threads torch uses; the bits depend on it, so it is recorded in config.yaml and "
                        "metrics.json; fewer can be much faster on a busy machine (default: the cores this "
                        "process may use)")
    p.add_argument("--data-dir", dest="data_dir", help="data folder (default: $HWQ_DATA or ../shared/data)")
    p.add_argument("--teacher", help="run directory of a trained model to distil from (default: none)")
    p.add_argument("--distill-weight", dest="distill_weight", type=float,
                   help="weight of the distillation term, in [0, 1] (default: 1.0)")
    p.add_argument("--distill-temperature", dest="distill_temperature", type=float,
                   help="softmax temperature of the distillation term, > 0 (default: 1.0)")
    p.add_argument("--init-from", dest="init_from",
                   help="run directory whose trained weights initialise the model (default: none)")
    p.add_argument("--recipe", help="plain, or two-step: binary activations with real weights, then binary "
                                    "weights too (ReActNet; docs/bitat.md) (default: plain)")
    p.add_argument("--step1-epochs", dest="step1_epochs", type=int,
                   help="epochs of the two-step recipe's first step, in [1, epochs - 1] (default: half, rounded down)")
    p.add_argument("--step1-weight-decay", dest="step1_weight_decay", type=float,
                   help="Adam weight decay of step 1 (real weights), >= 0 (default: 1e-05)")
    p.add_argument("--step2-weight-decay", dest="step2_weight_decay", type=float,
                   help="Adam weight decay of step 2 (binary weights), >= 0 (default: 0.0)")
    p.add_argument("--train-subset", dest="train_subset", type=int,
                   help="train on this many training images (class-balanced, seeded) (default: all)")
    p.add_argument("--test-subset", dest="test_subset", type=int,
                   help="score on this many test images (class-balanced, the same ones for every run and seed) "
                        "(default: all)")
    p.add_argument("--option", dest="options", action="append", default=[], metavar="KEY=VALUE",
                   help="model or quantizer-family option, repeatable ('hwq models' lists each one's); VALUE is "
                        "read as YAML, e.g. width=0.5 (default: none)")
    p.add_argument("--precision", help="YAML file mapping layer names to bit-widths, e.g. 'features.2: 4' ('hwq "
                                       "layers' lists a model's names); layers it does not name keep --wbits/--abits "
                                       "(default: {}, no layer named)")
    p.add_argument("--budget", help="hardware budget a bit-width search (--method bmpq, saq-gen) must meet, as 'hwq "
                                    "cost --budget' takes it: lut, bram18, dsp at most, fps or cycles; e.g. "
                                    "lut=9000,fps=1e6 (default: none)")
    p.add_argument("--board", help="the board the --budget is for ('hwq boards') (default: pynq-z2)")
    p.add_argument("--method-option", dest="method_option_items", action="append", default=[], metavar="KEY=VALUE",
                   help="option of the method's objective or optimizer, repeatable ('hwq models' lists each "
                        "method's); VALUE is read as YAML (default: none)")
    p.add_argument("--out", required=True, help="run directory, e.g. runs/NAME (required)")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out from its last checkpoint; only --epochs (upwards), --threads, "
                        "--device and --data-dir may change (default: off)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the run in --out, once the new one has finished training; the old run's "
                        "model.onnx, export.json and build-*/ go with it (default: off)")
    p.add_argument("--no-progress", dest="progress", action="store_false",
                   help="no progress bar (terminal) or per-epoch lines (otherwise) on stderr (default: shown)")
    p.set_defaults(func=_train)


def _train(args: argparse.Namespace) -> int:
    from hwq.train import run_train

    config = _train_config(args)
    metrics = run_train(config, args.out, resume=args.resume, overwrite=args.overwrite, progress=args.progress)
    searched = metrics.get("search")
    mixed = f" + {len(config.precision)} layer(s) of --precision" if config.precision and not searched else ""
    if searched:
        final = searched["solves"][-1]
        mixed = (f", weights {'/'.join(f'W{b}' for b in final['precision'].values())} chosen under --budget "
                 f"{config.budget} on {searched['board']} (lut {final['lut']:,}, {final['fps']:,.0f} fps)")
    print(f"{config.model}-w{config.wbits}a{config.abits}{mixed} ({config.quant}) on {config.dataset}: "
          f"test accuracy {100 * metrics['test_acc']:.2f}% after {metrics['epochs']} epochs "
          f"({metrics['seconds']:.1f} s, {metrics['threads']} threads) -> {args.out}")
    return 0


#: The flags that set a TrainConfig field of the same name (--option sets model_options).
TRAIN_FIELD_FLAGS = (
    "model", "dataset", "method", "quant", "wbits", "abits", "epochs", "batch_size", "lr", "schedule", "loss",
    "dropout", "weight_decay", "seed", "device", "threads", "data_dir", "teacher", "distill_weight",
    "distill_temperature", "init_from", "train_subset", "test_subset", "recipe", "step1_epochs", "step1_weight_decay",
    "step2_weight_decay", "precision", "budget", "board")


def _train_config(args: argparse.Namespace):
    """The TrainConfig that ``hwq train``'s flags describe (``hwq layers`` takes a subset of them)."""
    from hwq.errors import ConfigError
    from hwq.train import TrainConfig, resume_config

    flags = {k: getattr(args, k, None) for k in TRAIN_FIELD_FLAGS}
    resume = getattr(args, "resume", False)
    if resume and args.config:
        raise ConfigError("--config: a resumed run keeps the settings in its config.yaml; give flags to change "
                          "--epochs, --threads, --device or --data-dir")
    if resume:
        base = resume_config(args.out)
    elif args.config:
        base = TrainConfig.from_yaml(args.config)
    else:
        base = TrainConfig()
    if args.options:
        flags["model_options"] = {**base.model_options, **_parse_options(args.options)}
    if getattr(args, "method_option_items", None):
        flags["method_options"] = {**base.method_options,
                                   **_parse_options(args.method_option_items, "--method-option")}
    return base.replace(**flags)


def _add_layers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("layers", help="list a model's quantized layers with their bit-widths (the names a "
                                      "precision map takes)")
    p.add_argument("run", nargs="?", help="a finished run directory (default: the model the flags below describe)")
    p.add_argument("--config", help="YAML file of training settings, which the flags below override (default: none)")
    p.add_argument("--model", help="as for 'hwq train' (default: tfc)")
    p.add_argument("--dataset", help="as for 'hwq train'; no data is read (default: digits)")
    p.add_argument("--method", help="as for 'hwq train' (default: uniform)")
    p.add_argument("--quant", help="as for 'hwq train' (default: the method's)")
    p.add_argument("--wbits", type=int, help="weight bit-width of the layers the precision map does not name "
                                             "(default: 1)")
    p.add_argument("--abits", type=int, help="activation bit-width of the layers the map does not name (default: 1)")
    p.add_argument("--option", dest="options", action="append", default=[], metavar="KEY=VALUE",
                   help="model or quantizer-family option, repeatable (default: none)")
    p.add_argument("--precision", help="YAML file mapping layer names to bit-widths, checked as training checks it "
                                       "(default: none)")
    p.add_argument("--json", action="store_true", help="print the layers as JSON (default: a table)")
    p.set_defaults(func=_layers)


def _layers(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from hwq.errors import ConfigError
    from hwq.models.precision import layers_table
    from hwq.train.layers import config_layers, run_layers

    if args.run:
        given = [flag for flag in ("config", "model", "dataset", "method", "quant", "wbits", "abits", "precision")
                 if getattr(args, flag) is not None] + (["option"] if args.options else [])
        if given:
            raise ConfigError(f"--{given[0]}: a run's layers are those it was trained with; give a run or flags, "
                              f"not both")
        layers = run_layers(args.run)
    else:
        layers = config_layers(_train_config(args))
    print(json.dumps([asdict(layer) for layer in layers], indent=2) if args.json else layers_table(layers))
    return 0


def _add_cost(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("cost", help="per-layer and total LUT / BRAM18 / DSP / cycles of a model at its bits and a "
                                    "folding, from FINN's formulas (no build)")
    p.add_argument("--model", default="tfc", help="tfc, sfc, lfc or cnv (default: tfc)")
    p.add_argument("--dataset", default="mnist", help="the input size and classes (default: mnist); no data is read")
    p.add_argument("--wbits", type=int, default=2, help="weight bits of the layers the map does not name (default: 2)")
    p.add_argument("--abits", type=int, default=2, help="activation bits of the layers the map does not name "
                                                        "(default: 2)")
    p.add_argument("--precision", help="YAML file mapping layer names to bits, as 'hwq train --precision' takes "
                                       "(default: none)")
    p.add_argument("--board", default="pynq-z2", help="board name, as for 'hwq build' (default: pynq-z2)")
    p.add_argument("--target-fps", type=float, help="fold for this many frames per second at the board clock "
                                                    "(default: the fastest folding that fits the board)")
    p.add_argument("--target-cycles", type=int, help="fold for this many cycles per frame, excludes --target-fps "
                                                      "(default: none)")
    p.add_argument("--fit-fraction", type=float, default=0.8, help="share of each resource the fastest fitting "
                                                                   "folding may use (default: 0.8)")
    p.add_argument("--calibrated", action="store_true", help="also predict the open backend's synthesised LUTs "
                                                             "for the board, hwq/cost/calibration.json (default: FINN's estimate only)")
    p.add_argument("--budget", help="KEY=VALUE,... with lut, bram18, dsp (at most), fps (at least) or cycles (at "
                                    "most): fold for its speed and say whether the cost is within it (exit 1 if "
                                    "not; excludes --target-fps/--target-cycles) (default: none)")
    p.add_argument("--json", action="store_true", help="print the cost as JSON (default: a table)")
    p.set_defaults(func=_cost)


def _cost(args: argparse.Namespace) -> int:
    from hwq.cost.query import CostQuery, run_cost
    from hwq.cost.report import cost_table

    result = run_cost(CostQuery(args.model, args.dataset, args.wbits, args.abits, args.precision or {}, args.board,
                                args.target_fps, args.target_cycles, args.fit_fraction, args.calibrated,
                                args.budget))
    print(json.dumps(result, indent=2) if args.json else cost_table(result))
    return 0 if result.get("within_budget", True) else 1


def _parse_options(items: list[str], flag: str = "--option") -> dict:
    import yaml

    from hwq.errors import ConfigError

    options = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{flag} '{item}': expected KEY=VALUE")
        try:
            options[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError as err:
            reason = str(err).strip().splitlines()[0]
            raise ConfigError(f"{flag} '{item}': VALUE is not valid YAML ({reason})") from None
    return options


def _add_quantize(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("quantize", help="post-training quantization of a float run into a run that exports and builds "
                                        "like a trained one (docs/mixed_precision.md)")
    p.add_argument("run", help="a finished float run directory (hwq train --quant float)")
    p.add_argument("--method", default="attention-round",
                   help="attention-round (Diao et al. 2022) or nearest (round-to-nearest) (default: attention-round)")
    p.add_argument("--wbits", type=int, default=4, help="weight bits, 2..8 (default: 4)")
    p.add_argument("--abits", type=int, default=4, help="activation bits, 2..8 (default: 4)")
    p.add_argument("--calibration", type=int, default=1024,
                   help="calibration images, class-balanced from the training split (default: 1024)")
    p.add_argument("--iterations", type=int, default=500, help="Attention Round steps per layer (default: 500)")
    p.add_argument("--lr", type=float, default=0.01, help="Adam learning rate of the latent weights (default: 0.01)")
    p.add_argument("--sigma-start", dest="sigma_start", type=float, default=1.0,
                   help="Gaussian sigma at the first step, in grid steps (default: 1.0)")
    p.add_argument("--sigma-end", dest="sigma_end", type=float, default=0.05,
                   help="Gaussian sigma at the last step, in grid steps (default: 0.05)")
    p.add_argument("--seed", type=int, default=0, help="seed of the calibration draw and minibatches (default: 0)")
    p.add_argument("--precision", help="YAML file mapping layer names to bit-widths ('hwq layers' lists them) "
                                       "(default: none)")
    p.add_argument("--bit-allocation", dest="bit_allocation", default="fixed",
                   help="fixed (--wbits / --precision) or lossy-coding (per-layer weight bits from the lossy coding "
                        "length, under --budget-bits) (default: fixed)")
    p.add_argument("--budget-bits", dest="budget_bits", type=float,
                   help="average weight bits of --bit-allocation lossy-coding (default: none)")
    p.add_argument("--threads", type=int, help="CPU threads torch uses (default: 1)")
    p.add_argument("--out", required=True, help="the new run directory (required)")
    p.add_argument("--overwrite", action="store_true", help="replace a run in --out (default: off)")
    p.set_defaults(func=_quantize)


def _quantize(args: argparse.Namespace) -> int:
    from hwq.ptq import QuantizeConfig, run_quantize
    from hwq.train.config import read_precision

    config = QuantizeConfig(
        method=args.method, wbits=args.wbits, abits=args.abits, calibration=args.calibration,
        iterations=args.iterations, lr=args.lr, sigma_start=args.sigma_start, sigma_end=args.sigma_end,
        seed=args.seed, precision=read_precision(args.precision) if args.precision else {},
        bit_allocation=args.bit_allocation, budget_bits=args.budget_bits, threads=args.threads)
    metrics = run_quantize(args.run, config, args.out, overwrite=args.overwrite)
    record = metrics["ptq"]
    bits = ", ".join(f"{layer['name']}: {layer['bits']}" for layer in record["layers"] if layer["role"] == "weight")
    widths = (f"w{config.wbits}a{config.abits}" if not config.precision and config.budget_bits is None else
              f"a{config.abits}, weights at an average of {config.budget_bits} bits" if config.budget_bits is not None
              else f"w{config.wbits}a{config.abits} + {len(config.precision)} layer(s) of --precision")
    print(f"{config.method.value} {widths} from {args.run}: test accuracy "
          f"{100 * metrics['test_acc']:.2f}% (float {100 * record['source_test_acc']:.2f}%), weight bits {bits}, "
          f"{record['calibration_images']} calibration images, {record['seconds']:.1f} s -> {args.out}")
    return 0


def _add_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export a trained run to QONNX and verify it against PyTorch")
    p.add_argument("run", help="run directory written by 'hwq train'")
    p.add_argument("--verify-samples", dest="verify_samples", type=int,
                   help="held-out test images to compare on, at least 1 (default: 500, or the whole test set "
                        "when smaller)")
    p.add_argument("--bits", type=int,
                   help="a once-QAT run (--method once or hwq fedavg): export its BITS-bit member, written as "
                        "the run RUN/member-wBITSaBITS that 'hwq build' takes; the run's own bits export the run "
                        "(default: the run itself)")
    p.add_argument("--force", action="store_true",
                   help="export even an unfinished training (its last finished epoch, from checkpoint.pt); "
                        "export.json records it (default: off)")
    p.set_defaults(func=_export)


def _export(args: argparse.Namespace) -> int:
    from hwq.export import ExportConfig, run_export

    settings = {"verify_samples": args.verify_samples} if args.verify_samples is not None else {}
    config = ExportConfig(force=args.force, **settings)  # checked before a member is derived
    run = args.run
    if args.bits is not None:
        from hwq.export.members import derive_member_run

        run = derive_member_run(args.run, args.bits)
        print(f"member W{args.bits}A{args.bits} of {args.run}: {run}")
    report = run_export(run, config)
    v = report["verification"]
    print(f"exported {Path(run) / report['outputs']['onnx']}: verified on {v['n']} {v['dataset']} test images, "
          f"argmax match {100 * v['argmax_match']:.2f}%, max |diff| {v['max_abs_diff']:.2e}, "
          f"QONNX accuracy {100 * v['qonnx_accuracy']:.2f}%"
          + (f"; {v['float_order_ties']['images_rerun']} differing images rerun teacher-forced, then equal "
             f"({v['float_order_ties']['values']} values at a rounding tie broken by float32 order)"
             if "float_order_ties" in v else "")
          + (f" (forced: the training stopped after epoch {report['training']['epochs']})"
             if not report["training"]["complete"] else ""))
    return 0


def _add_models(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="list models, quantizer families and datasets")
    p.add_argument("--json", action="store_true", help="print the list as JSON (default: a table)")
    p.set_defaults(func=_models)


def _models(args: argparse.Namespace) -> int:
    from hwq import catalog

    print(json.dumps(catalog.as_dict(), indent=2) if args.json else catalog.as_table())
    return 0


def _add_build(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("build", help="build an exported run into a FINN dataflow accelerator for a board")
    p.add_argument("run", metavar="RUN_OR_MODEL",
                   help="run directory holding model.onnx and export.json from 'hwq export', or a QONNX file (or a "
                        "folder holding only model.onnx) that hwq did not train: then give --dataset or "
                        "--calibration (docs/byo-model.md)")
    p.add_argument("--board", default="pynq-z2", help="board name (see 'hwq boards'; default pynq-z2)")
    source = p.add_mutually_exclusive_group()
    source.add_argument("--dataset", help="dataset whose test images feed the gates: digits, mnist, cifar10 "
                                          "(default: the run's; required for a model hwq did not train)")
    source.add_argument("--calibration", metavar="FILE.npz",
                        help="your own uint8 images for the gates: an .npz with an array 'images' (N, C, H, W) "
                             "(default: none)")
    p.add_argument("--input-scale", dest="input_scale", type=float,
                   help="the graph's input is pixels * SCALE + OFFSET (default: pixels / 255, or the pixels for an "
                        "input annotated UINT8)")
    p.add_argument("--input-offset", dest="input_offset", type=float, help="see --input-scale (default 0)")
    add_boards_dir_argument(p)
    fold = p.add_mutually_exclusive_group()
    fold.add_argument("--target-fps", dest="target_fps", type=float,
                      help="frames/s to fold for (default: none, the fastest folding that fits 80%% of the board)")
    fold.add_argument("--folding", dest="folding_file",
                      help="folding file in FINN's JSON format (default: none, folding chosen by hwq)")
    p.add_argument("--max-lut", dest="max_lut", type=int,
                   help="a LUT budget (FINN's estimate) the folding must also stay within (default: the board)")
    p.add_argument("--out", dest="out_dir",
                   help="build directory (default RUN/build-BOARD; RUN/build-BOARD-open for the open backend on a "
                        "Xilinx board); replaced only when the build succeeds, a failed one is kept as OUT.failed")
    p.add_argument("--verify-samples", dest="verify_samples", type=int,
                   help="held-out test images for the bit-exactness gate (default 100; open backend: images "
                        "simulated in RTL, default 20)")
    p.add_argument("--data-dir", dest="data_dir",
                   help="data folder (default: the run's, else $HWQ_DATA, else ../shared/data)")
    p.add_argument("--force", action="store_true", default=False,
                   help="build even if export.json is missing, failed its verification or is about another "
                        "model.onnx (default off; recorded in the manifest)")
    p.add_argument("--no-progress", dest="progress", action="store_false", default=True,
                   help="no step lines on stderr (default: a line per step with its seconds; warnings are "
                        "always printed)")
    p.add_argument("--backend", choices=("finn", "open"), default="finn",
                   help="finn (default): FINN flow and estimates; open: hwq's Verilog, cocotb simulation, "
                        "Yosys + nextpnr for an open board, Yosys synth_xilinx estimates for a Xilinx one "
                        "(docs/rtl.md)")
    p.add_argument("--tree-levels-per-stage", dest="tree_levels_per_stage", type=int,
                   help="open backend: adder levels between pipeline registers in the MVAU adder trees "
                        "(0: combinational; default 2)")
    p.add_argument("--mvau-form", dest="mvau_form", choices=("integer", "planes"),
                   help="open backend: integer MVAUs as their integer weights (default) or as K binary weight "
                        "planes scaled by a per-channel basis where the weights decompose, e.g. an lqnet run's "
                        "(docs/rtl.md, 'Plane MVAUs')")
    p.add_argument("--simulator", choices=("auto", "icarus", "verilator"),
                   help="open backend: RTL simulator (default auto: icarus up to 200,000 simulated cycles, "
                        "verilator above, which compiles for seconds to minutes, then runs faster)")
    p.add_argument("--xilinx-estimate", dest="xilinx_estimate", action="store_true", default=None,
                   help="open backend, open board: also estimate Xilinx resources for the folding board with "
                        "Yosys synth_xilinx (default off; always done for a Xilinx board, which is not placed "
                        "and routed)")
    p.add_argument("--no-synth", dest="synthesise", action="store_false", default=None,
                   help="open backend: stop after generating and simulating the Verilog (no Yosys, no nextpnr: "
                        "the build runs at the board clock, with no resources; default: synthesise)")
    p.add_argument("--start-step", dest="start_step", metavar="STEP",
                   help="resume at STEP from the checkpoint of the step before it in the existing build of the "
                        "same model and settings (default: none, the first step; an unknown name lists them)")
    p.add_argument("--stop-step", dest="stop_step", metavar="STEP",
                   help="stop after STEP; the build's status is then 'stopped' (default: none, the last step)")
    p.set_defaults(func=_build)


#: Flags that only the open backend reads, named as on the command line.
_OPEN_ONLY_FLAGS = {"tree_levels_per_stage": "--tree-levels-per-stage", "simulator": "--simulator",
                    "xilinx_estimate": "--xilinx-estimate", "mvau_form": "--mvau-form", "synthesise": "--no-synth"}


def _build(args: argparse.Namespace) -> int:
    from hwq.dataflow import BuildConfig, run_build
    from hwq.errors import ConfigError
    from hwq.manifest import estimate_totals

    if args.backend == "open":
        return _build_open(args)
    given = [flag for key, flag in _OPEN_ONLY_FLAGS.items() if getattr(args, key) is not None]
    if given:
        raise ConfigError(f"{', '.join(given)}: only for --backend open")
    config = BuildConfig().replace(board=args.board, target_fps=args.target_fps, folding_file=args.folding_file,
                                   max_lut=args.max_lut,
                                   out_dir=args.out_dir, verify_samples=args.verify_samples,
                                   data_dir=args.data_dir, force=args.force, boards_dir=args.boards_dir,
                                   **_source_settings(args))
    m = run_build(args.run, config, progress=args.progress, start_step=args.start_step, stop_step=args.stop_step)
    if m["status"] == "stopped":
        print(_stopped(args, m))
        return 0
    t, v = estimate_totals(m), m["bit_exact"]
    skipped = sorted(k for k, s in m["vendor"].items() if s["status"] == "skipped")
    print(f"built {args.run} for {m['board']['name']}: estimated {t['estimated_fps']:,.0f} fps, "
          f"{t['estimated_latency_us']:.2f} us at {t['clock_mhz']:g} MHz, {t['LUT']:,} LUT, {t['BRAM_18K']} BRAM18, "
          f"{t['DSP']} DSP; {_gate_claim(v)}; "
          f"vendor steps skipped: {', '.join(skipped) or 'none'}")
    return 0


def _source_settings(args: argparse.Namespace) -> dict:
    """The flags that say what feeds the gates and what the graph's input is, where given."""
    return {k: getattr(args, k) for k in ("dataset", "calibration", "input_scale", "input_offset")
            if getattr(args, k) is not None}


def _gate_claim(gate: dict) -> str:
    """What the bit-exactness gate compared, as the CLI says it: layer-wise only when it was."""
    if gate.get("layerwise"):
        return f"bit-exact layer by layer on {gate['n']} test images"
    return f"bit-exact on {gate['n']} test images in {gate.get('compared', 'the classes only')}"


def _stopped(args: argparse.Namespace, m: dict) -> str:
    last = m["steps"][-1]
    return (f"stopped {args.run} for {m['board']['name']} after step {last['name']} (--stop-step), checkpoint "
            f"{last['onnx']} in the build folder; continue with --start-step STEP and the same settings")


def _build_open(args: argparse.Namespace) -> int:
    from hwq.rtl.build import OpenBuildConfig, run_open_build

    settings = {k: getattr(args, k) for k in ("target_fps", "folding_file", "max_lut", "out_dir", "verify_samples",
                                           "data_dir", "tree_levels_per_stage", "simulator", "mvau_form",
                                           "xilinx_estimate", "boards_dir", "synthesise")
                if getattr(args, k) is not None}
    settings.update(_source_settings(args))
    m = run_open_build(args.run, OpenBuildConfig(board=args.board, force=args.force, **settings),
                       progress=args.progress, start_step=args.start_step, stop_step=args.stop_step)
    if m["status"] == "stopped":
        print(_stopped(args, m))
        return 0
    s, e = m["simulation"], m.get("finn_estimate")
    finn_note = (f"FINN estimate for the same folding: {e['LUT']:,} LUT, {e['BRAM_18K']} BRAM18" if e else
                 "no FINN estimate: FINN has no adder layer")    # an adder network's build runs no FINN step
    if "xilinx_estimate" in m and "measured" not in m:    # a Xilinx board: synth_xilinx estimates, no P&R
        x, c = m["xilinx_estimate"], m["xilinx_estimate"]["counts"]
        print(f"built {args.run} for {m['board']['name']} (open backend, Xilinx estimate): bit-exact in RTL "
              f"simulation ({s['simulator']}) on {s['n']} test images, {s['cycles_per_image']:g} cycles/image -> "
              f"estimated {x['fps']:,.0f} fps at {x['clock_mhz']:g} MHz; synth_xilinx {c['lut']:,} LUT, "
              f"{c['ff']:,} FF, {c['bram18']} BRAM18, {c['dsp']} DSP ({finn_note})")
        return 0
    if "measured" not in m:    # synthesise: false
        print(f"built {args.run} for {m['board']['name']} (open backend, not synthesised): bit-exact in RTL "
              f"simulation ({s['simulator']}) on {s['n']} test images, {s['cycles_per_image']:g} cycles/image "
              f"(folding bound {s['folding_bound_cycles']}; {finn_note})")
        return 0
    f = m["measured"]
    print(f"built {args.run} for {m['board']['name']} (open backend): bit-exact in RTL simulation on {s['n']} test "
          f"images, {f['cycles_per_image']:g} cycles/image (folding bound {s['folding_bound_cycles']}), "
          f"Fmax {f['fmax_mhz']:.1f} MHz -> {f['fps']:,.0f} fps, {f['lut']:,} LUT, {f['ff']:,} FF, {f['bram']} BRAM, "
          f"{f['dsp']} DSP ({finn_note})")
    return 0


def add_boards_dir_argument(p: argparse.ArgumentParser) -> None:
    """``--boards-dir DIR`` (``args.boards_dir``), for every verb that takes ``--board``: a folder of the user's own
    board files, searched before ``$HWQ_BOARDS`` and the packaged boards; pass it on as ``load_board(name,
    boards_dir=args.boards_dir)``."""
    p.add_argument("--boards-dir", dest="boards_dir", metavar="DIR",
                   help="folder of your own board YAML files, searched before $HWQ_BOARDS and the boards that ship "
                        "with hwq; a board of the same name replaces the shipped one (default: none)")


def _add_boards(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("boards", help="list the boards hwq can build for (each YAML file checked as it is read)")
    add_boards_dir_argument(p)
    p.set_defaults(func=_boards)


def _boards(args: argparse.Namespace) -> int:
    from hwq.boards import BOARDS_DIR, known_boards, load_board

    for name in known_boards(args.boards_dir):
        b = load_board(name, args.boards_dir)
        r = b.resources
        target = f"FINN {b.finn_board}" if b.finn_board else f"nextpnr-{b.fpga['family']} {b.fpga['device']}"
        source = "" if b.path.parent == BOARDS_DIR else f"  ({b.path})"
        print(f"{name:<14} {b.part:<22} {b.clock_mhz:>5g} MHz  {b.shell:<5}  {target:<20}  LUT {r.lut:>9,}  "
              f"BRAM18 {r.bram18:>5}  DSP {r.dsp:>5}  URAM {r.uram:>4}  power: {b.power.get('kind', 'none')}{source}")
    return 0


def _add_emulate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("emulate", help="serve a build as an emulated board on a pseudo-terminal (path printed first)")
    p.add_argument("build_dir", help="build directory written by 'hwq build' (either backend: its manifest's "
                                      "accelerator section is what the emulated board runs)")
    p.add_argument("--name", default="hwq-emulator",
                   help="device name answered to 'name%%' (default: %(default)s)")
    p.add_argument("--force", action="store_true",
                   help="emulate a build whose manifest is not done or whose gates failed (default: refuse it)")
    p.add_argument("--drop-rate", dest="drop_rate", type=float, default=0.0,
                   help="fault: fraction of reply bytes lost, 0-1 (default: %(default)s)")
    p.add_argument("--garble-rate", dest="garble_rate", type=float, default=0.0,
                   help="fault: fraction of reply bytes turned into line noise, 0-1 (default: %(default)s)")
    p.add_argument("--reply-delay", dest="reply_delay_s", type=float, default=0.0,
                   help="fault: seconds of delay before every reply, >= 0 (default: %(default)s)")
    p.add_argument("--reset-at", dest="reset_at_command", type=int, default=0,
                   help="fault: reboot on the Nth command, >= 0 (default: %(default)s, never)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random faults, >= 0 (default: %(default)s)")
    p.add_argument("--rtl", action="store_true",
                   help="the accelerator is the open build's generated Verilog, compiled by Verilator and run cycle "
                        "by cycle: classes and timestamps come from the circuit (default: the HW graph, timed by "
                        "the build's cycle counts)")
    p.add_argument("--realtime", action="store_true",
                   help="answer each 'infer' when its device time has passed on the wall clock, as a real board "
                        "does (default: as soon as it is computed; the timestamps are the same either way)")
    p.set_defaults(func=_emulate)


def _emulate(args: argparse.Namespace) -> int:
    import signal

    from hwq.device import Emulator, FaultConfig

    faults = FaultConfig(drop_rate=args.drop_rate, garble_rate=args.garble_rate, reply_delay_s=args.reply_delay_s,
                         reset_at_command=args.reset_at_command, seed=args.seed)
    emu = Emulator.from_build_dir(args.build_dir, force=args.force, name=args.name, faults=faults,
                                  realtime=args.realtime, rtl=args.rtl)
    print(emu.port, flush=True)
    if emu.forced_problems:
        print(f"warning: emulating {args.build_dir} although it did not pass ({'; '.join(emu.forced_problems)}), "
              "as --force asks", file=sys.stderr, flush=True)
    print(f"emulating {args.build_dir} on {emu.port} (Ctrl-C to stop)", file=sys.stderr, flush=True)
    signal.signal(signal.SIGTERM, lambda *_: emu.request_stop())
    try:
        emu.serve()
    except KeyboardInterrupt:
        pass
    finally:
        emu.stop()
    return 0


def _add_measure(sub: argparse._SubParsersAction) -> None:
    import dataclasses

    from hwq.harness.config import LPM_VOLTAGE_RANGE_V, MODES, MeasureConfig

    # the defaults (and those --help shows) are the dataclass's own, so the CLI and the Python API agree
    d = argparse.Namespace(**{f.name: f.default for f in dataclasses.fields(MeasureConfig)})
    p = sub.add_parser("measure", help="measure a device over the MLPerf Tiny serial protocol")
    p.add_argument("--port", required=True, help="serial device, pty path or pyserial URL (socket://host:port)")
    p.add_argument("--mode", choices=MODES, default=d.mode, help="what to measure (default: %(default)s)")
    p.add_argument("--build", dest="build_dir",
                   help="build directory: input layout, dataset, reference model (default: none; then give "
                        "--input-bytes for performance)")
    p.add_argument("--force", action="store_true",
                   help="measure a build whose manifest is not done or whose gates failed; recorded in the report "
                        "(default: refuse it)")
    p.add_argument("--out", dest="out_dir", help="report folder (default: BUILD/measure, else ./measure)")
    p.add_argument("--baud", type=int, default=d.baud, help="serial rate, >= 1 (default: %(default)s)")
    p.add_argument("--windows", type=int, default=d.windows,
                   help="timed windows, >= 1; the median is reported (default: %(default)s)")
    p.add_argument("--min-window-s", dest="min_window_s", type=float, default=d.min_window_s,
                   help="least device seconds per timed window, > 0 (default: %(default)s, as MLPerf Tiny)")
    p.add_argument("--latency-windows", dest="latency_windows", type=int, default=d.latency_windows,
                   help="performance: 'infer 1' windows timing one inference, >= 1 (default: %(default)s)")
    p.add_argument("--warmup", type=int, default=d.warmup,
                   help="warm-up inferences before each window, >= 0 (default: %(default)s)")
    p.add_argument("--samples", type=int,
                   help="accuracy: test images to send, >= 1 (default: all of the test split)")
    p.add_argument("--input-bytes", dest="input_bytes", type=int,
                   help="performance without --build: size of the zero input, >= 1 (default: none)")
    p.add_argument("--data-dir", dest="data_dir",
                   help="dataset folder (default: the build's, else $HWQ_DATA, else ../shared/data)")
    p.add_argument("--timeout", dest="timeout_s", type=float, default=d.timeout_s,
                   help="seconds to wait for each reply, > 0 (default: %(default)s)")
    p.add_argument("--pipeline", action="store_true",
                   help="accuracy: send each image's db and infer commands at once and read the replies after (one "
                        "round trip per image; for a device that buffers its input: hwq emulate, the PYNQ agent; "
                        "default: one command at a time, as the MLPerf Tiny runner)")
    p.add_argument("--power", choices=("rails", "lpm01a"), default=None,
                   help="energy: the board's rails (hwq m-power- extension) or an ST LPM01A (default: lpm01a "
                        "with --power-port, else rails)")
    p.add_argument("--power-port", dest="power_port", help="energy: the LPM01A's serial port (default: none)")
    p.add_argument("--power-voltage", dest="power_voltage_v", type=float, default=d.power_voltage_v,
                   help=f"energy: LPM01A supply voltage in V, {LPM_VOLTAGE_RANGE_V[0]}-{LPM_VOLTAGE_RANGE_V[1]} "
                        "(default: %(default)s)")
    p.add_argument("--transcript-max-mb", dest="transcript_max_mb", type=float, default=d.transcript_max_mb,
                   help="transcript.log is rotated into gzip parts beyond this size in MB, > 0 "
                        "(default: %(default)s)")
    p.add_argument("--transcript-keep", dest="transcript_keep", type=int, default=d.transcript_keep,
                   help="older transcript parts kept (transcript.1.log.gz ...), >= 0 (default: %(default)s)")
    p.set_defaults(func=_measure)


def _measure(args: argparse.Namespace) -> int:
    from hwq.harness.measure import MeasureConfig, run_measure, summary_table

    out = args.out_dir or (str(Path(args.build_dir) / "measure") if args.build_dir else "measure")
    settings = {k: getattr(args, k) for k in (
        "port", "mode", "build_dir", "force", "baud", "windows", "min_window_s", "latency_windows", "warmup",
        "samples", "input_bytes", "data_dir", "timeout_s", "power_port", "power_voltage_v", "transcript_max_mb",
        "transcript_keep", "pipeline")}
    config = MeasureConfig(out_dir=out, power=args.power or ("lpm01a" if args.power_port else "rails"), **settings)
    report = run_measure(config, progress=lambda msg: print(msg, file=sys.stderr, flush=True))
    print(summary_table(report))
    print(f"report: {Path(out) / report['outputs']['results']}; transcript: {Path(out) / 'transcript.log'}")
    return 0


def _add_run(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="run a flow recipe: train, export, build, measure (up-to-date stages skipped)")
    p.add_argument("recipe", help="recipe YAML, e.g. flows/digits-demo.yaml")
    p.add_argument("--no-progress", dest="progress", action="store_false",
                   help="no per-epoch and per-step progress on stderr (default: shown; the stage lines and "
                        "warnings are always printed)")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from hwq.flow import run_flow

    run_flow(args.recipe, progress=args.progress)
    return 0


def _add_sweep(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sweep", help="run a sweep of flow recipes on Ray, each point once (finished points kept)")
    p.add_argument("sweep", help="sweep YAML, e.g. sweeps/digits-smoke.yaml")
    p.add_argument("--address", help="an existing Ray cluster's address (default: a local Ray on this machine)")
    p.add_argument("--workers", type=int, help="points at a time on the local Ray (default: the machine's CPUs)")
    p.add_argument("--no-progress", dest="progress", action="store_false",
                   help="no progress bar (default: shown)")
    p.set_defaults(func=_sweep)


def _sweep(args: argparse.Namespace) -> int:
    from hwq.sweep import run_sweep

    record = run_sweep(args.sweep, address=args.address, workers=args.workers, progress=args.progress)
    shown = ("point", "status", "accuracy", "lut", "fps", "within_budget", "lut_front")
    print("  ".join(f"{c:>12}" if c != "point" else f"{c:<40}" for c in shown))
    for row in record["rows"]:
        cells = [f"{row['point']:<40}"] + [f"{_cell(row[c]):>12}" for c in shown[1:]]
        print("  ".join(cells) + (f"  {row['error']}" if row["error"] else ""))
    out = Path(record["config"]["out_dir"])
    plots = ", ".join(str(out / name) for key, name in record["outputs"].items() if key.startswith("pareto"))
    print(f"{record['results']['done']} of {record['results']['points']} points done; results: "
          f"{out / 'sweep.csv'}, {out / 'sweep.json'}" + (f", {plots}" if plots else ""))
    return 0 if record["status"] == "done" else 1


def _add_fedavg(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("fedavg", help="quantization-robust FedAvg: clients on shards of the training set as Ray tasks, "
                                      "one global once-QAT model whose members 'hwq export RUN --bits b' exports")
    p.add_argument("--config", help="YAML file of the clients' training settings (as for 'hwq train'), which the "
                                    "flags below override (default: none)")
    p.add_argument("--model", help="as for 'hwq train' (default: tfc)")
    p.add_argument("--dataset", help="as for 'hwq train' (default: digits)")
    p.add_argument("--wbits", type=int, help="the global model's weight bits, the widest member (default: 4 "
                                             "without --config)")
    p.add_argument("--abits", type=int, help="its activation bits, equal to --wbits (default: 4 without --config)")
    p.add_argument("--members", help="comma-separated bit-widths (W = A) the model must serve, 2..--wbits; the "
                                     "run's own may be listed (default: 2)")
    p.add_argument("--clients", type=int, default=4,
                   help="clients, each with one IID shard of the training set (default: 4)")
    p.add_argument("--rounds", type=int, default=5, help="communication rounds (default: 5)")
    p.add_argument("--local-epochs", dest="local_epochs", type=int, default=1,
                   help="epochs a client trains its shard per round (default: 1)")
    p.add_argument("--sample", default="random", help="bit-widths a client step trains: random (one per step) or "
                                                      "all (the run's and every member's losses summed) "
                                                      "(default: random)")
    p.add_argument("--batch-size", dest="batch_size", type=int, help="as for 'hwq train' (default: 100)")
    p.add_argument("--lr", type=float, help="clients' Adam learning rate (default: 0.02)")
    p.add_argument("--schedule", help="cosine, constant or linear over rounds x local epochs (default: cosine)")
    p.add_argument("--dropout", type=float, help="as for 'hwq train' (default: 0.2)")
    p.add_argument("--weight-decay", dest="weight_decay", type=float, help="as for 'hwq train' (default: 0.0)")
    p.add_argument("--seed", type=int, help="seed of the model, the shards and every client's (seed, round, "
                                            "client) (default: 0)")
    p.add_argument("--threads", type=int, help="torch threads per client task (default: 1)")
    p.add_argument("--data-dir", dest="data_dir", help="as for 'hwq train' (default: $HWQ_DATA or ../shared/data)")
    p.add_argument("--train-subset", dest="train_subset", type=int, help="as for 'hwq train' (default: all)")
    p.add_argument("--test-subset", dest="test_subset", type=int, help="as for 'hwq train' (default: all)")
    p.add_argument("--option", dest="options", action="append", default=[], metavar="KEY=VALUE",
                   help="model option, as for 'hwq train' (default: none)")
    p.add_argument("--address", help="an existing Ray cluster's address (default: a local Ray on this machine)")
    p.add_argument("--workers", type=int, help="client tasks at a time on the local Ray (default: the machine's "
                                               "CPUs); the result does not depend on it")
    p.add_argument("--out", required=True, help="run directory, e.g. runs/NAME (required)")
    p.add_argument("--overwrite", action="store_true", help="replace a run in --out (default: off)")
    p.set_defaults(func=_fedavg)


def _fedavg(args: argparse.Namespace) -> int:
    from hwq.errors import ConfigError
    from hwq.fed import FedConfig, run_fedavg

    try:
        members = tuple(int(b) for b in (args.members or "2").split(","))
    except ValueError:
        raise ConfigError(f"--members '{args.members}': expected comma-separated integers, e.g. 2,4") from None
    fed = FedConfig(clients=args.clients, rounds=args.rounds, local_epochs=args.local_epochs, members=members,
                    sample=args.sample, workers=args.workers, address=args.address)
    if args.config is None and args.wbits is None and args.abits is None:
        args.wbits = args.abits = 4
    train = _train_config(args)
    metrics = run_fedavg(train, fed, args.out, overwrite=args.overwrite, echo=print)
    accuracy = ", ".join(f"W{b}A{b} {100 * acc:.2f}%" for b, acc in metrics["member_acc"].items())
    print(f"{train.model} on {train.dataset}, {fed.clients} clients x {fed.rounds} rounds: {accuracy} "
          f"({metrics['seconds']:.1f} s) -> {args.out}; export a member with: hwq export {args.out} --bits B")
    return 0


def _cell(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Every ``--help`` shows each option's default; ``None`` and switches stay quiet (their help says)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default in (None, False, True, [], argparse.SUPPRESS) or "default" in (action.help or ""):
            return action.help or ""
        return super()._get_help_string(action)


class _Parser(argparse.ArgumentParser):
    """The verbs' parsers: defaults in ``--help``."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("formatter_class", _HelpFormatter)
        super().__init__(*args, **kwargs)


def build_parser() -> argparse.ArgumentParser:
    from hwq import __version__

    parser = argparse.ArgumentParser(prog="hwq", description="quantization-aware training to FPGA accelerators")
    parser.add_argument("--version", action="version", version=f"hwq {__version__}")
    sub = parser.add_subparsers(dest="verb", required=True, parser_class=_Parser)
    for add in (_add_train, _add_layers, _add_cost, _add_quantize, _add_export, _add_models, _add_build, _add_boards,
                _add_emulate, _add_measure, _add_run, _add_sweep, _add_fedavg):
        add(sub)
    return parser


@contextlib.contextmanager
def sigterm_as_interrupt(enabled: bool = True) -> Iterator[None]:
    """Turn SIGTERM into :class:`~hwq.errors.Interrupted` (a KeyboardInterrupt) while a verb runs, so a stage
    stopped by ``kill`` cleans up exactly as after Ctrl-C; the previous handler is restored afterwards."""
    import signal
    import threading

    if not enabled or threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        raise Interrupted("SIGTERM", signal.SIGTERM)

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: list[str] | None = None) -> int:
    """Run one verb. A user-facing error is one line on stderr and exit status 2; an interruption (Ctrl-C,
    SIGTERM) is one line and 130/143, after the stage has kept what it finished."""
    args = build_parser().parse_args(argv)
    try:
        # ``hwq emulate`` handles SIGTERM itself (it stops serving and closes its pty). Brevitas' notice that an
        # optional package is missing is not the user's concern; the filter lasts as long as the verb.
        with sigterm_as_interrupt(enabled=args.verb != "emulate"), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="fast_hadamard_transform package not found")
            return args.func(args)
    except HwqError as err:
        print(f"hwq {args.verb}: error: {err}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `hwq boards | head`: the reader left; say nothing more
        sys.stdout = open(os.devnull, "w")
        return 141
    except OSError as err:  # a full disk, a read-only folder, a vanished device: the file and the reason
        print(f"hwq {args.verb}: error: {os_error_message(err)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as err:
        name = getattr(err, "signal_name", "SIGINT")
        detail = getattr(err, "detail", None)
        print(f"hwq {args.verb}: interrupted ({name})" + (f"; {detail}" if detail else ""), file=sys.stderr)
        return getattr(err, "exit_status", 130)


if __name__ == "__main__":
    sys.exit(main())
