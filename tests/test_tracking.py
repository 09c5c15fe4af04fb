"""Tracking: the fan-out, an unreachable MLflow server, a real one, and replay after an outage."""
from __future__ import annotations

import json
import time
import warnings
from pathlib import Path

import pytest

from pipeline import tracking, train

from conftest import free_port, run_script


class _Broken:
    def log_dict(self, metrics, step, kind):
        raise RuntimeError("disk on fire")

    def log_event(self, record):
        pass

    def close(self, status):
        pass


class _Recorder:
    def __init__(self):
        self.calls = []

    def log_dict(self, metrics, step, kind):
        self.calls.append((kind, step, dict(metrics)))

    def log_event(self, record):
        self.calls.append(("event", record["type"], record))

    def close(self, status):
        self.calls.append(("close", status, None))


def test_tracker_drops_a_failing_sink_and_keeps_the_others():
    good = _Recorder()
    tracker = tracking.Tracker([_Broken(), good])
    with pytest.warns(UserWarning, match="_Broken failed .*disk on fire"):
        tracker.log_dict({"loss": 1.0}, 1)
    tracker.log_dict({"loss": 0.5}, 2)
    tracker.close("completed")
    assert good.calls == [("step", 1, {"loss": 1.0}), ("step", 2, {"loss": 0.5}), ("close", "completed", None)]


@pytest.mark.slow
def test_unreachable_server_never_stalls_training(penguins_dir: Path, tmp_path: Path):
    """A closed loopback port: training completes promptly with one warning, local logs complete."""
    uri = f"http://127.0.0.1:{free_port()}"
    started = time.monotonic()
    result = run_script("train_pipeline.py", "--data-dir", penguins_dir, "--epochs", "3", "--save-dir",
                        tmp_path / "s", "--tracking-uri", uri, "--system-interval", "0.2")
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stderr.count("MLflow tracking at") == 1, result.stderr
    assert "did not take" in result.stderr  # said once at the end: how much was not sent
    m = json.loads((tmp_path / "s" / "metrics.json").read_text())
    assert m["run"]["status"] == "completed" and len(m["epochs"]) == 3 and m["run"]["mlflow"] is None
    # the whole run, MLflow close deadline included, ends well before MLflow's default ~4 min of retries
    assert elapsed < 90, elapsed


