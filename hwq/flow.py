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

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from hwq._config import check_mapping, config_from_mapping
from hwq._io import read_yaml_mapping, write_json
from hwq.errors import ConfigError

STAGES = ("train", "export", "build", "measure")


@dataclass
class MeasureSettings:
    """A recipe's ``measure:`` section: where the device is and what to measure on it."""

    #: Serve the build on an emulated board (a real pseudo-terminal) instead of a device at ``port``.
    emulate: bool = True
    port: str | None = None
    modes: list[str] = field(default_factory=lambda: ["performance", "accuracy", "energy"])
    windows: int = 5
    min_window_s: float = 10.0
    samples: int | None = 100

    def __post_init__(self) -> None:
        from hwq.harness.measure import MODES

        if not self.modes or any(m not in MODES for m in self.modes) or len(set(self.modes)) != len(self.modes):
            raise ConfigError(f"modes: expected a list of distinct modes out of {', '.join(MODES)}, "
                              f"got {self.modes!r}")
        if not self.emulate and not self.port:
            raise ConfigError("give a port, or emulate: true")

    def configs(self, port: str, out_dir: str, build_dir: str) -> list:
        """One :class:`~hwq.harness.measure.MeasureConfig` per mode (each checks its own ranges)."""
        from hwq.harness.measure import MeasureConfig

        return [MeasureConfig(port=port, mode=mode, out_dir=out_dir, build_dir=build_dir, windows=self.windows,
                              min_window_s=self.min_window_s, samples=self.samples) for mode in self.modes]


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
        """Read a recipe and validate all of it, every stage's settings included, before any stage runs."""
        path = Path(path)
        data = read_yaml_mapping(path, "recipe")
        known = {"name", "run_dir", "train", "export", "build", "measure"}
        unknown = sorted(map(str, set(data) - known))
        if unknown:
            raise ConfigError(f"{path}: unknown field(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        for key in ("run_dir", "train"):
            if key not in data:
                raise ConfigError(f"{path}: missing field '{key}'")
        for key in ("name", "run_dir"):
            if key in data and not (isinstance(data[key], str) and data[key]):
                raise ConfigError(f"{path}: {key}: expected a non-empty string, got {data[key]!r}")
        recipe = cls(name=data.get("name", path.stem), run_dir=data["run_dir"], train=data["train"],
                     export=data.get("export") or {}, build=data.get("build"), measure=data.get("measure"))
        recipe.validate(path)
        return recipe

    def validate(self, path: Path) -> None:
        """Build every stage's config from its section, so that a typo in ``measure`` is reported before
        training starts; each error names the recipe file and the section."""
        from hwq.dataflow import BuildConfig
        from hwq.export import ExportConfig
        from hwq.train import TrainConfig

        check_mapping(TrainConfig, self.train, f"{path}: train")
        train = TrainConfig.from_dict(self.train, source=f"{path}: train")
        _check_model(train, f"{path}: train")
        config_from_mapping(ExportConfig, self.export, f"{path}: export")
        if self.build is not None:
            from hwq.boards import load_board

            build = _section(BuildConfig, self.build, f"{path}: build")
            _section(load_board, build.board, f"{path}: build: board")
        if self.measure is not None:
            if self.build is None:
                raise ConfigError(f"{path}: measure needs a build section")
            settings = _section(MeasureSettings, self.measure, f"{path}: measure")
            _section(settings.configs, "(recipe check)", f"{path}: measure", "measure", "build")
            self.measure = dataclasses.asdict(settings)


def _section(make: Callable, data: Any, where: str, *args: Any):
    """``make(data)`` (a mapping for a config class), with any ConfigError prefixed by ``where``."""
    try:
        if isinstance(make, type):
            return config_from_mapping(make, data, where)
        return make(data, *args)
    except ConfigError as err:
        message = str(err)
        raise ConfigError(message if message.startswith(where) else f"{where}: {message}") from None


def _check_model(config, where: str) -> None:
    """The model and quantizer family exist and take these bit-widths (before any data is loaded)."""
    from hwq.models import MODELS
    from hwq.quant import get_family

    if config.model not in MODELS:
        raise ConfigError(f"{where}: model: unknown model '{config.model}'; known: {', '.join(sorted(MODELS))}")
    try:
        get_family(config.quant, config.model_options).check_bits(config.wbits, config.abits)
    except ConfigError as err:
        raise ConfigError(f"{where}: {err}") from None


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
    from hwq.harness.measure import run_measure

    settings, build = MeasureSettings(**recipe.measure), _build_dir(recipe, run)
    out = build / "measure"
    stamp = _sha256(build / "manifest.json")
    reports = {mode: _json(out / f"measure-{mode}.json") for mode in settings.modes}
    if all(r.get("status") == "done" and r.get("build_manifest_sha256") == stamp for r in reports.values()):
        return True, reports

    def measure_on(port: str) -> dict:
        # Each report records the build manifest's SHA-256 itself (the up-to-date stamp above).
        return {config.mode: run_measure(config) for config in settings.configs(port, str(out), str(build))}

    if not settings.emulate:
        return False, measure_on(settings.port)
    from hwq.device import Emulator

    with Emulator.from_build_dir(str(build)) as emulator:  # refuses a build whose gates failed
        return False, measure_on(emulator.port)


STAGE_FUNCTIONS: dict[str, Callable[[Recipe, Path, bool], tuple[bool, dict]]] = {
    "train": _train, "export": _export, "build": _build, "measure": _measure,
}


def run_flow(recipe_path: str | Path, progress: bool = True, echo: Callable[[str], None] = print) -> dict:
    """Run a recipe's stages in order, skipping those that are up to date; returns (and writes) the final report."""
    recipe = Recipe.from_yaml(recipe_path)
    run = Path(recipe.run_dir)
    wanted = [s for s in STAGES if s in ("train", "export") or getattr(recipe, s) is not None]
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
        report["measured"] = {k: s.get(k) for k in ("throughput_median_per_s", "time_per_inference_median_us",
                                                     "latency_median_us", "estimated_latency_us",
                                                     "clock_resolution_us", "throughput_spread_pct",
                                                     "measured_over_estimated")}
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


def _latency(measured: dict) -> str:
    """The median one-inference latency with the device timer's resolution (a 0.33 us pipeline reads 0 or 1 us on
    a 1 us timer)."""
    resolution = measured.get("clock_resolution_us") or 1
    if measured["latency_median_us"] < resolution:
        return f"under {resolution:g} us (the device timer's resolution)"
    return f"{measured['latency_median_us']:g} us on a {resolution:g} us timer"


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
                     f"{m['time_per_inference_median_us']:.4f} us/inference; measured/estimated "
                     f"{m['measured_over_estimated']:.4f}")
        lines.append(f"  latency       one inference {_latency(m)} (estimated {m['estimated_latency_us']:g} us)")
    e = report["energy"]
    lines.append(f"  energy        {e['energy_per_inference_median_uJ']:.6g} uJ/inference, "
                 f"{e['average_power_median_mW']:,.1f} mW average ({e['power_source']})" if isinstance(e, dict)
                 else f"  energy        {e}")
    return "\n".join(lines)
