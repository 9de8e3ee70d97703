# SPDX-License-Identifier: BSD-3-Clause
"""The flow runner: ``hwq run flows/<recipe>.yaml`` runs train, export, build and measure in order.

A recipe names one run directory and each stage's settings. A stage whose outputs are up to date with its inputs
is skipped: training when ``metrics.json`` is complete for the same settings; export when ``export.json`` passed
for the current ``model.pt``; build when ``manifest.json`` is done for the current ``model.onnx`` and the same
settings; measurement when its reports exist for the current build. ``flow.json`` in the run directory holds the
final report, which is also printed.

>>> report = run_flow("flows/digits-demo.yaml")      # doctest: +SKIP
>>> report["measured"]["throughput_median_per_s"] == report["estimated"]["fps"]  # doctest: +SKIP
True
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from hwq._io import read_yaml_mapping, write_json
from hwq.errors import ConfigError

STAGES = ("train", "export", "build", "measure")
MEASURE_DEFAULTS = {"emulate": True, "port": None, "modes": ["performance", "accuracy", "energy"], "windows": 5,
                    "min_window_s": 10.0, "samples": 100}


@dataclass
class Recipe:
    """One experiment: where its run lives and each stage's settings (``None`` leaves a stage out)."""

    name: str
    run_dir: str
    train: dict[str, Any]
    export: dict[str, Any] = field(default_factory=dict)
    build: dict[str, Any] | None = None
    measure: dict[str, Any] | None = None

    @classmethod
    def from_yaml(cls, path: str | Path) -> "Recipe":
        path = Path(path)
        data = read_yaml_mapping(path, "recipe")
        known = {"name", "run_dir", "train", "export", "build", "measure"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"{path}: unknown field(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        for key in ("run_dir", "train"):
            if key not in data:
                raise ConfigError(f"{path}: missing field '{key}'")
        measure = data.get("measure")
        if measure is not None:
            unknown = sorted(set(measure) - set(MEASURE_DEFAULTS))
            if unknown:
                raise ConfigError(f"{path}: measure: unknown field(s) {', '.join(unknown)}")
            measure = {**MEASURE_DEFAULTS, **measure}
            if not measure["emulate"] and not measure["port"]:
                raise ConfigError(f"{path}: measure: give a port, or emulate: true")
        return cls(name=data.get("name", path.stem), run_dir=data["run_dir"], train=data["train"],
                   export=data.get("export") or {}, build=data.get("build"), measure=measure)


def _sha256(path: Path) -> str | None:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None


def _json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}


# --- the stages: each returns (skipped, summary) -------------------------------------------------------------------
def _train(recipe: Recipe, run: Path, progress: bool) -> tuple[bool, dict]:
    """Skip a finished training of the recipe's settings, resume an unfinished one (an interrupted ``hwq run``),
    else train; a run of other settings is replaced only once the new one has finished."""
    import yaml

    from hwq.errors import Interrupted
    from hwq.train import TrainConfig, run_train
    from hwq.train.resume import checkpoint_epoch, interrupted_detail

    config = TrainConfig.from_dict(recipe.train, source=f"recipe {recipe.name}: train")

    def same_settings(recorded: Any) -> bool:
        # A recipe without ``threads`` accepts the count the run recorded (the default follows the machine).
        wanted, recorded = config.to_dict(), dict(recorded) if isinstance(recorded, dict) else {}
        if wanted["threads"] is None:
            wanted.pop("threads")
            recorded.pop("threads", None)
        return recorded == wanted

    metrics = _json(run / "metrics.json")
    if metrics.get("complete") and same_settings(metrics.get("config")):
        return True, metrics
    try:
        settings = yaml.safe_load((run / "config.yaml").read_text())
    except (OSError, yaml.YAMLError):
        settings = None
    resume = (not metrics.get("complete") and isinstance(settings, dict) and same_settings(settings)
              and checkpoint_epoch(run) is not None)
    overwrite = not resume and ((run / "checkpoint.pt").exists() or (run / "metrics.json").exists())
    if resume:  # with the run's own thread count, so the resumed bits are those of a straight run
        config = config.replace(threads=settings.get("threads"))
    try:
        return False, run_train(config, run, resume=resume, overwrite=overwrite, progress=progress)
    except Interrupted as err:
        if overwrite:  # the new run was discarded and the previous one kept, as run_train's message says
            raise
        raise Interrupted.wrap(err, interrupted_detail(run, config.epochs, "running the recipe again resumes "
                                                                           "from it")) from None


