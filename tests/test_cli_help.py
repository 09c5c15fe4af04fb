"""Every CLI says what it does: a complete description, help on every flag, one flag spelling (kebab-case, the
old underscore spelling still accepted), and --help without importing torch (timed in benchmarks/bench_cli.py)."""
from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ("prepare_dataset", "train_pipeline", "monitor_training", "generate_report", "tune")


def load(name: str):
    spec = importlib.util.spec_from_file_location(f"cli_{name}", ROOT / "solutions" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", SCRIPTS)
def test_help_exits_0_and_every_flag_has_help(name: str, capsys):
    module = load(name)
    with pytest.raises(SystemExit) as done:
        module.main(["--help"])
    assert done.value.code == 0
    text = capsys.readouterr().out
    assert "Phase" not in text and "CLI" not in text.splitlines()[2:4]
    parser = module.build_parser() if hasattr(module, "build_parser") else None
    if parser is None:
        return
    for action in parser._actions:
        if action.help == argparse.SUPPRESS or isinstance(action, argparse._HelpAction):
            continue
        assert action.help and action.help.strip(), f"{action.option_strings} has no help"
        assert "(default: None)" not in action.help, action.option_strings
        for flag in action.option_strings:
            assert "_" not in flag, f"{flag}: flags are kebab-case"


def test_train_description_is_whole_sentences(capsys):
    parser = load("train_pipeline").build_parser()
    assert parser.description.rstrip().endswith(".") and "Phase" not in parser.description
    assert "Exit codes" in parser.epilog


def test_the_old_underscore_spelling_is_still_accepted():
    parser = load("train_pipeline").build_parser()
    for spelling in ("--no-clip-predictions", "--no-clip_predictions"):
        args = vars(parser.parse_args(["--data-dir", "d", "--save-dir", "s", spelling]))
        assert args["clip_predictions"] is False


@pytest.mark.slow
def test_train_help_does_not_import_torch():
    code = ("import runpy, sys\nsys.argv = ['train_pipeline.py', '--help']\n"
            "try:\n    runpy.run_path(sys.argv[0] if False else %r, run_name='__main__')\n"
            "except SystemExit as e:\n    assert e.code == 0\n"
            "print('torch' in sys.modules)\n") % str(ROOT / "solutions" / "train_pipeline.py")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "False"


def test_prepare_help_repeats_the_data_packages_default_level_cap():
    from pipeline import data

    assert load("prepare_dataset").MAX_LEVELS == data.MAX_CATEGORIES
