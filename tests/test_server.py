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
    for weak in ("password1234", "short", " " * 12, "a" * 12):
        done = _start("--host", "0.0.0.0", "--auth", MLFLOW_AUTH_ADMIN_PASSWORD=weak)
        assert done.returncode == 2 and "the admin password is weak" in done.stderr, weak
    ini = tmp_path / "auth.ini"
    ini.write_text("[mlflow]\nadmin_username = admin\nadmin_password = password1234\n")
    assert "well-known" in _start("--host", "0.0.0.0", "--auth", MLFLOW_AUTH_CONFIG_PATH=str(ini)).stderr


@pytest.mark.parametrize("password, problem", [
    ("            ", "whitespace"), ("aaaaaaaaaaaaaaaa", "guessable"), ("abababababababab", "guessable"),
    ("Password1234", "well-known"), ("admin", "well-known"), ("x", "shorter"),
    ("123412341234", "guessable"), ("correct horse battery staple", None), ("Tr0ub4dor&3xyz", None)])
def test_the_password_is_judged_by_an_entropy_estimate(password: str, problem: str | None):
    found = server.password_problem(password)
    assert (found is None) if problem is None else (problem in found), found


def test_store_secrets_are_masked_and_kept_off_the_command_line():
    uri = "postgresql://mlflow:s3cr3t-pass@db:5432/mlflow"
    assert server.masked(uri) == "postgresql://mlflow:***@db:5432/mlflow"
    assert server.masked("sqlite:///mlflow-server.db") == "sqlite:///mlflow-server.db"
    args = argparse.Namespace(host="127.0.0.1", port=5000, workers=1, auth=False, backend_store_uri=uri,
                              artifacts_destination="./mlartifacts")
    assert "s3cr3t" not in " ".join(server.command(args))
    assert server.environment(args)["MLFLOW_BACKEND_STORE_URI"] == uri


def test_a_strong_password_passes_the_checks_and_the_command_uses_basic_auth(monkeypatch):
    monkeypatch.setenv("MLFLOW_AUTH_ADMIN_PASSWORD", "correct horse battery staple")
    server.check("0.0.0.0", auth=True)  # no refusal
    server.check("127.0.0.1", auth=False)
    server.check("::1", auth=False)
    args = argparse.Namespace(host="0.0.0.0", port=5000, workers=1, auth=True,
                              backend_store_uri="postgresql://mlflow@db/mlflow", artifacts_destination="./mlartifacts")
    cmd = server.command(args)
    assert cmd[1:3] == ["server", "--host"] and cmd[-2:] == ["--app-name", "basic-auth"]
    assert "postgresql://mlflow@db/mlflow" not in cmd and "correct horse" not in " ".join(cmd)  # no secret in argv
    assert server.environment(args)["MLFLOW_BACKEND_STORE_URI"] == "postgresql://mlflow@db/mlflow"


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



@pytest.mark.slow
def test_a_team_server_with_auth_starts_takes_a_run_with_credentials_and_refuses_one_without(tmp_path: Path,
                                                                                           penguins_dir: Path):
    """End to end: `--auth` on loopback (the same app as beyond it), a secret store URI kept off `ps`, a run logged
    with the admin's credentials, and a client without them refused."""
    import os
    import signal
    import time
    import urllib.request

    from conftest import free_port, run_script

    port = free_port()
    store = f"sqlite:///{tmp_path / 'team.db'}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env.update(MLFLOW_AUTH_ADMIN_PASSWORD="correct horse battery staple", MLFLOW_BACKEND_STORE_URI=store,
               MLFLOW_AUTH_CONFIG_PATH=str(tmp_path / "auth.ini"))
    (tmp_path / "auth.ini").write_text(f"[mlflow]\ndefault_permission = READ\ndatabase_uri = sqlite:///"
                                       f"{tmp_path / 'auth.db'}\nadmin_username = admin\n"
                                       "admin_password = correct horse battery staple\nauthorization_function = "
                                       "mlflow.server.auth:authenticate_request_basic_auth\n")
    process = subprocess.Popen([sys.executable, "-m", "pipeline.server", "--port", str(port), "--auth",
                                "--artifacts-destination", str(tmp_path / "art")], env=env, cwd=tmp_path,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(url + "/health", timeout=2)
                break
            except Exception:
                assert process.poll() is None, process.stderr.read()[-2000:]
                time.sleep(0.5)
        else:
            pytest.fail("the auth server did not become healthy in 120 s")
        cmdline = Path(f"/proc/{process.pid}/cmdline").read_bytes().decode(errors="replace")
        assert "team.db" not in cmdline and "basic-auth" in cmdline   # the store URI is not on the command line
        args = ["--data-dir", penguins_dir, "--epochs", "1", "--save-dir", tmp_path / "s", "--tracking-uri", url,
                "--no-tensorboard", "--system-interval", "0", "--no-baselines"]
        done = run_script("train_pipeline.py", *args, MLFLOW_TRACKING_USERNAME="admin",
                          MLFLOW_TRACKING_PASSWORD="correct horse battery staple")
        assert done.returncode == 0, done.stderr[-2000:]
        run_id = json.loads((tmp_path / "s" / "metrics.json").read_text())["run"]["mlflow"]["run_id"]
        assert run_id, done.stderr[-2000:]
        from mlflow import MlflowClient
        from mlflow.exceptions import MlflowException

        os.environ["MLFLOW_TRACKING_USERNAME"], os.environ["MLFLOW_TRACKING_PASSWORD"] = "admin", "wrong password!!"
        try:
            with pytest.raises(MlflowException):
                MlflowClient(url).get_run(run_id)          # refused without the right credentials
            os.environ["MLFLOW_TRACKING_PASSWORD"] = "correct horse battery staple"
            run = MlflowClient(url).get_run(run_id)      # logged with the admin's credentials
            assert run.data.params["learning_rate"] == "0.001" and "val_loss" in run.data.metrics
        finally:
            os.environ.pop("MLFLOW_TRACKING_USERNAME", None)
            os.environ.pop("MLFLOW_TRACKING_PASSWORD", None)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
