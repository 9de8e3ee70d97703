# SPDX-License-Identifier: BSD-3-Clause
"""Property: whatever a user types on the command line or in a recipe, hwq answers with one line, never a
traceback.

Hypothesis draws values for every numeric and text flag of every verb (negative, zero, NaN, infinity, huge,
wrong type) and whole recipes with wrong keys and types. Each case is arranged to stop early: the run
directories, ports and data folders do not exist, so a valid setting ends in a one-line "not found" error instead
of training or measuring. The property is the same for all of them: exit status 0 or 2 (argparse's own usage
errors are 2 too), and what is printed on stderr is a usage message or exactly one ``hwq VERB: error:`` line.
"""

from __future__ import annotations

import contextlib
import io
import math

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hwq.cli import main

NUMBERS = st.one_of(
    st.integers(min_value=-10**12, max_value=10**12),
    st.floats(allow_nan=True, allow_infinity=True, width=64),
    st.sampled_from(["0", "-1", "1e9", "nan", "inf", "-inf", "1.5", "abc", "", "0x10", "1e400"]),
)
TEXT = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12)

MISSING = "/nonexistent/hwq-property"

#: verb -> (fixed arguments that make it stop early, numeric flags, text flags)
VERBS = {
    "train": ([f"--out={MISSING}/run", "--dataset=mnist", f"--data-dir={MISSING}/data", "--no-progress"],
              ["--wbits", "--abits", "--epochs", "--batch-size", "--lr", "--dropout", "--weight-decay", "--seed",
               "--distill-weight", "--distill-temperature", "--train-subset", "--threads"],
              ["--model", "--quant", "--schedule", "--loss", "--device", "--option"]),
    "export": ([f"{MISSING}/run"], ["--verify-samples"], []),
    "build": ([f"{MISSING}/run", "--no-progress"], ["--target-fps", "--verify-samples", "--tree-levels-per-stage",
                                                   "--input-scale", "--input-offset"],
              ["--board", "--simulator", "--backend"]),
    "measure": ([f"--port={MISSING}/tty", f"--build={MISSING}/build"],
                ["--baud", "--windows", "--min-window-s", "--warmup", "--samples", "--input-bytes", "--timeout",
                 "--power-voltage", "--latency-windows", "--transcript-max-mb", "--transcript-keep"],
                ["--mode", "--power"]),
    "emulate": ([f"{MISSING}/build"], ["--drop-rate", "--garble-rate", "--reply-delay", "--reset-at", "--seed"],
                ["--name"]),
}


def _run(argv: list[str]) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            status = main(argv)
        except SystemExit as stop:  # argparse: --help, or a value of the wrong type
            status = stop.code if isinstance(stop.code, int) else 2
    return status, err.getvalue()


def _one_line_or_usage(verb: str, status: int, stderr: str) -> None:
    assert status in (0, 2), (status, stderr)
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert "Traceback" not in stderr, stderr
    if lines and lines[0].startswith("usage:"):
        assert lines[-1].startswith(f"hwq {verb}: error:") or lines[-1].startswith("hwq: error:"), stderr
        return
    errors = [line for line in lines if line.startswith(f"hwq {verb}: error:")]
    assert len(errors) <= 1 and (status == 0 or len(errors) == 1), stderr


def _flag_values(numeric: list[str], text: list[str]):
    return st.lists(st.one_of(st.tuples(st.sampled_from(numeric), NUMBERS),
                              *([st.tuples(st.sampled_from(text), TEXT)] if text else [])),
                    min_size=1, max_size=4)


def _argv(verb: str, flags) -> list[str]:
    fixed = VERBS[verb][0]
    out = [verb, *fixed]
    for flag, value in flags:
        text = repr(value) if isinstance(value, float) and not math.isfinite(value) else str(value)
        out.append(f"{flag}={text}")
    return out


@pytest.mark.parametrize("verb", sorted(VERBS))
def test_any_flag_values_give_one_line(verb):
    _, numeric, text = VERBS[verb]

    @settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None)
    @given(_flag_values(numeric, text))
    def check(flags):
        status, stderr = _run(_argv(verb, flags))
        _one_line_or_usage(verb, status, stderr)

    check()


SECTION_VALUES = st.one_of(NUMBERS, TEXT, st.booleans(), st.none(), st.lists(st.integers(), max_size=2),
                           st.dictionaries(st.sampled_from(["a", "epochs"]), st.integers(), max_size=1))
SECTIONS = {
    "train": ["model", "dataset", "quant", "wbits", "abits", "epochs", "lr", "batch_size", "dropout", "seed",
              "model_options", "bogus"],
    "export": ["verify_samples", "atol", "batch", "bogus"],
    "build": ["board", "target_fps", "folding_file", "verify_samples", "fit_fraction", "bogus"],
    "measure": ["emulate", "port", "modes", "windows", "min_window_s", "samples", "bogus"],
}


@settings(max_examples=80, deadline=None, database=None)
@given(st.data())
def test_any_recipe_gives_one_line(tmp_path_factory, data):
    recipe: dict = {"run_dir": f"{MISSING}/run"}
    for section, keys in SECTIONS.items():
        if data.draw(st.booleans(), label=f"has {section}"):
            fields = data.draw(st.dictionaries(st.sampled_from(keys), SECTION_VALUES, max_size=3), label=section)
            if section == "train":  # stop at the data folder, whatever else is valid
                fields = {"dataset": "mnist", "data_dir": f"{MISSING}/data", **fields}
            recipe[section] = fields
    recipe.setdefault("train", {"dataset": "mnist", "data_dir": f"{MISSING}/data"})
    if data.draw(st.booleans(), label="wrong top-level"):
        recipe[data.draw(st.sampled_from(["name", "run_dir", "extra"]))] = data.draw(SECTION_VALUES)
    path = tmp_path_factory.mktemp("recipe") / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    with contextlib.chdir(path.parent):  # a drawn run_dir is relative: its failure record goes there, not the cwd
        status, stderr = _run(["run", str(path), "--no-progress"])
    _one_line_or_usage("run", status, stderr)
    assert status == 2, stderr  # nothing here can succeed: the data folder does not exist


#: numeric flags for which a negative value is a setting (an input's scale and offset may be negative)
SIGNED = {"--input-scale", "--input-offset"}


def _names_the_flag(flag: str, stderr: str) -> bool:
    name = flag.lstrip("-")
    return any(form in stderr for form in (flag, name, name.replace("-", "_")))


@pytest.mark.parametrize("verb,flag", [(verb, flag) for verb, (_, numeric, _) in sorted(VERBS.items())
                                       for flag in numeric])
@pytest.mark.parametrize("value", ["nan", "-1"])
def test_nan_and_negative_values_are_refused_naming_the_flag(verb, flag, value):
    """NaN is never a setting, and no numeric flag takes a negative value (seeds are in [0, 2^32)): each is refused
    before anything runs, and the one line names the flag (or its field)."""
    if value == "-1" and flag in SIGNED:
        pytest.skip(f"{flag} -1 is a valid setting")
    status, stderr = _run([verb, *VERBS[verb][0], f"{flag}={value}"])
    assert status == 2 and _names_the_flag(flag, stderr), stderr


def test_every_option_of_every_verb_shows_its_default():
    """Each verb's --help says what an option does when it is not given (a required option needs none)."""
    from hwq.cli import build_parser

    verbs = build_parser()._subparsers._group_actions[0].choices
    for verb, parser in verbs.items():
        for action in parser._actions:
            if action.option_strings and action.dest != "help" and not action.required:
                assert "default" in parser._get_formatter()._format_action(action), (verb, action.option_strings)
