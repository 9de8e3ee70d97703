# SPDX-License-Identifier: BSD-3-Clause
"""The flow runner: ``hwq run flows/<recipe>.yaml`` runs train, export, build and measure in order.

A recipe names one run directory and each stage's settings; its ``build`` section takes ``backend: finn``
(default) or ``backend: open`` and that backend's settings. The recipe is checked whole before any stage runs.
Every stage writes one record of the same shape (:mod:`hwq.manifest`), and one function decides whether a stage is
up to date and skipped (:func:`hwq.manifest.up_to_date`: done, same settings, same input hashes, outputs present):
training (``metrics.json``), export (``export.json``, from ``model.pt``), build (the build folder the build itself
uses, :meth:`~hwq.dataflow.BuildConfig.build_dir`; from ``model.onnx``) and measurement (``measure-<mode>.json``,
from the build's ``manifest.json``). ``flow.json`` in the run directory holds the final report, which is also
printed, in the same shape (``stage: flow``, one step per stage).

>>> report = run_flow("flows/digits-demo.yaml")      # doctest: +SKIP
>>> report["measured"]["throughput_median_per_s"] == report["estimated"]["fps"]  # doctest: +SKIP
True
"""

from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from hwq import manifest as records
from hwq._config import check_mapping, config_from_mapping
from hwq._io import read_yaml_mapping
from hwq.errors import ConfigError

STAGES = ("train", "export", "build", "measure")
#: The build backends a recipe's ``build: {backend: ...}`` names; finn when it names none.
BACKENDS = ("finn", "open")
#: The port recorded for an emulated board is a new pseudo-terminal each time, and pipelining changes how the
#: commands are sent, not what is measured: neither makes a measurement out of date.
VARYING_MEASURE_SETTINGS = ("port", "pipeline")


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
    #: Accuracy mode sends each image's commands at once (``hwq measure --pipeline``); None: when emulated (the
    #: emulator buffers its input), not on a real port (a board's UART may not).
    pipeline: bool | None = None

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

        pipeline = self.emulate if self.pipeline is None else self.pipeline
        return [MeasureConfig(port=port, mode=mode, out_dir=out_dir, build_dir=build_dir, windows=self.windows,
                              min_window_s=self.min_window_s, samples=self.samples, pipeline=pipeline)
                for mode in self.modes]


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
        from hwq.export import ExportConfig
        from hwq.train import TrainConfig

        check_mapping(TrainConfig, self.train, f"{path}: train")
        train = TrainConfig.from_dict(self.train, source=f"{path}: train")
        _check_model(train, f"{path}: train")
        config_from_mapping(ExportConfig, self.export, f"{path}: export")
        if self.build is not None:
            _, build = self.build_config(path)
            if build.folding_file is not None and not Path(build.folding_file).is_file():
                raise ConfigError(f"{path}: build: folding_file {build.folding_file}: file not found")
        if self.measure is not None:
            if self.build is None:
                raise ConfigError(f"{path}: measure needs a build section")
            settings = _section(MeasureSettings, self.measure, f"{path}: measure")
            _section(settings.configs, "(recipe check)", f"{path}: measure", "measure", "build")
            self.measure = dataclasses.asdict(settings)

    def build_config(self, path: str | Path | None = None):
        """``(backend, config)`` of the ``build`` section: the backend's config (``BuildConfig`` or
        ``OpenBuildConfig``) with the boards' own names, as the build records it (``canonical()``).

        Errors name the recipe, the section and the field: an unknown backend or key, a wrong type, an unknown
        board, a board the backend does not build for."""
        from hwq.boards import load_board

        where = f"{path or f'recipe {self.name}'}: build"
        if not isinstance(self.build, dict):
            raise ConfigError(f"{where}: expected a mapping of settings, got {self.build!r}")
        backend = self.build.get("backend", "finn")
        if backend not in BACKENDS:
            raise ConfigError(f"{where}: backend: expected one of {', '.join(BACKENDS)}, got {backend!r}")
        settings = {key: value for key, value in self.build.items() if key != "backend"}
        config = _section(_build_config_class(backend), settings, where)
        _section(load_board, config.board, f"{where}: board", config.boards_dir)
        return backend, _section(lambda c: c.canonical(), config, where)


