"""The team tracking server: safe defaults (loopback, or authentication with a real password), and several
trainings at once on one server, each received whole."""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline import server

from conftest import ROOT


def _start(*args: str, **env: str) -> subprocess.CompletedProcess:
    import os

    clean = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_AUTH")}
    return subprocess.run([sys.executable, "-m", "pipeline.server", *args], capture_output=True, text=True,
                          timeout=60, env={**clean, **env}, cwd=ROOT)


@pytest.mark.parametrize("host", ["0.0.0.0", "192.0.2.10", "::", "team-box.example"])
def test_refuses_to_listen_beyond_loopback_without_auth(host: str):
    done = _start("--host", host, "--port", "1")
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert f"refusing to listen on {host} without authentication" in done.stderr and "AUTH=1" in done.stderr


def test_auth_beyond_loopback_needs_a_real_admin_password(tmp_path: Path):
    assert "needs an admin password" in _start("--host", "0.0.0.0", "--auth").stderr
    for weak in ("password1234", "short"):
        done = _start("--host", "0.0.0.0", "--auth", MLFLOW_AUTH_ADMIN_PASSWORD=weak)
        assert done.returncode == 2 and "well-known or short" in done.stderr
    ini = tmp_path / "auth.ini"
    ini.write_text("[mlflow]\nadmin_username = admin\nadmin_password = password1234\n")
    assert "well-known or short" in _start("--host", "0.0.0.0", "--auth", MLFLOW_AUTH_CONFIG_PATH=str(ini)).stderr


def test_a_strong_password_passes_the_checks_and_the_command_uses_basic_auth(monkeypatch):
    monkeypatch.setenv("MLFLOW_AUTH_ADMIN_PASSWORD", "correct horse battery staple")
    server.check("0.0.0.0", auth=True)  # no refusal
    server.check("127.0.0.1", auth=False)
    server.check("::1", auth=False)
    args = argparse.Namespace(host="0.0.0.0", port=5000, workers=1, auth=True,
                              backend_store_uri="postgresql://mlflow@db/mlflow", artifacts_destination="./mlartifacts")
    cmd = server.command(args)
    assert cmd[1:3] == ["server", "--host"] and cmd[-2:] == ["--app-name", "basic-auth"]
    assert "postgresql://mlflow@db/mlflow" in cmd and "correct horse" not in " ".join(cmd)  # no secret in argv


def test_makefile_target_runs_the_guarded_server():
    text = (ROOT / "Makefile").read_text()
    assert "mlflow-server: setup\n\t$(PY) -m pipeline.server --host $(HOST)" in text
    dry = subprocess.run(["make", "-n", "mlflow-server", "HOST=0.0.0.0", "AUTH=1"], capture_output=True, text=True,
                         cwd=ROOT)
    assert "-m pipeline.server --host 0.0.0.0" in dry.stdout and "--auth" in dry.stdout


def test_several_trainings_at_once_each_arrive_whole(mlflow_server: str, penguins_dir: Path, tmp_path: Path):
    from mlflow import MlflowClient

    processes = [subprocess.Popen([sys.executable, str(ROOT / "solutions" / "train_pipeline.py"), "--data-dir",
                                   str(penguins_dir), "--epochs", "4", "--save-dir", str(tmp_path / f"s{i}"),
                                   "--tracking-uri", mlflow_server, "--experiment-name", "team",
                                   "--run-name", f"member-{i}", "--no-baselines", "--log-every", "2"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for i in range(3)]
    for p in processes:
        assert p.wait(timeout=300) == 0, p.stderr.read()[-2000:]
    client = MlflowClient(mlflow_server)
    runs = client.search_runs([client.get_experiment_by_name("team").experiment_id])
    assert sorted(r.info.run_name for r in runs) == ["member-0", "member-1", "member-2"]
    for i in range(3):
        m = json.loads((tmp_path / f"s{i}" / "metrics.json").read_text())
        history = client.get_metric_history(m["run"]["mlflow"]["run_id"], "val_loss")
        assert sorted(p.step for p in history) == [e["step"] for e in m["epochs"]]  # every epoch, once
        assert len(client.get_metric_history(m["run"]["mlflow"]["run_id"], "step_loss")) == m["progress"]["global_step"] // 2