def test_real_server_run_params_metrics_artifacts_and_resume_reattaches(mlflow_server: str, penguins_dir: Path,
                                                                        tmp_path: Path):
    from mlflow import MlflowClient

    args = ["--data-dir", penguins_dir, "--save-dir", tmp_path / "s", "--tracking-uri", mlflow_server,
            "--experiment-name", "tests", "--run-name", "server-run", "--log-every", "2",
            "--register-model", "penguin-classifier"]
    first = run_script("train_pipeline.py", *args, "--epochs", "2")
    assert first.returncode == 0, first.stderr[-3000:]
    second = run_script("train_pipeline.py", *args, "--epochs", "3")
    assert second.returncode == 0, second.stderr[-3000:]
    m = json.loads((tmp_path / "s" / "metrics.json").read_text())
    run_id = m["run"]["mlflow"]["run_id"]
    client = MlflowClient(mlflow_server)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == "server-run"
    assert run.data.params["learning_rate"] == "0.001" and run.data.params["hidden_sizes"] == "[256, 128]"
    val = client.get_metric_history(run_id, "val_loss")
    assert sorted(p.step for p in val) == [8, 16, 24]  # one run across the resume, one value per epoch
    assert [round(p.value, 6) for p in sorted(val, key=lambda p: p.step)] == [round(e["val_loss"], 6) for e in m["epochs"]]
    assert len(client.get_metric_history(run_id, "step_loss")) >= 10
    # MLflow's System metrics tab, under the names MLflow's own system-metrics logging uses
    assert client.get_metric_history(run_id, "system/cpu_utilization_percentage")
    assert client.get_metric_history(run_id, "system/system_memory_usage_megabytes")
    assert client.get_metric_history(run_id, "system/process_memory_rss_megabytes")
    assert not [k for k in run.data.metrics if k in ("system/rss_mb", "system/ram_total_mb")]
    assert {"test_accuracy", "test_f1_macro", "test_loss"} <= set(run.data.metrics)  # sortable in the UI
    assert run.data.metrics["test_accuracy"] == pytest.approx(m["test"]["accuracy"])
    low, high = m["test"]["intervals"]["balanced_accuracy"]
    assert run.data.metrics["test_balanced_accuracy_ci_low"] == pytest.approx(low)
    assert run.data.metrics["test_balanced_accuracy_ci_high"] == pytest.approx(high)
    assert run.data.tags["verdict.outcome"] == m["verdict"]["outcome"]
    assert run.data.tags["verdict.baseline"] == m["verdict"]["baseline"]
    # the best epoch's scores, so that ranking by them picks what the engine kept and exported
    assert run.data.metrics["best_val_loss"] == pytest.approx(m["best"]["values"]["best_val_loss"])
    assert run.data.metrics["best_epoch"] == m["best"]["epoch"]
    assert run.data.tags["mlflow.source.name"] == "solutions/train_pipeline.py"  # relative to the repository
    assert len(run.data.tags["mlflow.source.git.commit"]) == 40
    artifacts = {a.path for a in client.list_artifacts(run_id)}
    assert {"metrics.json", "config.yaml", "model_weights"} <= artifacts
    assert run.inputs.dataset_inputs and run.inputs.dataset_inputs[0].dataset.name == "train"
    assert len(client.search_runs([run.info.experiment_id])) == 1
    import mlflow

    mlflow.set_tracking_uri(mlflow_server)
    models = [m for m in mlflow.search_logged_models(experiment_ids=[run.info.experiment_id], output_format="list")
              if m.source_run_id == run_id]
    assert models, "the model was not logged"
    signature = mlflow.models.get_model_info(models[-1].model_uri).signature  # the CSV's raw columns (serving.py)
    assert [c["name"] for c in signature.inputs.to_dict()] == ["island", "bill_length_mm", "bill_depth_mm",
                                                               "flipper_length_mm", "body_mass_g", "sex", "year"]
    import pandas as pd

    from pipeline import predict
    from conftest import BUNDLED_CSV

    raw = pd.read_csv(BUNDLED_CSV)  # through the server's artefact store: raw rows in, predict's classes out
    latest = max(models, key=lambda m: m.creation_timestamp)  # each finish logs one: the 3-epoch run's is last
    served = mlflow.pyfunc.load_model(latest.model_uri).predict(raw)
    assert served["prediction"].tolist() == predict.predict_csv(tmp_path / "s" / "model.safetensors",
                                                                BUNDLED_CSV)["prediction"].tolist()
    # the Model metrics tab: the network's own scores and the kept epoch's, not the ten baselines'
    on_model = {m.key: m.value for m in client.get_logged_model(latest.model_id).metrics}
    assert on_model["test_balanced_accuracy"] == pytest.approx(m["test"]["balanced_accuracy"])
    assert on_model["test_balanced_accuracy_ci_low"] == pytest.approx(low)
    assert on_model["best_val_loss"] == pytest.approx(m["best"]["values"]["best_val_loss"])
    assert not [k for k in on_model if k.startswith("baseline_")]
    versions = client.search_model_versions("name='penguin-classifier'")
    assert versions and {v.run_id for v in versions} == {run_id}  # registered, from this run


def test_buffered_metrics_are_replayed_after_an_outage(mlflow_server: str, monkeypatch):
    """The server refuses the first sends; the sink warns once, keeps them, and delivers all later."""
    from mlflow import MlflowClient

    real = MlflowClient.log_batch
    failures = {"left": 3}

    def flaky(self, *args, **kwargs):
        if kwargs.get("metrics") and failures["left"] > 0:
            failures["left"] -= 1
            raise ConnectionError("server restarting")
        return real(self, *args, **kwargs)
    monkeypatch.setattr(MlflowClient, "log_batch", flaky)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sink = tracking.MlflowSink(mlflow_server, "replay", "replay-run", close_timeout_s=60)
        for step in range(1, 21):
            sink.log_dict({"loss": 1.0 / step}, step, "step")
            time.sleep(0.05)
        sink.close("completed")
    assert failures["left"] == 0
    assert sum("unavailable" in str(w.message) for w in caught) == 1
    history = MlflowClient(mlflow_server).get_metric_history(sink.run_id, "step_loss")
    assert sorted(p.step for p in history) == list(range(1, 21))
    assert MlflowClient(mlflow_server).get_run(sink.run_id).info.status == "FINISHED"


