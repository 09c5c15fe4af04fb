"""A params file is data: papermill writes parameters into notebooks as Python source, so names must be ones a
notebook declares and values inert — for the demo, sweeps and anything else that injects."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from pipeline import course
from pipeline.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]

ATTACKS = {
    "key": "02_training_pipeline:\n  'x = 1; __import__(\"os\").system(\"touch {pwned}\"); y': 1\n",
    "newline key": "01_data_preparation:\n  \"seed\\nimport os; os.system('touch {pwned}')\": 1\n",
    "common key": "common:\n  'epochs = 1\\nimport os\\nos.system(\"touch {pwned}\")\\nz': 1\n",
}


@pytest.mark.parametrize("attack", list(ATTACKS), ids=list(ATTACKS))
def test_demo_refuses_parameter_names_that_are_code(attack: str, tmp_path: Path):
    pwned = tmp_path / "PWNED"
    params = tmp_path / "evil.yaml"
    params.write_text(ATTACKS[attack].format(pwned=pwned))
    done = subprocess.run([sys.executable, "-m", "pipeline.course", "demo", "--params", str(params), "--run-dir",
                           str(tmp_path / "run")], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert not pwned.exists(), "a parameter name ran as code"
    if attack == "common key":  # 'common' only passes names a notebook declares: this one is dropped
        return
    assert done.returncode == 2 and "has no parameter" in done.stderr and "Traceback" not in done.stderr, done.stderr


def test_values_must_be_inert_and_names_declared():
    declared = {"epochs", "learning_rate", "data_path"}
    course.check_parameters("02_training_pipeline", {"epochs": 3, "learning_rate": 0.01, "data_path": "x"}, declared)
    with pytest.raises(ConfigError, match=r"has no parameter 'learning_rat' \(did you mean learning_rate\?\)"):
        course.check_parameters("02_training_pipeline", {"learning_rat": 0.1}, declared)
    import datetime

    for value in (datetime.date(2026, 1, 1), float("nan"), {1: "x"}, object(), [[{"a": {1, 2}}]]):
        with pytest.raises(ConfigError, match="values are not accepted"):
            course.check_parameters("02_training_pipeline", {"epochs": value}, declared)
    course.check_parameters("02_training_pipeline", {"data_path": {"a": [1, 2.5, None, True, "s"]}}, declared)
