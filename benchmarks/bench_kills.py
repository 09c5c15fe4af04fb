"""Benchmark: random SIGKILLs against a run logging to a real MLflow server leave exactly one MLflow run per
training run, with every epoch's and step's value once (the goal of issue 24: 20 trials out of 20).

    python benchmarks/bench_kills.py [--trials 20] [--kills 3] [--seed 7]

One `mlflow server` (as `make mlflow-server` starts it) on 127.0.0.1 for all trials. Each trial prepares a
6,000-row table, starts `train_pipeline.py` (5 epochs, batch 16, steps logged every 3), and kills it with
SIGKILL `--kills` times: first right at its first checkpoint (the server's answer may not have reached it), then
each time at a random moment of the epoch after the next checkpoint. (A kill before the first checkpoint has its
own test: tests/test_tracking.py::test_a_run_killed_before_its_first_checkpoint_keeps_its_one_mlflow_run.) The same command then finishes the run. A trial passes when the
experiment holds one run, FINISHED, whose val_loss and step_loss histories are the local logs' values, each once.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(base: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "pipeline.server", "--host", "127.0.0.1", "--port", str(port),
         "--backend-store-uri", f"sqlite:///{base / 'server.db'}", "--artifacts-destination", str(base / "artifacts")],
        stdout=open(base / "server.log", "w"), stderr=subprocess.STDOUT, start_new_session=True)
    uri, deadline = f"http://127.0.0.1:{port}", time.monotonic() + 180
    while time.monotonic() < deadline:
        if process.poll() is not None:
            sys.exit(f"the MLflow server exited: {(base / 'server.log').read_text()[-1500:]}")
        try:
            with urllib.request.urlopen(f"{uri}/health", timeout=2) as answer:
                if answer.status == 200:
                    return process, uri
        except OSError:
            time.sleep(0.25)
    os.killpg(process.pid, signal.SIGKILL)
    sys.exit("the MLflow server did not answer in 180 s")


def trial(n: int, base: Path, uri: str, rng: random.Random, kills: int, prepared: Path) -> tuple[bool, str]:
    from mlflow import MlflowClient

    from pipeline import checkpoint, fileio

    out, experiment = base / f"run{n}", f"kills-{n}"
    cmd = [sys.executable, str(ROOT / "solutions" / "train_pipeline.py"), "--data-dir", str(prepared), "--epochs",
           "5", "--batch-size", "16", "--save-dir", str(out), "--tracking-uri", uri, "--experiment-name", experiment,
           "--log-every", "3", "--system-interval", "0.5", "--no-baselines"]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")

    def last_step() -> int:
        try:
            return checkpoint.load_checkpoint(out / "last.pt")["state"]["global_step"]
        except Exception:
            return 0
    killed = 0
    for k in range(kills):
        process = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        start, deadline = last_step(), time.monotonic() + 120
        while time.monotonic() < deadline and process.poll() is None and last_step() <= start:
            time.sleep(0.02)
        if k > 0:
            time.sleep(rng.uniform(0.1, 1.0))  # into the next epoch: steps logged, not yet checkpointed
        if process.poll() is None:  # the first kill comes right at the first checkpoint: the run may be unknown yet
            process.kill()
            killed += 1
        process.wait(timeout=60)
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    if done.returncode != 0:
        return False, f"the finishing run exited {done.returncode}: {done.stderr[-300:]}"
    m = json.loads((out / "metrics.json").read_text())
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    local = list(fileio.read_jsonl(out / "logs" / "metrics.jsonl"))

    def history(run_id: str, key: str) -> list[tuple[int, float]]:
        return sorted((p.step, round(p.value, 6)) for p in client.get_metric_history(run_id, key))
    problems = []
    if len(runs) != 1:
        problems.append(f"{len(runs)} MLflow runs")
    run_id = m["run"]["mlflow"]["run_id"]
    if client.get_run(run_id).info.status != "FINISHED":
        problems.append(f"status {client.get_run(run_id).info.status}")
    if history(run_id, "val_loss") != [(e["step"], round(e["val_loss"], 6)) for e in m["epochs"]]:
        problems.append("val_loss history differs from metrics.json")
    if history(run_id, "step_loss") != [(r["step"], round(r["loss"], 6)) for r in local if r["type"] == "step"]:
        problems.append("step_loss history differs from the local log")
    return not problems, f"{killed} kill(s), {len(m['run']['resumed'])} resume(s): " + ("; ".join(problems) or "ok")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--kills", type=int, default=3, help="SIGKILLs per trial before the finishing run")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    from conftest import make_classification_csv
    from pipeline import data

    with tempfile.TemporaryDirectory(prefix="bench-kills-") as folder:
        base = Path(folder)
        server, uri = start_server(base)
        try:
            prepared = base / "prepared"
            data.prepare_dataset(make_classification_csv(base / "t.csv", rows=6000, seed=3, n_numeric=10), prepared,
                                 seed=1)
            rng, passed, started = random.Random(args.seed), 0, time.monotonic()
            for n in range(args.trials):
                ok, said = trial(n, base, uri, rng, args.kills, prepared)
                passed += ok
                print(f"trial {n + 1:2d}: {'pass' if ok else 'FAIL'}  {said}", flush=True)
        finally:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=30)
    print(f"{passed}/{args.trials} trials left exactly one FINISHED MLflow run with every value once "
          f"({time.monotonic() - started:.0f} s); goal {args.trials}/{args.trials}: "
          + ("met" if passed == args.trials else "NOT met"))
    return 0 if passed == args.trials else 1


if __name__ == "__main__":
    sys.exit(main())