def test_failed_and_interrupted_runs_end_with_the_right_mlflow_status(mlflow_server: str):
    from mlflow import MlflowClient

    for ours, theirs in (("failed", "FAILED"), ("interrupted", "KILLED")):
        sink = tracking.MlflowSink(mlflow_server, "status", f"{ours}-run")
        sink.log_dict({"loss": 1.0}, 1, "step")
        sink.close(ours)
        assert MlflowClient(mlflow_server).get_run(sink.run_id).info.status == theirs


def test_a_run_killed_before_a_checkpoint_held_its_mlflow_id_is_found_again_by_its_key(tmp_path: Path):
    """The server made the run, then the process died before a checkpoint recorded the run's id: the resume
    (same run key, no id) logs into that run, adding only the params it lacks; another key gets its own run."""
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    killed = tracking.MlflowSink(uri, "keys", "r", tags={tracking.RUN_KEY_TAG: "k1"}, params={"lr": 0.1, "epochs": 3})
    killed.log_dict({"loss": 1.0}, 1, "step")
    assert killed.connected.wait(60)
    client = MlflowClient(uri)
    deadline = time.monotonic() + 30
    while "lr" not in client.get_run(killed.run_id).data.params and time.monotonic() < deadline:
        time.sleep(0.1)
    # ... and it is never closed: a SIGKILL. Its resume, with --epochs raised (a resumable setting):
    resumed = tracking.MlflowSink(uri, "keys", "r", tags={tracking.RUN_KEY_TAG: "k1"},
                                  params={"lr": 0.1, "epochs": 5, "seed": 1})
    resumed.log_dict({"loss": 0.5}, 2, "step")
    resumed.close("completed")
    other = tracking.MlflowSink(uri, "keys", "r", tags={tracking.RUN_KEY_TAG: "k2"})
    other.close("completed")
    assert resumed.run_id == killed.run_id != other.run_id
    experiment = client.get_experiment_by_name("keys").experiment_id
    assert len(client.search_runs([experiment])) == 2
    run = client.get_run(resumed.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params == {"lr": "0.1", "epochs": "3", "seed": "1"}  # kept as created, the missing one added
    assert _history(client, run.info.run_id, "step_loss") == [(1, 1.0), (2, 0.5)]


def test_resource_samples_take_mlflow_own_system_metric_names():
    import psutil

    from pipeline import mlflow_sink, system

    named = mlflow_sink.system_names(tracking.flatten_sample(
        {**system.sample_once(psutil.Process(), None), "gpus": [{"index": 0, "name": "H100", "util_percent": 93.0, "mem_used_mb": 4000.0,
                                      "mem_total_mb": 8000.0, "temperature_c": 61.0, "power_w": 300.0}]}))
    assert {"cpu_utilization_percentage", "system_memory_usage_megabytes", "system_memory_usage_percentage",
            "process_cpu_utilization_percentage", "process_memory_rss_megabytes"} <= set(named)
    assert {k: v for k, v in named.items() if k.startswith("gpu_")} == {
        "gpu_0_utilization_percentage": 93.0, "gpu_0_memory_usage_megabytes": 4000.0,
        "gpu_0_memory_usage_percentage": 50.0, "gpu_0_temperature_celsius": 61.0, "gpu_0_power_usage_watts": 300.0}
    assert not [k for k in named if "total" in k]


def test_the_source_is_the_script_in_its_repository_or_the_notebook(tmp_path: Path, monkeypatch):
    import sys

    from pipeline import mlflow_sink

    script = tmp_path / "repo" / "solutions" / "train.py"
    script.parent.mkdir(parents=True)
    script.write_text("")
    monkeypatch.delitem(sys.modules, "ipykernel", raising=False)
    assert mlflow_sink.source_name(script, tmp_path / "repo") == "solutions/train.py"
    assert mlflow_sink.source_name(script, None) == str(script)
    assert mlflow_sink.source_name(None, None) == "python"
    monkeypatch.setitem(sys.modules, "ipykernel", object())
    monkeypatch.setenv("JPY_SESSION_NAME", "/home/me/course/notebooks/02_training_pipeline.ipynb")
    assert mlflow_sink.source_name(script, tmp_path / "repo") == "/home/me/course/notebooks/02_training_pipeline.ipynb"
    monkeypatch.delenv("JPY_SESSION_NAME")
    assert mlflow_sink.source_name(script, tmp_path / "repo") == "notebook"


def test_the_experiment_opens_on_training_runs_and_a_run_says_who_made_it(tmp_path: Path):
    """MLflow 3's UI opens an experiment without a kind on its GenAI traces overview, and shows "Created by -"
    for a run made through the client API without mlflow.user."""
    import getpass

    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    sink = tracking.MlflowSink(uri, "kinds", "r")
    sink.log_dict({"loss": 1.0}, 1, "step")
    sink.close("completed")
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("kinds")
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    assert experiment.artifact_location == (tmp_path / "mlartifacts").as_uri()
    assert client.get_run(sink.run_id).data.tags["mlflow.user"] == getpass.getuser()


def test_a_run_killed_between_its_final_record_and_the_mlflow_close_is_closed_by_the_same_command(
        penguins_dir: Path, tmp_path: Path):
    """metrics.json said "completed" but the MLflow run was still RUNNING (a SIGKILL between the two): the same
    command redoes only the finish, and the run ends FINISHED with every value once; then there is nothing to do."""
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    settings = dict(data_dir=str(penguins_dir), save_dir=str(tmp_path / "s"), epochs=2, tracking_uri=uri,
                    experiment_name="closing", tensorboard=False, system_interval=0, progress="off", baselines=False)
    first = train.run(train.make_config(settings), log=lambda m: None)
    run_id = first.metrics["run"]["mlflow"]["run_id"]
    assert first.metrics["run"]["mlflow"]["closed"] is True
    client = MlflowClient(uri)
    client.update_run(run_id, status="RUNNING")  # as the kill left it ...
    record = json.loads((tmp_path / "s" / "metrics.json").read_text())
    record["run"]["mlflow"]["closed"] = False    # ... with the record written before the close
    (tmp_path / "s" / "metrics.json").write_text(json.dumps(record))
    said: list[str] = []
    again = train.run(train.make_config(settings), log=said.append)
    assert again.status == "completed" and not any(m.startswith("nothing to do") for m in said), said
    assert client.get_run(run_id).info.status == "FINISHED"
    assert again.metrics["run"]["mlflow"] == {**first.metrics["run"]["mlflow"], "closed": True}
    assert len(client.search_runs([client.get_experiment_by_name("closing").experiment_id])) == 1
    assert [p.step for p in client.get_metric_history(run_id, "val_loss")] == [e["step"] for e in record["epochs"]]
    assert again.metrics["test"] == first.metrics["test"]
    models = client.search_logged_models(experiment_ids=[client.get_run(run_id).info.experiment_id])
    assert [m.source_run_id for m in models] == [run_id], "the model is logged once"
    said.clear()
    train.run(train.make_config(settings), log=said.append)
    assert any(m.startswith("nothing to do") for m in said), said


def test_tensorboard_events_are_readable(penguins_dir: Path, tmp_path: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    train.run(train.make_config(dict(data_dir=str(penguins_dir), save_dir=str(tmp_path / "s"), epochs=2,
                                     mlflow=False, system_interval=0.1, progress="off", log_every=2)),
              log=lambda m: None)
    events = EventAccumulator(str(tmp_path / "s" / "logs"))
    events.Reload()
    assert {"batch_loss", "system/rss_mb"} <= set(events.Tags()["scalars"])  # x = global step
    validation = EventAccumulator(str(tmp_path / "s" / "logs" / "validation"))
    validation.Reload()
    assert {"epoch_loss", "epoch_accuracy"} <= set(validation.Tags()["scalars"])  # x = epoch (test_tensorboard.py)
    assert [e.step for e in validation.Scalars("epoch_loss")] == [1, 2]


def _history(client, run_id: str, key: str) -> list[tuple[int, float]]:
    return sorted((p.step, round(p.value, 6)) for p in client.get_metric_history(run_id, key))


def test_sigkill_and_resume_leave_every_metric_on_the_server_exactly_once(mlflow_server: str, tmp_path: Path):
    """Kills at random points: the server ends with every epoch and step value once, as the local log has it
    (values are held until a checkpoint covers them; a resume sends what the server lacks)."""
    import random
    import subprocess
    import sys

    from mlflow import MlflowClient

    from conftest import ROOT, make_classification_csv, script_env
    from pipeline import checkpoint, data, fileio

    data.prepare_dataset(make_classification_csv(tmp_path / "t.csv", rows=6000, seed=3, n_numeric=10),
                         tmp_path / "prepared", seed=1)
    out = tmp_path / "run"
    cmd = [sys.executable, str(ROOT / "solutions" / "train_pipeline.py"), "--data-dir", str(tmp_path / "prepared"),
           "--epochs", "5", "--batch-size", "16", "--save-dir", str(out), "--tracking-uri", mlflow_server,
           "--experiment-name", "kills", "--log-every", "3", "--system-interval", "0.5", "--no-baselines"]
    rng, kills = random.Random(7), 0

    def last_step() -> int:
        try:
            return checkpoint.load_checkpoint(out / "last.pt")["state"]["global_step"]
        except Exception:
            return 0
    for attempt in range(3):
        with open(tmp_path / f"stderr-{attempt}.txt", "wb") as stderr:
            process = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=stderr, env=script_env())
        start, deadline = last_step(), time.monotonic() + 120
        while time.monotonic() < deadline and process.poll() is None and last_step() <= start:
            time.sleep(0.05)
        time.sleep(rng.uniform(0.1, 1.0))  # into the next epoch: steps logged but not yet checkpointed
        if process.poll() is None:
            process.kill()
            kills += 1
        process.wait(timeout=60)
    assert kills >= 2
    done = subprocess.run(cmd, capture_output=True, text=True, env=script_env(), timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    m = json.loads((out / "metrics.json").read_text())
    said = "\n".join(f"--- try {n}:\n" + (tmp_path / f"stderr-{n}.txt").read_text()[-1500:] for n in range(3))
    assert len(m["run"]["resumed"]) >= 2, f"{m['run']['resumed']}\n{said}\n--- last:\n{done.stderr[-1500:]}"
    client = MlflowClient(mlflow_server)
    run_id = m["run"]["mlflow"]["run_id"]
    assert len(client.search_runs([client.get_experiment_by_name("kills").experiment_id])) == 1
    local = list(fileio.read_jsonl(out / "logs" / "metrics.jsonl"))
    assert _history(client, run_id, "val_loss") == [(e["step"], round(e["val_loss"], 6)) for e in m["epochs"]]
    assert _history(client, run_id, "step_loss") == [(r["step"], round(r["loss"], 6)) for r in local
                                                     if r["type"] == "step"]


@pytest.mark.slow
def test_a_run_killed_before_its_first_checkpoint_keeps_its_one_mlflow_run(tmp_path: Path):
    """SIGKILL after the MLflow run exists but before any checkpoint: the same command starts afresh (nothing to
    continue) and takes over that run by its key, so the experiment ends with one FINISHED run, not an orphan."""
    import subprocess
    import sys

    from mlflow import MlflowClient

    from conftest import ROOT, make_classification_csv, script_env
    from pipeline import data

    data.prepare_dataset(make_classification_csv(tmp_path / "t.csv", rows=20000, seed=3, n_numeric=10),
                         tmp_path / "prepared", seed=1)
    uri, out = f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path / "run"
    cmd = [sys.executable, str(ROOT / "solutions" / "train_pipeline.py"), "--data-dir", str(tmp_path / "prepared"),
           "--epochs", "2", "--batch-size", "4", "--save-dir", str(out), "--tracking-uri", uri,
           "--experiment-name", "early", "--no-baselines", "--system-interval", "0"]
    process = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=script_env())
    client, deadline, runs = MlflowClient(uri), time.monotonic() + 120, []
    while time.monotonic() < deadline and process.poll() is None and not runs:
        experiment = client.get_experiment_by_name("early") if (tmp_path / "mlflow.db").exists() else None
        runs = client.search_runs([experiment.experiment_id]) if experiment else []
        time.sleep(0.1)
    process.kill()
    process.wait(timeout=60)
    assert runs, "the MLflow run was not created in time"
    assert not (out / "last.pt").exists(), "the first checkpoint came before the kill: the test needs a longer epoch"
    done = subprocess.run(cmd, capture_output=True, text=True, env=script_env(), timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "left no checkpoint; starting afresh" in done.stdout + done.stderr
    after = client.search_runs([client.get_experiment_by_name("early").experiment_id])
    assert [r.info.run_id for r in after] == [runs[0].info.run_id]
    assert after[0].info.status == "FINISHED"
    m = json.loads((out / "metrics.json").read_text())
    assert m["run"]["mlflow"]["run_id"] == runs[0].info.run_id
    assert _history(client, runs[0].info.run_id, "val_loss") == [(e["step"], round(e["val_loss"], 6))
                                                                 for e in m["epochs"]]


@pytest.mark.slow
def test_resuming_with_another_tracking_uri_starts_a_run_there_with_the_whole_history(penguins_dir: Path,
                                                                                     tmp_path: Path):
    from mlflow import MlflowClient

    first, second = f"sqlite:///{tmp_path / 'a.db'}", f"sqlite:///{tmp_path / 'b.db'}"
    args = ["--data-dir", penguins_dir, "--save-dir", tmp_path / "s", "--log-every", "2", "--no-baselines"]
    assert run_script("train_pipeline.py", *args, "--epochs", "2", "--tracking-uri", first).returncode == 0
    moved = run_script("train_pipeline.py", *args, "--epochs", "4", "--tracking-uri", second)
    assert moved.returncode == 0, moved.stderr[-2000:]
    assert "is not in sqlite:///" in moved.stderr and "starting a new run there" in moved.stderr
    assert "unavailable" not in moved.stderr
    m = json.loads((tmp_path / "s" / "metrics.json").read_text())
    assert m["run"]["mlflow"]["tracking_uri"] == second
    history = _history(MlflowClient(second), m["run"]["mlflow"]["run_id"], "val_loss")
    assert [step for step, _ in history] == [e["step"] for e in m["epochs"]]  # epochs 1-2 backfilled, 3-4 live


def test_best_metrics_rank_runs_by_what_the_engine_kept(penguins_dir: Path, tmp_path: Path):
    """best_* in metrics.json and MLflow are the best epoch's, not the last epoch's (a local sqlite store)."""
    import mlflow

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    best = {}
    for lr in (0.05, 0.001):
        result = train.run(train.make_config(dict(data_dir=str(penguins_dir), save_dir=str(tmp_path / f"lr{lr}"),
                                                  epochs=6, learning_rate=lr, tracking_uri=uri, experiment_name="best",
                                                  tensorboard=False, system_interval=0, progress="off")),
                           log=lambda m: None)
        values = result.metrics["best"]["values"]
        epochs = result.metrics["epochs"]
        assert values["best_val_loss"] == min(e["val_loss"] for e in epochs)
        at_best = next(e for e in epochs if e["epoch"] == values["best_epoch"])
        assert values["best_val_accuracy"] == at_best["val_accuracy"]
        best[result.metrics["run"]["mlflow"]["run_id"]] = values["best_val_loss"]
    client = mlflow.MlflowClient(uri)
    experiment = client.get_experiment_by_name("best").experiment_id
    found = client.search_runs([experiment], order_by=["metrics.best_val_loss ASC"])
    runs = {"run_id": [r.info.run_id for r in found], "metrics.best_val_loss": [r.data.metrics["best_val_loss"]
                                                                                for r in found]}
    assert list(runs["run_id"]) == sorted(best, key=best.get)
    assert list(runs["metrics.best_val_loss"]) == pytest.approx(sorted(best.values()))
def test_best_epoch_metrics_in_metrics_json_and_mlflow_under_the_same_names(penguins_dir: Path, tmp_path: Path):
    """metrics.json's best.values and MLflow's best_* metrics are the kept epoch's scores, not the last
    epoch's, so `search_runs(order_by=["metrics.best_val_loss"])` picks what the engine exported."""
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path / 'best.db'}"
    result = train.run(train.make_config({
        "data_dir": penguins_dir, "save_dir": tmp_path / "s", "epochs": 6, "learning_rate": 0.2,
        "baselines": False, "tracking_uri": uri, "experiment_name": "best"}), log=lambda m: None)
    m = json.loads((tmp_path / "s" / "metrics.json").read_text())
    best = m["best"]
    entry = next(e for e in m["epochs"] if e["epoch"] == best["epoch"])
    val_keys = {k for k in m["epochs"][0] if k.startswith("val_")}
    assert val_keys and set(best["values"]) == {"best_epoch"} | {f"best_{k}" for k in val_keys}
    assert best["values"]["best_epoch"] == best["epoch"]
    assert best["values"]["best_val_loss"] == entry["val_loss"]
    assert all(best["values"][f"best_{k}"] == entry[k] for k in val_keys)
    client = MlflowClient(uri)
    run = client.get_run(result.metrics["run"]["mlflow"]["run_id"])
    for name, value in best["values"].items():
        assert run.data.metrics[name] == pytest.approx(value), name
    found = client.search_runs([run.info.experiment_id], order_by=["metrics.best_val_loss ASC"])
    assert found[0].data.metrics["best_val_loss"] == pytest.approx(min(e["val_loss"] for e in m["epochs"]))