def _export(recipe: Recipe, run: Path, progress: bool) -> tuple[bool, dict]:
    from hwq.export import ExportConfig, run_export

    report = _json(run / "export.json")
    if (report.get("verification", {}).get("passed") and report["source"].get("weights_sha256") ==
            _sha256(run / "model.pt") and report["outputs"].get("onnx_sha256") == _sha256(run / "model.onnx")):
        return True, report
    return False, run_export(run, ExportConfig(**recipe.export))


def _build_dir(recipe: Recipe, run: Path) -> Path:
    from hwq.dataflow import BuildConfig

    config = BuildConfig(**recipe.build)
    return Path(config.out_dir) if config.out_dir else run / f"build-{config.board}"


def _build(recipe: Recipe, run: Path, progress: bool) -> tuple[bool, dict]:
    from hwq.dataflow import BuildConfig, run_build

    config = BuildConfig(**recipe.build)
    manifest = _json(_build_dir(recipe, run) / "manifest.json")
    if (manifest.get("status") == "done" and manifest.get("config") == config.to_dict()
            and manifest.get("source", {}).get("onnx_sha256") == _sha256(run / "model.onnx")):
        return True, manifest
    return False, run_build(run, config, progress=progress)


def _measure(recipe: Recipe, run: Path, progress: bool) -> tuple[bool, dict]:
    from hwq.harness.measure import MeasureConfig, run_measure

    settings, build = recipe.measure, _build_dir(recipe, run)
    out = build / "measure"
    stamp = _sha256(build / "manifest.json")
    reports = {mode: _json(out / f"measure-{mode}.json") for mode in settings["modes"]}
    if all(r.get("status") == "done" and r.get("build_manifest_sha256") == stamp for r in reports.values()):
        return True, reports

    def measure_on(port: str) -> dict:
        done = {}
        for mode in settings["modes"]:
            config = MeasureConfig(port=port, mode=mode, out_dir=str(out), build_dir=str(build),
                                   windows=settings["windows"], min_window_s=settings["min_window_s"],
                                   samples=settings["samples"])
            report = run_measure(config)
            report["build_manifest_sha256"] = stamp
            write_json(out / f"measure-{mode}.json", report)
            done[mode] = report
        return done

    if not settings["emulate"]:
        return False, measure_on(settings["port"])
    from hwq.device import BuildModel, Emulator

    with Emulator(BuildModel.from_build_dir(build)) as emulator:
        return False, measure_on(emulator.port)


STAGE_FUNCTIONS: dict[str, Callable[[Recipe, Path, bool], tuple[bool, dict]]] = {
    "train": _train, "export": _export, "build": _build, "measure": _measure,
}


def run_flow(recipe_path: str | Path, progress: bool = True, echo: Callable[[str], None] = print) -> dict:
    """Run a recipe's stages in order, skipping those that are up to date; returns (and writes) the final report."""
    recipe = Recipe.from_yaml(recipe_path)
    run = Path(recipe.run_dir)
    wanted = [s for s in STAGES if s in ("train", "export") or getattr(recipe, s) is not None]
    if "measure" in wanted and "build" not in wanted:
        raise ConfigError(f"{recipe_path}: measure needs a build section")
    results, skipped = {}, []
    for stage in wanted:
        was_skipped, results[stage] = STAGE_FUNCTIONS[stage](recipe, run, progress)
        if was_skipped:
            skipped.append(stage)
        echo(f"{stage:<8} {'up to date, skipped' if was_skipped else 'done'}")
    report = final_report(recipe, results, skipped)
    write_json(run / "flow.json", report)
    echo(format_report(report))
    return report


