"""The tuner (pipeline.tune, solutions/tune.py): the search space and its refusals, the engine's stop request,
recovery of trials cut short (each retried once, into its own folder), and, end to end in real processes, a
study killed twice that still ends with every trial counted once and one MLflow parent run."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import ROOT, SOLUTIONS, script_env
from pipeline import train, tune
from pipeline.errors import ConfigError

optuna = pytest.importorskip("optuna")


# ------------------------------------------------------------------------------------------ the space
def test_the_default_space_searches_every_setting_the_issue_names():
    space = tune.read_space(None, None)
    assert set(space) == {"learning_rate", "width", "depth", "dropout", "weight_decay", "batch_size", "model"}
    assert space["model"] == ("choice", ["mlp", "realmlp", "tabm"])


@pytest.mark.parametrize("search, words", [([], "search space is empty"),
                                           (["learning_rate", "momentum"], "--search momentum: not in the search")])
def test_an_empty_or_unknown_search_is_refused_in_one_line(search, words):
    with pytest.raises(ConfigError, match=words):
        tune.read_space(None, search)


@pytest.mark.parametrize("text, words", [
    ("learning_rate: {low: 0.01, high: 0.001, log: true}", "learning_rate: need 0 < low < high"),
    ("dropout: {low: 0.1, high: 1.5}", "dropout: need 0 <= low < high < 1"),
    ("width: {low: 8.5, high: 64}", "width: low and high must be whole numbers"),
    ("model: {choices: []}", "model: choices must be a non-empty list"),
    ("model: resnet", "'resnet' is not a built-in network"),
    ("momentum: {low: 0.1, high: 0.9}", "'momentum' is not a tunable setting"),
    ("model: mlp", "search space is empty"),  # only a fixed value: nothing left to search
    ("- 1\n- 2", "expected a mapping"),
])
def test_a_bad_space_file_names_the_file_and_the_setting(tmp_path, text, words):
    path = tmp_path / "space.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=words) as caught:
        tune.read_space(path, None)
    assert str(path) in str(caught.value) or "search space is empty" in words


def test_a_space_file_fixes_values_and_narrows_ranges(tmp_path):
    path = tmp_path / "space.yaml"
    path.write_text("model: realmlp\nlearning_rate: {low: 0.0005, high: 0.005, log: true}\n"
                    "batch_size: {choices: [64, 128]}\n")
    space = tune.read_space(path, None)
    assert space == {"model": ("fixed", "realmlp"), "learning_rate": ("float", 0.0005, 0.005, True),
                     "batch_size": ("choice", [64, 128])}
    study = optuna.create_study(direction="maximize")
    params = tune.suggest(study.ask(), space)
    assert params["model"] == "realmlp" and 0.0005 <= params["learning_rate"] <= 0.005
    assert params["batch_size"] in (64, 128)


def test_width_and_depth_become_the_engines_own_settings():
    mlp = tune.trial_values({"model": "mlp", "width": 64, "depth": 3, "dropout": 0.2, "learning_rate": 0.01}, {})
    assert mlp["hidden_sizes"] == [64, 64, 64] and mlp["dropout"] == 0.2 and mlp["learning_rate"] == 0.01
    tabm = tune.trial_values({"model": "tabm", "width": 128, "depth": 2}, {"model_args": {"k": 4}})
    assert tabm["model_args"] == {"k": 4, "width": 128, "depth": 2} and "hidden_sizes" not in tabm
    only_depth = tune.trial_values({"depth": 1}, {"hidden_sizes": [32, 16]})
    assert only_depth["hidden_sizes"] == [32]


def test_training_settings_the_tuner_owns_are_refused_in_the_config(tmp_path):
    path = tmp_path / "train.yaml"
    path.write_text("epochs: 5\nscheduler: cosine\n")
    with pytest.raises(ConfigError, match="epochs is set by the tuner"):
        tune.read_training(path)
    path.write_text("scheduler: sometimes\n")
    with pytest.raises(ConfigError, match="scheduler"):
        tune.read_training(path)
    path.write_text("scheduler: cosine\n")
    assert tune.read_training(path) == {"scheduler": "cosine"}


@pytest.mark.parametrize("flags, words", [(["--n-trials", "0"], "--n-trials 0: the budget must be at least 1"),
                                          (["--minutes", "0"], "--minutes 0.0: must be more than 0"),
                                          (["--search", ","], "search space is empty"),
                                          (["--metric", "val_r2"], "--metric val_r2 is not a validation score")])
def test_bad_settings_are_one_line_and_exit_2(penguins_dir, tmp_path, capsys, flags, words):
    code = tune.main(["--data-dir", str(penguins_dir), "--save-dir", str(tmp_path / "study"), "--no-mlflow", *flags])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and words in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "study" / "trials").exists()


# ------------------------------------------------------------------------------------------ the engine's side
class StopAfter:
    def __init__(self, epoch: int):
        self.epoch = epoch

    def log_dict(self, values, step, kind):
        if kind == "epoch" and values["epoch"] == self.epoch:
            raise train.tracking.StopTraining(f"stopped by a test after epoch {self.epoch}")

    def log_event(self, record):
        pass

    def close(self, status):
        pass


def test_a_sink_can_stop_the_run_after_an_epoch(penguins_dir, tmp_path):
    config = train.make_config({"data_dir": str(penguins_dir), "save_dir": str(tmp_path / "run"), "epochs": 8,
                                "mlflow": False, "tensorboard": False, "baselines": False, "progress": "off"})
    result = train.run(config, sinks=[StopAfter(3)], log=lambda m: None)
    assert result.status == "early_stopped" and result.exit_code == 0
    assert [e["epoch"] for e in result.metrics["epochs"]] == [1, 2, 3]
    assert result.metrics["run"]["message"] == "stopped by a test after epoch 3"
    assert result.metrics["test"] is not None  # a stopped run is finished like any other: best weights, test score


# ------------------------------------------------------------------------------------------ recovery
def dead_pid() -> int:
    pid = 999_999
    while tune.alive(pid):
        pid -= 1
    return pid


def test_a_trial_whose_process_is_gone_is_retried_once_into_its_own_folder(tmp_path):
    import socket

    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'study.db'}", direction="maximize")
    trial = study.ask()
    trial.suggest_float("learning_rate", 1e-4, 1e-2, log=True)
    for key, value in {"host": socket.gethostname(), "pid": dead_pid(), "run_folder": "trials/trial-0000"}.items():
        trial.set_user_attr(key, value)
    alive_trial = study.ask()  # this process's own running trial: not touched
    alive_trial.set_user_attr("host", socket.gethostname())
    alive_trial.set_user_attr("pid", os.getpid())

    assert tune.recover(study, log=lambda m: None) == [0]
    states = {t.number: t.state.name for t in study.get_trials()}
    assert states == {0: "FAIL", 1: "RUNNING", 2: "WAITING"}
    retry = study.get_trials()[2]
    assert retry.params == study.get_trials()[0].params
    assert retry.user_attrs["run_folder"] == "trials/trial-0000" and retry.system_attrs["failed_trial"] == 0
    assert tune.recover(study, log=lambda m: None) == []  # asked again: no second retry
    assert len(study.get_trials()) == 3


def test_a_study_refuses_to_continue_with_another_space(penguins_dir, tmp_path):
    settings = tune.TuneSettings(data_dir=str(penguins_dir), study_dir=str(tmp_path / "study"), trials=1, epochs=1,
                                 space=tune.read_space(None, ["learning_rate"]), training={"mlflow": False,
                                                                                           "tensorboard": False},
                                 trees=False, report=False)
    summary = tune.tune(settings, log=lambda m: None)
    assert summary["study"]["counted"] == 1 and summary["best"]["params"].keys() == {"learning_rate"}
    other = tune.TuneSettings(**{**settings.__dict__, "space": tune.read_space(None, ["dropout"])})
    with pytest.raises(ConfigError, match="was started with another space"):
        tune.tune(other, log=lambda m: None)


# ------------------------------------------------------------------------------------------ end to end
def start(args: list[str], log: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(SOLUTIONS / "tune.py"), *args], stdout=log.open("a"),
                            stderr=subprocess.STDOUT, env=script_env(), cwd=ROOT)


def wait_for_training(study_dir: Path, process: subprocess.Popen, *, epochs: int = 2, timeout: float = 120) -> Path:
    """The run folder of a trial this process is training, once it has saved `epochs` epochs."""
    from pipeline.record import read_record

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, "the tuner ended before it could be killed"
        for folder in sorted((study_dir / "trials").glob("trial-*")):
            record = read_record(folder) or {}
            run = record.get("run") or {}
            if run.get("pid") == process.pid and run.get("status") == "running" and \
                    (record.get("progress") or {}).get("epoch", 0) >= epochs and (folder / "last.pt").exists():
                return folder
        time.sleep(0.05)
    raise AssertionError("no trial reached its second epoch in time")


@pytest.mark.slow
def test_a_study_killed_twice_continues_with_every_trial_counted_once(penguins_dir, tmp_path):
    from mlflow.tracking import MlflowClient

    from pipeline.record import read_record

    study_dir, log = tmp_path / "study", tmp_path / "tune.log"
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    args = ["--data-dir", str(penguins_dir), "--save-dir", str(study_dir), "--n-trials", "4", "--epochs", "25",
            "--search", "learning_rate,dropout,width", "--tracking-uri", uri, "--experiment-name", "tuning-test",
            "--no-tensorboard"]
    first = start(args, log)
    killed = wait_for_training(study_dir, first)
    first.kill()  # SIGKILL: no handler runs, the trial stays RUNNING in the study
    assert first.wait(timeout=30) == -signal.SIGKILL

    second = start(args, log)
    interrupted = wait_for_training(study_dir, second)
    second.send_signal(signal.SIGINT)  # Ctrl-C: the engine saves the trial and the tuner stops
    assert second.wait(timeout=60) == 130

    third = start(args, log)
    assert third.wait(timeout=600) == 0, log.read_text()[-3000:]
    output = log.read_text()
    assert "cut short; retried with the same settings" in output

    study = optuna.load_study(study_name="tune", storage=f"sqlite:///{study_dir / 'study.db'}")
    trials = study.get_trials()
    finished = [t for t in trials if t.state.name in ("COMPLETE", "PRUNED")]
    failed = [t for t in trials if t.state.name == "FAIL"]
    assert len(finished) == 4 and len(failed) >= 2 and not [t for t in trials if t.state.name in ("RUNNING",
                                                                                                   "WAITING")]
    for f in failed:  # every trial cut short is retried exactly once, into the same run folder
        retries = [t for t in trials if (t.system_attrs.get("retry_history") or [None])[-1] == f.number]
        assert len(retries) == 1 and retries[0].user_attrs["run_folder"] == f.user_attrs["run_folder"]
    folders = [t.user_attrs["run_folder"] for t in finished]
    assert len(set(folders)) == 4 and len(list((study_dir / "trials").glob("trial-*"))) == 4
    for folder in (killed, interrupted):  # the retries continued from the checkpoints, not from scratch
        record = read_record(folder)
        assert record["run"]["resumed"], folder
        epochs = [e["epoch"] for e in record["epochs"]]
        assert epochs == list(range(1, len(epochs) + 1)), epochs

    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("tuning-test")
    runs = client.search_runs([experiment.experiment_id], max_results=200)
    parents = [r for r in runs if r.data.tags.get("pipeline.study") == "tune"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    assert sorted(int(r.data.tags["pipeline.trial"]) for r in children) == sorted(t.number for t in finished)

    summary = read_record_json(study_dir / "tuning.json")
    assert summary["study"]["complete"] and summary["study"]["counted"] == 4
    assert summary["trees"]["trials"] == 4 and summary["comparison"]["baseline"] == "tuned_trees"
    html = (study_dir / "report.html").read_text()
    assert "<h2>Tuning" in html and "of each trial and the best so far" in html and "importances" in html.lower()
    assert "boosted trees tuned with the same budget (4 trials)" in html


def read_record_json(path: Path) -> dict:
    import json

    return json.loads(path.read_text())


@pytest.mark.slow
def test_two_trial_processes_share_one_study_and_its_budget(penguins_dir, tmp_path):
    study_dir, log = tmp_path / "study", tmp_path / "tune.log"
    process = start(["--data-dir", str(penguins_dir), "--save-dir", str(study_dir), "--n-trials", "4", "--epochs", "4",
                     "--search", "learning_rate", "--jobs", "2", "--no-mlflow", "--no-tensorboard", "--no-trees",
                     "--no-report"], log)
    assert process.wait(timeout=600) == 0, log.read_text()[-3000:]
    study = optuna.load_study(study_name="tune", storage=f"sqlite:///{study_dir / 'study.db'}")
    finished = [t for t in study.get_trials() if t.state.name in ("COMPLETE", "PRUNED")]
    assert len(finished) == 4 and len(study.get_trials()) == 4
    assert len({t.user_attrs["pid"] for t in finished}) == 2  # both processes ran trials
    assert "[worker 1]" in log.read_text()