def _build_config_class(backend: str) -> type:
    if backend == "open":
        from hwq.rtl.config import OpenBuildConfig

        return OpenBuildConfig
    from hwq.dataflow.config import BuildConfig

    return BuildConfig


def _run_build_function(backend: str) -> Callable:
    if backend == "open":
        from hwq.rtl.build import run_open_build

        return run_open_build
    from hwq.dataflow import run_build

    return run_build


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


# --- the stages: each returns (skipped, the stage's record) ----------------------------------------------------------
def _train(recipe: Recipe, run: Path, progress: bool) -> tuple[bool, dict]:
    """Skip a finished training of the recipe's settings, resume an unfinished one (an interrupted ``hwq run``),
    else train; a run of other settings is replaced only once the new one has finished."""
    import yaml

    from hwq.errors import Interrupted
    from hwq.methods import resolve_method
    from hwq.train import TrainConfig, run_train
    from hwq.train.loop import METRICS_FILE, train_inputs
    from hwq.train.resume import checkpoint_epoch, interrupted_detail

    config = TrainConfig.from_dict(recipe.train, source=f"recipe {recipe.name}: train")
    wanted = config.to_dict()
    wanted["schedule"] = config.schedule_used().value  # the run records the schedule it used
    if resolve_method(None, config.quant)[0] == config.method:
        # A method that is its family's name says nothing ``quant`` does not, and runs recorded before the
        # ``method`` field existed lack it: they stay up to date.
        wanted.pop("method")
    if wanted["threads"] is None:  # a recipe without threads accepts the count the run recorded (the machine's)
        wanted.pop("threads")
    if records.up_to_date(run / METRICS_FILE, wanted, train_inputs(config)):
        return True, records.read(run / METRICS_FILE)
    metrics = records.read(run / METRICS_FILE) or {}
    try:
        settings = yaml.safe_load((run / "config.yaml").read_text())
    except (OSError, yaml.YAMLError):
        settings = None
    resume = (not metrics.get("complete") and isinstance(settings, dict)
              and records.config_difference(settings, wanted) is None and checkpoint_epoch(run) is not None)
    overwrite = not resume and ((run / "checkpoint.pt").exists() or (run / METRICS_FILE).exists())
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
    from hwq.export.qonnx_export import EXPORT_FILE, export_inputs

    config = ExportConfig(**recipe.export)
    if records.up_to_date(run / EXPORT_FILE, dataclasses.asdict(config), export_inputs(run)):
        return True, records.read(run / EXPORT_FILE)
    return False, run_export(run, config)


def _build_dir(recipe: Recipe, run: Path) -> Path:
    """The build folder: the one the build itself writes (``config.build_dir``, with the board's own name)."""
    return recipe.build_config()[1].build_dir(run)


def _build(recipe: Recipe, run: Path, progress: bool) -> tuple[bool, dict]:
    from hwq.dataflow.build import MANIFEST_FILE, build_inputs

    backend, config = recipe.build_config()
    path = config.build_dir(run) / MANIFEST_FILE
    if records.up_to_date(path, config.to_dict(), build_inputs(run, config)):
        return True, records.read(path)
    return False, _run_build_function(backend)(run, config, progress=progress)


