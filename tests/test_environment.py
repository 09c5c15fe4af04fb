"""The tested stack from every front door: the Makefile, environment.yml and constraints.txt agree on torch and
on every version they both pin."""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def pins(lines: list[str]) -> dict[str, str]:
    found = {}
    for line in lines:
        match = re.fullmatch(r"\s*(?:-\s+)?([A-Za-z0-9_.\-]+)==([^\s#]+)\s*(?:#.*)?", line)
        if match:
            found[match.group(1).lower().replace("_", "-")] = match.group(2)
    return found


@pytest.mark.slow
def test_the_lock_pins_torch_and_the_makefile_installs_that_torch():
    lock = pins((ROOT / "constraints.txt").read_text().splitlines())
    assert "torch" in lock, "constraints.txt must pin torch: resolving it freely picks a newer CUDA build"
    spec = subprocess.run(["make", "--no-print-directory", "-s", "torch-spec"], cwd=ROOT, capture_output=True,
                          text=True, timeout=30)
    assert spec.returncode == 0, spec.stderr
    assert spec.stdout.strip() == f"torch=={lock['torch']}"


def test_environment_yml_installs_the_locked_versions_and_the_cpu_torch():
    text = (ROOT / "environment.yml").read_text()
    pip_lines = [line.strip()[2:].strip() for line in text.splitlines() if line.strip().startswith("- ")]
    assert "-c constraints.txt" in pip_lines, "environment.yml must install under the tested lock"
    assert any("download.pytorch.org/whl/cpu" in line for line in pip_lines), "torch's CPU wheel index is missing"
    lock = pins((ROOT / "constraints.txt").read_text().splitlines())
    env = pins(pip_lines)
    assert env.get("torch") == lock["torch"]
    assert {name: version for name, version in env.items() if lock.get(name, version) != version} == {}
    python = re.search(r"-\s*python=(\d+\.\d+)", text)
    assert python and python.group(1) == "3.11", "the lock was tested on Python 3.11"
