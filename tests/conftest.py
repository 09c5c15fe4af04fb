"""Shared fixtures: small real and synthetic datasets, a sandboxed MLflow store, a real MLflow server."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
BUNDLED_CSV = ROOT / "data" / "train.csv"
SOLUTIONS = ROOT / "solutions"

# Nothing a test runs may write mlflow.db into the checkout, or wait minutes on a dead server.
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "3")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
# Figures: the tests' own python draws off-screen (matplotlib falls back to Agg without a display), but nothing
# may reach the kernels papermill, nbval or JupyterLab start from here: they inherit os.environ, and an
# MPLBACKEND=Agg there makes every plt.show() in a lesson draw nothing (which no test would then notice).
os.environ.pop("MPLBACKEND", None)
matplotlib.use("Agg")  # this process only: a call, not an environment variable, so no child inherits it


# ------------------------------------------------------------------------------------------ test tiers
# `make test-fast` runs `-m "not slow"` with PIPELINE_TEST_TIER=fast: unit tests only, no subprocess, server,
# notebook or browser. A test that uses one of these fixtures is slow by definition; any other test that starts
# a process in the fast tier fails, naming itself, so the tier stays honest without anyone keeping a list.
SLOW_FIXTURES = {"demo_run", "mlflow_server", "reference_run"}
# Modules whose every test drives real processes (CLIs, torchrun, kernels, servers, mounts); elsewhere a slow test
# carries @pytest.mark.slow itself.
SLOW_MODULES = {"test_course", "test_notebooks", "test_exercises_01", "test_exercises_02", "test_exercises_03",
                "test_exercises_04", "test_exercises_05", "test_distributed", "test_server", "test_nbexec",
                "test_train_reliability", "test_prepare_cli", "test_hostile_monitor", "test_hostile_prepare",
                "test_train_faults", "test_params_injection", "test_report"}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())) or item.module.__name__ in SLOW_MODULES:
            item.add_marker(pytest.mark.slow)


@pytest.fixture(autouse=True)
def _fast_tier_starts_no_process(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    if os.environ.get("PIPELINE_TEST_TIER") != "fast" or request.node.get_closest_marker("slow"):
        return

    def refuse(self, args, *rest, **options):  # an OSError, as a missing program would be: callers that can do
        raise PermissionError(f"the fast tier starts no process, and {request.node.nodeid} started {str(args)[:120]}: "
                           "mark the test @pytest.mark.slow")  # without one (git for a commit tag) go on
    monkeypatch.setattr(subprocess.Popen, "__init__", refuse)


@pytest.fixture(autouse=True, scope="session")
def _sandbox_mlflow(tmp_path_factory: pytest.TempPathFactory):
    store = tmp_path_factory.mktemp("mlflow")
    os.environ["MLFLOW_TRACKING_URI"] = uri = f"sqlite:///{store / 'mlflow.db'}"
    before = _checkout_mlflow_files()
    yield uri
    wrote = sorted(_checkout_mlflow_files() - before)
    assert not wrote, f"tests wrote MLflow files into the checkout: {wrote[:5]}"


def _checkout_mlflow_files() -> set[str]:
    """What MLflow keeps in the checkout when nothing says where (a user's own runs are left as they are)."""
    found = {str(p) for name in ("mlruns", "mlartifacts") for p in (ROOT / name).rglob("*")}
    return found | {str(p) for p in ROOT.glob("mlflow.db*")}


@pytest.fixture(autouse=True)
def _mlflow_put_back(_sandbox_mlflow: str):
    """Each test starts on the session's sandbox store. `mlflow.set_tracking_uri` (an exercise's answer, a test
    on the server) is process-wide and also sets $MLFLOW_TRACKING_URI: left as it was, a later test in this
    process logs into a store that was another test's (a removed temporary one reads as "readonly database")."""
    yield
    os.environ["MLFLOW_TRACKING_URI"] = _sandbox_mlflow
    if "mlflow" in sys.modules:
        import mlflow
        from mlflow.tracking import fluent

        mlflow.set_tracking_uri(_sandbox_mlflow)
        fluent._active_experiment_id = None


def script_env(**extra: str) -> dict[str, str]:
    """Environment for running a solutions/*.py script in a subprocess (one torch thread: repeatable)."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", MKL_NUM_THREADS="1")
    env.update(extra)
    return env


def run_script(name: str, *args: str, timeout: float = 300, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SOLUTIONS / name), *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, env=script_env(**env), cwd=ROOT)


def make_classification_csv(path: Path, rows: int = 600, seed: int = 0, n_numeric: int = 6,
                            with_categorical: bool = True) -> Path:
    """A learnable synthetic table: numeric + categorical features, some missing values, 3 classes."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(rows, n_numeric))
    score = X[:, 0] + 0.5 * X[:, 1] - X[:, 2]
    label = np.digitize(score, np.quantile(score, [1 / 3, 2 / 3]))
    frame = pd.DataFrame(X, columns=[f"x{i}" for i in range(n_numeric)]).round(5)
    if with_categorical:
        frame["colour"] = rng.choice(["red", "green", "blue"], size=rows)
    frame.loc[rng.choice(rows, size=rows // 20, replace=False), "x3"] = np.nan
    frame["label"] = np.array(["low", "mid", "high"])[label]
    frame.to_csv(path, index=False)
    return path


def make_regression_csv(path: Path, rows: int = 500, seed: int = 1) -> Path:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(rows, 4))
    frame = pd.DataFrame(X, columns=["a", "b", "c", "d"]).round(5)
    frame["kind"] = rng.choice(["p", "q"], size=rows)
    frame["price"] = (3 * X[:, 0] - 2 * X[:, 1] + (frame["kind"] == "p") * 1.5 + rng.normal(0, 0.1, rows)).round(4) * 10
    frame.to_csv(path, index=False)
    return path


@pytest.fixture(scope="session")
def penguins_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bundled dataset, prepared once per session."""
    from pipeline import data

    out = tmp_path_factory.mktemp("prepared") / "penguins"
    data.prepare_dataset(BUNDLED_CSV, out, test_split=0.2, val_split=0.1, seed=42)
    return out


@pytest.fixture(scope="session")
def synthetic_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from pipeline import data

    base = tmp_path_factory.mktemp("synthetic")
    out = base / "prepared"
    data.prepare_dataset(make_classification_csv(base / "synth.csv", rows=600), out, seed=3)
    return out


@pytest.fixture(scope="session")
def regression_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from pipeline import data

    base = tmp_path_factory.mktemp("regression")
    out = base / "prepared"
    data.prepare_dataset(make_regression_csv(base / "reg.csv"), out, seed=3)
    return out


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """`make demo` (lessons 01 -> 04) on smoke parameters, from another working directory, and from a shell
    that exports MPLBACKEND=Agg, as the Makefile once did: the lessons must carry their figures all the same."""
    from pipeline import course

    base = tmp_path_factory.mktemp("demo")
    params = base / "smoke.yaml"
    params.write_text(f"common:\n  report: {base / 'report.html'}\n02_training_pipeline:\n  epochs: 4\n"
                      "03_monitoring:\n  epochs: 3\n")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("MPLBACKEND", "Agg")
        env.chdir(base)
        return course.demo(params, base / "run", log=lambda m: None)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until_answering(process: subprocess.Popen, url: str, log_path: Path, timeout_s: float) -> float:
    """Poll `url` until it answers 200; fail (killing the process) if it exits or stays silent. Returns the seconds."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        if process.poll() is not None:
            pytest.fail(f"the server exited early: {log_path.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return time.monotonic() - started
        except OSError:
            time.sleep(0.25)
    os.killpg(process.pid, 9)
    pytest.fail(f"{url} did not answer in {timeout_s:.0f} s: {log_path.read_text()[-2000:]}")


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory):
    """A real `mlflow server` on 127.0.0.1 and a free port, started once the way `make mlflow-server` starts it
    (`python -m pipeline.server`, which becomes the server: same PID), stopped by PID."""
    base = tmp_path_factory.mktemp("mlflow_server")
    port = free_port()
    log = open(base / "server.log", "w")
    process = subprocess.Popen(
        [sys.executable, "-m", "pipeline.server", "--host", "127.0.0.1", "--port", str(port),
         "--backend-store-uri", f"sqlite:///{base / 'server.db'}", "--artifacts-destination", str(base / "artifacts")],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    uri = f"http://127.0.0.1:{port}"
    wait_until_answering(process, f"{uri}/health", base / "server.log", timeout_s=120)
    yield uri
    os.killpg(process.pid, 15)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, 9)
    log.close()