def _measure(recipe: Recipe, run: Path, progress: bool) -> tuple[bool, dict]:
    from hwq.harness.measure import run_measure

    settings, build = MeasureSettings(**recipe.measure), _build_dir(recipe, run)
    out = build / "measure"
    inputs = {"build_manifest": build / "manifest.json"}

    def up_to_date(config) -> bool:
        wanted = {k: v for k, v in dataclasses.asdict(config).items() if k not in VARYING_MEASURE_SETTINGS}
        return records.up_to_date(out / f"measure-{config.mode}.json", wanted, inputs)

    if all(up_to_date(c) for c in settings.configs(settings.port or "(emulated)", str(out), str(build))):
        return True, {mode: records.read(out / f"measure-{mode}.json") for mode in settings.modes}

    def measure_on(port: str) -> dict:
        # Each report records the build manifest and its SHA-256 (its input).
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
    """Run a recipe's stages in order, skipping those that are up to date; returns (and writes) the final report,
    ``flow.json``: the report's fields beside the shared record's (:mod:`hwq.manifest`), also when a stage fails."""
    import hwq

    recipe = Recipe.from_yaml(recipe_path)
    run = Path(recipe.run_dir)
    wanted = [s for s in STAGES if s in ("train", "export") or getattr(recipe, s) is not None]
    record = records.start("flow", {k: getattr(recipe, k) for k in ("name", "run_dir", "train", "export", "build",
                                                                      "measure")},
                           {"recipe": recipe_path}, {"hwq": hwq.__version__})
    results, skipped = {}, []
    try:
        for stage in wanted:
            entry = records.step(record, stage, status="running")
            started = time.perf_counter()
            was_skipped, results[stage] = STAGE_FUNCTIONS[stage](recipe, run, progress)
            entry.update(seconds=round(time.perf_counter() - started, 3), status="skipped" if was_skipped else "done")
            if was_skipped:
                skipped.append(stage)
            echo(f"{stage:<8} {'up to date, skipped' if was_skipped else 'done'}")
    except BaseException as err:
        if run.is_dir():
            records.fail(record, run / FLOW_FILE, err)
        raise
    report = final_report(recipe, results, skipped)
    record["outputs"] = _stage_records(recipe, run, wanted)
    record["results"] = {k: v for k, v in report.items() if k not in ("recipe", "run_dir", "skipped")}
    record = {**report, **{k: v for k, v in record.items() if k not in report}}
    records.finish(record, run / FLOW_FILE)
    echo(format_report(report))
    return record


FLOW_FILE = "flow.json"


def _stage_records(recipe: Recipe, run: Path, stages: list[str]) -> dict[str, str]:
    """Each stage's record, relative to the run directory (``flow.json``'s folder)."""
    paths = {"train": run / "metrics.json", "export": run / "export.json"}
    if "build" in stages:
        build = _build_dir(recipe, run)
        paths["build"] = build / "manifest.json"
        for mode in (recipe.measure or {}).get("modes", []) if "measure" in stages else []:
            paths[f"measure-{mode}"] = build / "measure" / f"measure-{mode}.json"
    return {name: os.path.relpath(path, run) for name, path in paths.items()}


def final_report(recipe: Recipe, results: dict, skipped: list[str]) -> dict:
    """One summary across the stages, with units in the field names."""
    report: dict[str, Any] = {"recipe": recipe.name, "run_dir": recipe.run_dir, "skipped": skipped}
    train, export = results["train"], results["export"]
    report["accuracy"] = {"pytorch_test": train.get("test_acc"),
                          "qonnx_verified_subset": export["verification"]["qonnx_accuracy"],
                          "export_argmax_match": export["verification"]["argmax_match"]}
    if "build" in results:
        build = results["build"]
        report["build"] = {"backend": build.get("backend", "finn"), "board": build["board"]["name"],
                           **build.get("results", {})}
        if "estimates" in build:   # FINN's estimate, for the board FINN folded for (an open build's fold_board)
            total = records.estimate_totals(build)
            report["estimated"] = {"fps": total["estimated_fps"], "latency_us": total.get("estimated_latency_us"),
                                   "LUT": total["LUT"], "BRAM_18K": total["BRAM_18K"], "DSP": total["DSP"],
                                   "clock_mhz": total.get("clock_mhz"),
                                   "board": build["config"].get("fold_board", build["board"]["name"])}
        report["bit_exact"] = build.get("results", {}).get("bit_exact")
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
                     f"on {e['board']}; {e['LUT']:,} LUT, {e['BRAM_18K']} BRAM18, {e['DSP']} DSP (FINN)")
    build = report.get("build", {})
    if build.get("backend") == "open":
        line = f"  open backend  {build['board']}: RTL simulation bit-exact {build.get('bit_exact')}"
        if "cycles_per_image" in build:
            line += f", {build['cycles_per_image']:g} cycles/image"
        if build.get("fps"):
            line += (f"; {build['fps']:,.0f} inf/s" + (f" at Fmax {build['fmax_mhz']:.1f} MHz"
                                                      if build.get("fmax_mhz") else " (estimate)")
                     + f", {build['lut']:,} LUT, {build['bram']} {build['bram_kind']}")
        lines.append(line)
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