def final_report(recipe: Recipe, results: dict, skipped: list[str]) -> dict:
    """One summary across the stages, with units in the field names."""
    report: dict[str, Any] = {"recipe": recipe.name, "run_dir": recipe.run_dir, "skipped": skipped}
    train, export = results["train"], results["export"]
    report["accuracy"] = {"pytorch_test": train.get("test_acc"),
                          "qonnx_verified_subset": export["verification"]["qonnx_accuracy"],
                          "export_argmax_match": export["verification"]["argmax_match"]}
    if "build" in results:
        total = results["build"]["estimates"]["total"]
        report["estimated"] = {"fps": total["estimated_fps"], "latency_us": total.get("estimated_latency_us"),
                               "LUT": total["LUT"], "BRAM_18K": total["BRAM_18K"], "DSP": total["DSP"],
                               "clock_mhz": total.get("clock_mhz"), "board": results["build"]["board"]["name"]}
        report["bit_exact"] = results["build"]["bit_exact"]["passed"]
    measured = results.get("measure", {})
    if "performance" in measured:
        s = measured["performance"]["summary"]
        report["measured"] = {k: s.get(k) for k in ("throughput_median_per_s", "latency_median_us",
                                                     "throughput_spread_pct", "measured_over_estimated")}
    if "accuracy" in measured:
        s = measured["accuracy"]["summary"]
        report["accuracy"].update(device=s["device_accuracy"], host_reference=s["host_accuracy"],
                                  device_host_agreement=s["agreement"], device_samples=s["samples"])
    if "energy" in measured:
        s = measured["energy"]["summary"]
        report["energy"] = {k: s.get(k) for k in ("energy_per_inference_median_uJ", "average_power_median_mW",
                                                  "energy_per_inference_spread_pct", "model_energy_per_inference_uJ")}
        report["energy"]["power_source"] = measured["energy"].get("power_source", {}).get("kind")
    else:
        report["energy"] = "not measured (add energy to the recipe's measure modes)"
    return report


def format_report(report: dict) -> str:
    """The final report as a short table."""
    lines = [f"== {report['recipe']} ({report['run_dir']})"]
    acc = report["accuracy"]
    lines.append(f"  accuracy      PyTorch {100 * acc['pytorch_test']:.2f} %, QONNX (verified subset) "
                 f"{100 * acc['qonnx_verified_subset']:.2f} %"
                 + (f", device {100 * acc['device']:.2f} % on {acc['device_samples']} images "
                    f"(host {100 * acc['host_reference']:.2f} %)" if "device" in acc else ""))
    if "estimated" in report:
        e = report["estimated"]
        lines.append(f"  estimated     {e['fps']:,.0f} inf/s, {e['latency_us']:.2f} us at {e['clock_mhz']} MHz "
                     f"on {e['board']}; {e['LUT']:,} LUT, {e['BRAM_18K']} BRAM18, {e['DSP']} DSP")
    if "measured" in report:
        m = report["measured"]
        lines.append(f"  measured      {m['throughput_median_per_s']:,.0f} inf/s (median of windows), "
                     f"{m['latency_median_us']:.4f} us/inference; measured/estimated "
                     f"{m['measured_over_estimated']:.4f}")
    e = report["energy"]
    lines.append(f"  energy        {e['energy_per_inference_median_uJ']:.6g} uJ/inference, "
                 f"{e['average_power_median_mW']:,.1f} mW average ({e['power_source']})" if isinstance(e, dict)
                 else f"  energy        {e}")
    return "\n".join(lines)
