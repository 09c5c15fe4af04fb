"""Hyperparameter search with Optuna, over the engine's own runs: every trial is a normal run folder.

    python solutions/tune.py --data-dir processed_data --study-dir runs/tune --trials 20
    python solutions/tune.py --data-dir processed_data --study-dir runs/tune --trials 20 --jobs 2
    python solutions/tune.py ... --storage postgresql://user@db/optuna --study-name census   # several machines

What a study folder holds:

    runs/tune/study.db           the Optuna study (SQLite; --storage names a shared database instead)
    runs/tune/trials/trial-0003  one run folder per trial, the layout train_pipeline.py writes
    runs/tune/tuning.json        the summary: every trial, the best one's settings and test score with its interval,
                                 boosted trees tuned with the same budget, and the network against them
    runs/tune/report.html        the best trial's training report with a tuning section

TPE samples the learning rate, width, depth, dropout, weight decay, batch size and model family (`SPACE`; a
YAML --space file changes the ranges, --search picks names); the median pruner reads each epoch's validation
score through a sink (`PruningSink`) and stops a trial that trails the others. The objective is the best epoch's
validation score (the test split is only read for the best trial, at the end).

Killing the tuner and running the same command continues the study, each trial counted once: a trial whose
process died (SIGKILL, a crash, a lost machine) or was interrupted is failed and retried, with the same settings,
into the same run folder, where the engine resumes from its last checkpoint (the retry follows Optuna's own
`RetryHeartbeatStaleTrialCallback`; on a shared database the heartbeat finds trials of machines that went away).
The budget counts finished trials (completed or pruned) across every process of the study.
"""
from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import math
import os
import signal
import socket
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from pipeline import fileio, metrics, status as status_lib
from pipeline.errors import ConfigError, DataError

Log = Callable[[str], None]

# name: (kind, low, high, log) for numbers, ("choice", values) for choices
SPACE: dict[str, tuple] = {
    "learning_rate": ("float", 1e-4, 1e-2, True),
    "width": ("int", 32, 512, True),
    "depth": ("int", 1, 4, False),
    "dropout": ("float", 0.0, 0.5, False),
    "weight_decay": ("float", 1e-6, 1e-2, True),
    "batch_size": ("choice", [32, 64, 128, 256]),
    "model": ("choice", ["mlp", "realmlp", "tabm"]),
}
# boosted trees (scikit-learn's HistGradientBoosting), tuned with the same budget for a fair comparison
TREE_SPACE: dict[str, tuple] = {
    "learning_rate": ("float", 0.01, 0.3, True),
    "max_leaf_nodes": ("int", 4, 128, True),
    "min_samples_leaf": ("int", 2, 100, True),
    "l2_regularization": ("float", 1e-8, 10.0, True),
    "max_features": ("float", 0.3, 1.0, False),
}
TREE_ITERATIONS = 300
STUDY_FILE, SUMMARY_FILE, REPORT_FILE, LOCK_FILE = "study.db", "tuning.json", "report.html", ".tune.lock"
WORKER_FILE, WORKER_ENV = ".workers.json", "PIPELINE_TUNE_WORKER"
# settings that say where a trial reports, not what it learns: a study continues when they change
NOT_IDENTITY = ("tracking_uri", "experiment_name", "mlflow", "tensorboard", "register_model", "log_every",
                "system_interval", "progress", "num_workers")


@dataclasses.dataclass(frozen=True)
class TuneSettings:
    data_dir: str
    study_dir: str
    trials: int = 20                   # finished trials (completed or pruned) the study ends with
    minutes: float | None = None       # no new trial starts after this many minutes (this process)
    epochs: int = 30                   # per trial (early stopping and pruning usually end it sooner)
    metric: str = "auto"               # val_<metric>; auto: val_balanced_accuracy, or val_r2 for regression
    space: dict[str, tuple] = dataclasses.field(default_factory=lambda: dict(SPACE))
    training: dict[str, Any] = dataclasses.field(default_factory=dict)  # fixed settings of every trial
    storage: str | None = None         # default: sqlite:///<study_dir>/study.db
    study_name: str = "tune"
    seed: int = 0                      # the sampler's seed (every trial trains with the training seed)
    jobs: int = 1                      # trial processes on this machine
    trees: bool = True                 # also tune boosted trees with the same budget
    report: bool = True                # write report.html for the best trial


# ------------------------------------------------------------------------------------------ the space
def read_space(path: Path | None, search: list[str] | None) -> dict[str, tuple]:
    """The search space: SPACE, with ranges from a YAML file ({name: {low, high, log} | {choices} | a value to
    fix it}) and restricted to `search` names. Returns {name: spec}; fixed values come back as ("fixed", v)."""
    space = dict(SPACE)
    if path is not None:
        import yaml

        try:
            given = yaml.safe_load(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"{path}: no such --space file") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
        if not isinstance(given, dict):
            raise ConfigError(f"{path}: expected a mapping such as 'learning_rate: {{low: 0.0001, high: 0.01, "
                              "log: true}}'")
        space = {name: _space_entry(path, str(name), spec) for name, spec in given.items()}
    if search is not None:
        unknown = [name for name in search if name not in space]
        if unknown:
            raise ConfigError(f"--search {','.join(unknown)}: not in the search space; choose from "
                              f"{', '.join(space)}")
        space = {name: spec for name, spec in space.items() if name in search or spec[0] == "fixed"}
    if not any(spec[0] != "fixed" for spec in space.values()):
        raise ConfigError("the search space is empty: nothing to tune; give --search names (e.g. "
                          "learning_rate,width) or ranges in --space")
    return space


def _space_entry(path: Path, name: str, spec: Any) -> tuple:
    if name not in SPACE:
        raise ConfigError(f"{path}: {name!r} is not a tunable setting; choose from {', '.join(SPACE)}")
    kind = SPACE[name][0]
    where = f"{path}: {name}"
    if not isinstance(spec, dict):
        return ("fixed", _checked_value(where, name, spec))
    if "choices" in spec:
        choices = spec["choices"]
        if not isinstance(choices, list) or not choices:
            raise ConfigError(f"{where}: choices must be a non-empty list")
        return ("choice", [_checked_value(where, name, c) for c in choices])
    if kind == "choice":
        raise ConfigError(f"{where}: give choices: [...] (e.g. {SPACE[name][1]})")
    extra = set(spec) - {"low", "high", "log"}
    if extra or "low" not in spec or "high" not in spec:
        raise ConfigError(f"{where}: expected {{low: ..., high: ..., log: true|false}}")
    low, high, log = spec["low"], spec["high"], bool(spec.get("log", False))
    number = int if kind == "int" else float
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (low, high)) or \
            (kind == "int" and not all(float(v).is_integer() for v in (low, high))):
        raise ConfigError(f"{where}: low and high must be {'whole ' if kind == 'int' else ''}numbers")
    low, high = number(low), number(high)
    floor_ok = low >= 0 if name in ("dropout", "weight_decay") else low > 0
    if not low < high or not floor_ok or (log and low <= 0) or (name == "dropout" and high >= 1):
        need = "0 <= low < high < 1" if name == "dropout" else "0 < low < high" if not floor_ok or log else "low < high"
        raise ConfigError(f"{where}: need {need}{' (log scale)' if log else ''}; got low {low}, high {high}")
    return (kind, low, high, log)


def _checked_value(where: str, name: str, value: Any) -> Any:
    from pipeline import config

    if name == "model":
        if not isinstance(value, str) or value not in config.BUILT_IN_MODELS:
            raise ConfigError(f"{where}: {value!r} is not a built-in network ({', '.join(config.BUILT_IN_MODELS)})")
        return value
    kind = SPACE[name][0]
    if kind == "int" or name == "batch_size":
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ConfigError(f"{where}: {value!r} is not a whole number ≥ 1")
        return value
    if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0 or \
            (name == "dropout" and value >= 1):
        raise ConfigError(f"{where}: {value!r} is not a valid {name}")
    return float(value)


def suggest(trial: Any, space: dict[str, tuple]) -> dict[str, Any]:
    """One value per searched name, asked of the trial (an enqueued retry gets its earlier values back)."""
    params = {}
    for name, spec in space.items():
        if spec[0] == "fixed":
            params[name] = spec[1]
        elif spec[0] == "choice":
            params[name] = trial.suggest_categorical(name, spec[1])
        elif spec[0] == "int":
            params[name] = trial.suggest_int(name, spec[1], spec[2], log=spec[3])
        else:
            params[name] = trial.suggest_float(name, spec[1], spec[2], log=spec[3])
    return params


def trial_values(params: dict[str, Any], training: dict[str, Any]) -> dict[str, Any]:
    """The training settings of a trial: the fixed ones, then the sampled ones in the engine's own terms
    (width and depth become hidden_sizes for mlp, model_args for realmlp and tabm)."""
    values = dict(training)
    for name in ("learning_rate", "weight_decay", "batch_size", "model"):
        if name in params:
            values[name] = params[name]
    model = values.get("model", "mlp")
    shape = {k: params[k] for k in ("width", "depth", "dropout") if k in params}
    if model == "mlp":
        hidden = list(values.get("hidden_sizes") or (256, 128))
        if "width" in shape or "depth" in shape:
            hidden = [shape.get("width", hidden[0])] * shape.get("depth", len(hidden))
        values["hidden_sizes"] = hidden
        if "dropout" in shape:
            values["dropout"] = shape["dropout"]
    elif shape:
        values["model_args"] = {**dict(values.get("model_args") or {}), **shape}
    return values


# ------------------------------------------------------------------------------------------ the study
def objective_metric(requested: str, task: str) -> str:
    if requested == "auto":
        return "val_balanced_accuracy" if task == "classification" else "val_r2"
    allowed = [f"val_{name}" for name in metrics.TASK_METRICS[task]]
    if requested not in allowed:
        raise ConfigError(f"--metric {requested} is not a validation score of {task}; choose one of: "
                          f"{', '.join(allowed)}")
    return requested


def storage_url(settings: TuneSettings) -> str:
    return settings.storage or f"sqlite:///{Path(settings.study_dir).resolve() / STUDY_FILE}"


def open_storage(settings: TuneSettings) -> Any:
    import optuna

    shared = settings.storage is not None
    try:
        # a shared database gets Optuna's heartbeat: the trials of a machine that went away are failed and retried
        return optuna.storages.RDBStorage(
            storage_url(settings), engine_kwargs={"connect_args": {"timeout": 60}} if not shared else {},
            heartbeat_interval=30 if shared else None, grace_period=120 if shared else None,
            heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback() if shared else None)
    except Exception as exc:  # a bad URL, a server that refuses: the storage's own words, one line
        raise ConfigError(f"--storage {masked(storage_url(settings))}: cannot be opened "
                          f"({type(exc).__name__}: {str(exc).splitlines()[0][:200]})") from None


def masked(url: str) -> str:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    if parts.password:
        return url.replace(f":{parts.password}@", ":***@")
    return url


def open_study(storage: Any, name: str, *, direction: str, identity: dict[str, Any], seed: int) -> Any:
    """Create the study, or load it after checking it was made for the same data, metric and space (a study
    continued with another space would mix trials that answer different questions)."""
    import optuna

    # each of --jobs' processes samples with its own seed (the same seed would propose the same settings)
    sampler = optuna.samplers.TPESampler(seed=seed + int(os.environ.get(WORKER_ENV, "0")), n_startup_trials=5)
    pruner = optuna.pruners.MedianPruner(n_startup_trials=4, n_warmup_steps=2)
    study = optuna.create_study(storage=storage, study_name=name, direction=direction, sampler=sampler,
                                pruner=pruner, load_if_exists=True)
    recorded = study.user_attrs.get("identity")
    if recorded is None:
        study.set_user_attr("identity", identity)
    elif recorded != identity:
        changed = sorted(k for k in identity.keys() | recorded.keys() if identity.get(k) != recorded.get(k))
        raise ConfigError(f"study {name!r} was started with another {', '.join(changed)}; run it with the same "
                          "settings to continue, or choose a new --study-dir (or --study-name)")
    return study


@contextlib.contextmanager
def folder_lock(study_dir: Path) -> Iterator[None]:
    """One process at a time recovers trials and creates shared records (the other workers wait)."""
    with open(study_dir / LOCK_FILE, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def recover(study: Any, log: Log) -> list[int]:
    """Fail this machine's trials whose process is gone (killed, crashed) and retry every failed trial that was
    cut short (killed or interrupted) once, with the same settings and run folder. Returns the retried numbers."""
    import optuna
    from optuna.trial import TrialState

    host = socket.gethostname()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        retry = optuna.storages.RetryHeartbeatStaleTrialCallback()
    trials = study.get_trials(deepcopy=False)
    retried = {n for t in trials for n in t.system_attrs.get("retry_history", [])}
    found = []
    for trial in trials:
        if trial.state == TrialState.RUNNING and trial.user_attrs.get("host") == host and \
                not alive(int(trial.user_attrs.get("pid", 0))):
            try:
                study._storage.set_trial_user_attr(trial._trial_id, "cut_short", "its process was gone")
                study._storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL)
            except optuna.exceptions.UpdateFinishedTrialError:
                continue  # another process got there first
            trial = study._storage.get_trial(trial._trial_id)
        if trial.state == TrialState.FAIL and trial.user_attrs.get("cut_short") and trial.number not in retried \
                and trial.user_attrs.get("host") == host:
            retry(study, trial)
            retried.add(trial.number)
            found.append(trial.number)
    if found:
        log(f"continuing: trial{'s' if len(found) > 1 else ''} {', '.join(map(str, found))} cut short; "
            "retried with the same settings, resuming from their checkpoints")
    return found


def counted(study: Any) -> int:
    from optuna.trial import TrialState

    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))


def busy(study: Any) -> int:
    """Trials that will still count: running in a live process here or elsewhere, or waiting (retries)."""
    from optuna.trial import TrialState

    host = socket.gethostname()
    running = [t for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING, TrialState.WAITING))
               if t.state == TrialState.WAITING or t.user_attrs.get("host") != host
               or alive(int(t.user_attrs.get("pid", 0)))]
    return len(running)


def optimise(study: Any, objective: Callable[[Any], float], *, budget: int, deadline: float | None) -> None:
    """Run trials until the study holds `budget` finished ones (counting other processes' running trials and the
    waiting retries) or the deadline passes."""
    from optuna.trial import TrialState

    while True:
        waiting = study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
        if not waiting and counted(study) + busy(study) >= budget:
            return
        if deadline is not None and time.monotonic() >= deadline:
            return
        study.optimize(objective, n_trials=1, catch=())


# ------------------------------------------------------------------------------------------ a trial
class PruningSink:
    """Reports each epoch's validation score to the trial; asks the run to stop when the pruner says so."""

    def __init__(self, trial: Any, metric: str):
        self.trial, self.metric = trial, metric
        self.pruned_at: int | None = None

    def log_dict(self, values: dict[str, Any], step: int, kind: str) -> None:
        from pipeline.tracking import StopTraining

        value = values.get(self.metric)
        if kind != "epoch" or not isinstance(value, (int, float)) or not math.isfinite(value):
            return
        epoch = int(values["epoch"])
        self.trial.report(float(value), epoch)
        if self.trial.should_prune():
            self.pruned_at = epoch
            raise StopTraining(f"pruned by the tuner after epoch {epoch}: {self.metric} {value:.4f} trails the "
                               "median of earlier trials")

    def log_event(self, record: dict[str, Any]) -> None:
        pass

    def close(self, status: str) -> None:
        pass


def run_folder(study_dir: Path, trial: Any) -> Path:
    """A trial's run folder: a retry keeps its original's (user attrs are copied into the retry)."""
    name = trial.user_attrs.get("run_folder")
    if name is None:
        name = f"trials/trial-{trial.number:04d}"
        trial.set_user_attr("run_folder", name)
    return study_dir / name


def describe(params: dict[str, Any]) -> str:
    shown = []
    for name, value in params.items():
        shown.append(f"{name} {value:.3g}" if isinstance(value, float) else f"{name} {value}")
    return ", ".join(shown)


def network_objective(settings: TuneSettings, *, metric: str, log: Log, parent: ParentRun | None) -> Callable:
    import optuna

    from pipeline import config as config_lib, train
    from pipeline.record import read_record

    study_dir = Path(settings.study_dir)

    def objective(trial: Any) -> float:
        trial.set_user_attr("host", socket.gethostname())
        trial.set_user_attr("pid", os.getpid())
        params = suggest(trial, settings.space)
        folder = run_folder(study_dir, trial)
        values = {**trial_values(params, settings.training), "data_dir": settings.data_dir, "save_dir": str(folder),
                  "epochs": settings.epochs, "early_stopping_metric": metric, "baselines": False,
                  "progress": "off", "run_name": f"{settings.study_name} trial {trial.number}",
                  "resume": "auto"}
        config = config_lib.make_config(values)
        sink = PruningSink(trial, metric)
        retry_of = trial.study._storage.get_trial(trial._trial_id).system_attrs.get("failed_trial")
        log(f"trial {trial.number}{f' (retry of {retry_of})' if retry_of is not None else ''}: {describe(params)}")
        result = train.run(config, sinks=[sink], log=lambda line: None if line.startswith("epoch ") else
                           log(f"  trial {trial.number}: {line}"))
        record = read_record(folder) or {}
        if parent is not None:
            parent.adopt((record.get("run") or {}).get("mlflow"), trial.number)
        if result.status == status_lib.INTERRUPTED:
            trial.set_user_attr("cut_short", "interrupted")
            raise KeyboardInterrupt  # the trial is failed here and retried when the command runs again
        best = (record.get("best") or {}).get("values") or {}
        value = best.get(f"best_{metric}")
        if result.status == status_lib.FAILED or not isinstance(value, (int, float)):
            trial.set_user_attr("failed", record.get("run", {}).get("message") or result.status)
            raise optuna.TrialPruned()  # a diverging setting is an answer: counted, never retried
        trial.set_user_attr("best_epoch", best.get("best_epoch"))
        if sink.pruned_at is not None or (record.get("run") or {}).get("message", "").startswith("pruned"):
            raise optuna.TrialPruned()
        return float(value)

    return objective


def tree_objective(settings: TuneSettings, dataset: Any, *, metric: str) -> Callable:
    def objective(trial: Any) -> float:
        trial.set_user_attr("host", socket.gethostname())
        trial.set_user_attr("pid", os.getpid())
        params = suggest(trial, TREE_SPACE if dataset.task == "regression" else
                         {**TREE_SPACE, "class_weight": ("choice", ["none", "balanced"])})
        scores, _ = fit_trees(params, dataset, split="val", seed=settings.seed)
        return float(scores[metric.removeprefix("val_")])

    return objective


def fit_trees(params: dict[str, Any], dataset: Any, *, split: str, seed: int) -> tuple[dict[str, Any], Any]:
    """HistGradientBoosting with `params` on the training split, scored on `split`: (scores, outputs)."""
    import warnings

    import numpy as np
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
    from threadpoolctl import threadpool_limits

    from pipeline import baselines

    args = {k: v for k, v in params.items() if k != "class_weight"}
    X, y = (np.asarray(a) for a in dataset.arrays["train"])
    X_eval, y_eval = (np.asarray(a) for a in dataset.arrays[split])
    with warnings.catch_warnings(), threadpool_limits(1):  # see baselines.fit_baselines on OpenMP's threads
        warnings.simplefilter("ignore")
        if dataset.task == "classification":
            weight = None if params.get("class_weight", "none") == "none" else params["class_weight"]
            model = HistGradientBoostingClassifier(max_iter=TREE_ITERATIONS, random_state=seed,
                                                   class_weight=weight, **args).fit(X, y)
            outputs = baselines.class_probabilities(model, X_eval, dataset.n_outputs)
            return metrics.classification_metrics(y_eval, outputs), outputs
        model = HistGradientBoostingRegressor(max_iter=TREE_ITERATIONS, random_state=seed, **args).fit(X, y)
        outputs = model.predict(X_eval)
        return metrics.regression_metrics(y_eval, outputs), outputs


# ------------------------------------------------------------------------------------------ MLflow
class ParentRun:
    """The study's MLflow parent run (created once, its id kept in the study); each trial's run becomes its child."""

    def __init__(self, tracking_uri: str | None, experiment: str, study: Any, *, name: str, log: Log):
        from mlflow.tracking import MlflowClient

        from pipeline import tracking

        tracking.configure_mlflow_http()
        self.uri = tracking_uri or tracking.default_tracking_uri()
        self.client, self.log = MlflowClient(self.uri), log
        self.run_id = study.user_attrs.get("mlflow_parent_run_id")
        if self.run_id is None:
            found = self.client.get_experiment_by_name(experiment)
            experiment_id = found.experiment_id if found else self.client.create_experiment(experiment)
            run = self.client.create_run(experiment_id, run_name=f"{name} (tuning)",
                                         tags={"pipeline.study": name, "mlflow.note.content":
                                               f"Optuna study {name!r}: one child run per trial"})
            self.run_id = run.info.run_id
            study.set_user_attr("mlflow_parent_run_id", self.run_id)
        else:
            self.client.update_run(self.run_id, status="RUNNING")

    def adopt(self, child: dict[str, Any] | None, number: int) -> None:
        run_id = (child or {}).get("run_id")
        if not run_id:
            return
        self.client.set_tag(run_id, "mlflow.parentRunId", self.run_id)
        self.client.set_tag(run_id, "pipeline.trial", str(number))

    def finish(self, summary: dict[str, Any], summary_path: Path, done: bool) -> None:
        best = summary.get("best") or {}
        step = summary["study"]["counted"]
        if isinstance(best.get("value"), (int, float)):
            self.client.log_metric(self.run_id, f"best_{summary['study']['metric']}", best["value"], step=step)
        for key, value in ((best.get("test") or {}).items()):
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                self.client.log_metric(self.run_id, f"best_trial_test_{key}", value, step=step)
        tags = {"pipeline.best_trial": str(best.get("number")), "pipeline.trials_counted": str(step)}
        if summary.get("comparison"):
            tags["verdict.text"] = summary["comparison"]["text"][:5000]
        for key, value in tags.items():
            self.client.set_tag(self.run_id, key, value)
        self.client.log_artifact(self.run_id, str(summary_path))
        self.client.set_terminated(self.run_id, status="FINISHED" if done else "KILLED")


# ------------------------------------------------------------------------------------------ the summary
def summarise(settings: TuneSettings, study: Any, trees: Any | None, dataset: Any, *, metric: str) -> dict[str, Any]:
    """tuning.json: the study's trials, importances, the best trial's test score with its interval, the tuned
    trees on the same test rows, and the network against them (a paired bootstrap)."""
    from optuna.trial import TrialState

    study_dir = Path(settings.study_dir)
    states: dict[str, int] = {}
    history = []
    for t in study.get_trials(deepcopy=False):
        states[t.state.name.lower()] = states.get(t.state.name.lower(), 0) + 1
        history.append({"number": t.number, "state": t.state.name.lower(), "value": t.value,
                        "params": t.params, "run_folder": t.user_attrs.get("run_folder"),
                        "retry_of": t.system_attrs.get("failed_trial"), "best_epoch": t.user_attrs.get("best_epoch"),
                        "epochs_reported": len(t.intermediate_values),
                        "last_reported": t.intermediate_values[max(t.intermediate_values)] if t.intermediate_values
                        else None, "failed": t.user_attrs.get("failed"),
                        "cut_short": t.user_attrs.get("cut_short"),
                        "seconds": (t.datetime_complete - t.datetime_start).total_seconds()
                        if t.datetime_complete and t.datetime_start else None})
    summary: dict[str, Any] = {
        "study": {"name": settings.study_name, "storage": masked(storage_url(settings)), "metric": metric,
                  "direction": study.direction.name.lower(), "budget": settings.trials, "counted": counted(study),
                  "states": states, "epochs_per_trial": settings.epochs,
                  "space": {k: list(v) for k, v in settings.space.items()}, "training": settings.training},
        "history": history, "importances": importances(study), "best": None, "trees": None, "comparison": None}
    finished = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]
    if not finished:
        return summary
    best = study.best_trial
    folder = study_dir / best.user_attrs["run_folder"]
    from pipeline.record import read_record

    record = read_record(folder) or {}
    summary["best"] = {"number": best.number, "value": best.value, "params": best.params,
                       "run_folder": str(folder), "metrics": str(folder / "metrics.json"),
                       "test": record.get("test") and {k: v for k, v in record["test"].items()
                                                       if isinstance(v, (int, float, list, dict))
                                                       and k in ("accuracy", "balanced_accuracy", "f1_macro",
                                                                 "roc_auc", "loss", "rmse", "mae", "r2",
                                                                 "intervals")}}
    if trees is not None and dataset.arrays["test"][0].shape[0] > 0:
        done = trees.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if done:
            summary["trees"], summary["comparison"] = compare_trees(trees.best_trial, folder, dataset, summary,
                                                                    settings=settings, tried=len(done))
    return summary


def importances(study: Any) -> dict[str, float] | None:
    """fANOVA importances (Optuna's default evaluator) once there are enough completed trials; None before."""
    import optuna
    from optuna.trial import TrialState

    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if len(complete) < 3 or len({name for t in complete for name in t.params}) < 2:
        return None
    try:
        return {k: round(float(v), 4) for k, v in optuna.importance.get_param_importances(
            study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0)).items()}
    except (ValueError, RuntimeError):  # e.g. every completed trial has the same value
        return None


def compare_trees(best_trees: Any, network_folder: Path, dataset: Any, summary: dict[str, Any], *,
                  settings: TuneSettings, tried: int) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The tuned trees refitted with their best settings and scored on the test split; the best network's test
    outputs (from its exported model) against them on the same bootstrap resamples."""
    import numpy as np

    from pipeline import baselines, evaluate, predict, runtime, uncertainty

    scores, tree_outputs = fit_trees(best_trees.params, dataset, split="test", seed=settings.seed)
    trees = {"trials": tried, "best_params": best_trees.params, "value": best_trees.value,
             "test": {k: v for k, v in scores.items() if isinstance(v, (int, float))}}
    net, spec, _ = predict.load_model(network_folder / "model.safetensors")
    X_test, y_test = dataset.arrays["test"]
    raw = evaluate.predict_arrays(net, np.asarray(X_test), device=runtime.resolve_device("cpu"), amp=None)
    outputs = evaluate.test_outputs(raw, task=dataset.task, target_scale=(spec["target_mean"], spec["target_std"]),
                                    target_range=spec.get("target_range"))
    network_scores = summary["best"]["test"] or {}
    judged = uncertainty.summarise(np.asarray(y_test), task=dataset.task, n_classes=dataset.n_outputs,
                                   network=(network_scores, outputs), headline=baselines.headline(dataset.task),
                                   baselines={"tuned_trees": (trees["test"], tree_outputs)},
                                   settings=uncertainty.Bootstrap(seed=settings.seed))
    trees["test"]["intervals"] = judged["baselines"]["tuned_trees"]["intervals"]
    trees["difference"] = judged["baselines"]["tuned_trees"]["difference"]
    return trees, judged["verdict"]


# ------------------------------------------------------------------------------------------ the command
def tune(settings: TuneSettings, *, log: Log = print) -> dict[str, Any]:
    """Run (or continue) the study until its budget is spent; write tuning.json (and report.html); return it."""
    import optuna

    from pipeline.data import store

    if settings.trials < 1:
        raise ConfigError(f"--trials {settings.trials}: the budget must be at least 1 trial")
    if settings.minutes is not None and not settings.minutes > 0:
        raise ConfigError(f"--minutes {settings.minutes}: must be more than 0")
    if settings.epochs < 1:
        raise ConfigError(f"--epochs {settings.epochs}: must be at least 1")
    if settings.jobs < 1:
        raise ConfigError(f"--jobs {settings.jobs}: must be at least 1")
    dataset = store.load_processed(settings.data_dir)
    if dataset.arrays["val"][0].shape[0] == 0:
        raise DataError(f"{settings.data_dir}: has no validation rows, and tuning chooses on them (never on the test "
                        "split); prepare the data again with --val-split 0.1")
    metric = objective_metric(settings.metric, dataset.task)
    direction = "maximize" if metrics.higher_is_better(metric) else "minimize"
    study_dir = Path(settings.study_dir)
    if settings.storage is None and (study_dir / "trials").is_dir() and not (study_dir / STUDY_FILE).exists():
        raise ConfigError(f"{study_dir}: holds trials/ but no {STUDY_FILE}; choose a new --study-dir (the old trials "
                          "are left as they are)")
    study_dir.mkdir(parents=True, exist_ok=True)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    identity = {"data": dataset.schema["data_sha256"], "metric": metric, "epochs": settings.epochs,
                "space": {k: list(v) for k, v in settings.space.items()},
                "training": {k: v for k, v in settings.training.items() if k not in NOT_IDENTITY}}
    storage = open_storage(settings)
    with folder_lock(study_dir):
        study = open_study(storage, settings.study_name, direction=direction, identity=identity, seed=settings.seed)
        trees = None
        if settings.trees:
            trees = open_study(storage, f"{settings.study_name}-trees", direction=direction,
                               identity={"data": identity["data"], "metric": metric}, seed=settings.seed)
        for each in filter(None, (study, trees)):
            recover(each, log)
        parent = None
        if settings.training.get("mlflow", True):
            parent = ParentRun(settings.training.get("tracking_uri"), settings.training.get("experiment_name",
                               "pipeline"), study, name=settings.study_name, log=log)
    before = counted(study)
    log(f"study {settings.study_name!r} in {masked(storage_url(settings))}: {before} of {settings.trials} trials "
        f"finished; choosing on {metric} ({direction}), {settings.epochs} epochs at most per trial")
    deadline = time.monotonic() + 60 * settings.minutes if settings.minutes else None
    workers = start_workers(settings) if settings.jobs > 1 else []
    try:
        optimise(study, network_objective(settings, metric=metric, log=log, parent=parent), budget=settings.trials,
                 deadline=deadline)
        if trees is not None and counted(study) >= settings.trials:
            optimise(trees, tree_objective(settings, dataset, metric=metric), budget=settings.trials,
                     deadline=deadline)
    except BaseException:
        for worker in workers:  # Ctrl-C: every process saves its trial and stops
            with contextlib.suppress(OSError):
                worker.send_signal(signal.SIGINT)
        raise
    finally:
        exit_codes = [w.wait() for w in workers]
    if any(code not in (0, None) for code in exit_codes):
        log(f"warning: {sum(code != 0 for code in exit_codes)} of the other trial processes ended with an error")
    done = counted(study) >= settings.trials and (trees is None or counted(trees) >= settings.trials)
    with folder_lock(study_dir):
        summary = summarise(settings, study, trees, dataset, metric=metric)
        summary["study"]["complete"] = done
        fileio.atomic_write_json(study_dir / SUMMARY_FILE, summary)
        if parent is not None:
            parent.finish(summary, study_dir / SUMMARY_FILE, done)
    log(closing_line(summary, done))
    if done and settings.report and summary["best"] is not None:
        from pipeline import report

        out = report.generate(summary["best"]["metrics"], study_dir / REPORT_FILE,
                              title=f"Tuning report: study {settings.study_name}", tuning=study_dir / SUMMARY_FILE)
        log(f"report: {out}")
    return summary


def closing_line(summary: dict[str, Any], done: bool) -> str:
    study, best = summary["study"], summary["best"]
    head = (f"{'done' if done else 'stopped'}: {study['counted']} of {study['budget']} trials finished "
            f"({', '.join(f'{n} {s}' for s, n in sorted(study['states'].items()))})")
    if best is None:
        return head + "; no trial completed yet"
    lines = [head, f"best trial {best['number']}: {study['metric']} {best['value']:.4f} ({describe(best['params'])}); "
             f"its run folder: {best['run_folder']}"]
    if summary.get("comparison"):
        lines.append(summary["comparison"]["text"])
    if not done:
        lines.append("run the same command again to continue the study")
    return "\n".join(lines)


def start_workers(settings: TuneSettings) -> list[subprocess.Popen]:
    """`jobs - 1` more processes on the same study (this one is the first), each with one share of the cores."""
    path = Path(settings.study_dir) / WORKER_FILE
    fileio.atomic_write_json(path, {**dataclasses.asdict(settings), "jobs": 1, "report": False})
    threads = str(max(1, (os.cpu_count() or 1) // settings.jobs))
    workers = []
    for index in range(1, settings.jobs):
        env = {**os.environ, WORKER_ENV: str(index), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", threads)}
        workers.append(subprocess.Popen([sys.executable, "-m", "pipeline.tune", "--worker-settings", str(path)],
                                        env=env))
    return workers


def run_worker(path: Path) -> int:
    from pipeline import cli

    values = fileio.read_json(path)
    if not isinstance(values, dict):
        print(f"error: {path}: not a tuner's worker settings", file=sys.stderr)
        return cli.EXIT_USAGE
    values["space"] = {k: tuple(v) for k, v in values["space"].items()}

    def body() -> int:
        tune(TuneSettings(**values), log=lambda line: print(f"[worker {os.environ.get(WORKER_ENV, '?')}] {line}"))
        return cli.EXIT_OK

    return cli.guarded(body)


# ------------------------------------------------------------------------------------------ the CLI
def build_parser() -> Any:
    import argparse

    parser = argparse.ArgumentParser(prog="tune.py", description=__doc__.split("\n\n")[0],
                                     epilog=__doc__.split("\n\n", 1)[1].split("\n\n", 2)[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", required=True, help="folder written by prepare_dataset.py (required)")
    parser.add_argument("--study-dir", required=True, help="folder of the study: study.db, trials/, tuning.json "
                        "(required; the same folder continues the study)")
    parser.add_argument("--trials", type=int, default=20, help="finished trials the study ends with, counted "
                        "across every process (default: 20); boosted trees get the same number")
    parser.add_argument("--minutes", type=float, help="start no new trial after this many minutes (this process)")
    parser.add_argument("--epochs", type=int, default=30, help="epochs per trial at most (default: 30)")
    parser.add_argument("--metric", default="auto", help="the validation score chosen on: auto (val_balanced_accuracy,"
                        " or val_r2 for regression) or val_<metric> (default: auto)")
    parser.add_argument("--search", help=f"comma-separated names to search (default: all of {','.join(SPACE)})")
    parser.add_argument("--space", type=Path, help="YAML file of ranges, e.g. 'learning_rate: {low: 0.0001, high: "
                        "0.01, log: true}', 'model: {choices: [mlp, realmlp]}', or 'model: mlp' to fix one")
    parser.add_argument("--config", type=Path, help="YAML file of training settings every trial shares "
                        "(train_pipeline.py's keys)")
    parser.add_argument("--storage", help="a shared Optuna database URL (e.g. postgresql://user@host/db) for "
                        "trials on several machines (default: sqlite:///STUDY_DIR/study.db)")
    parser.add_argument("--study-name", default="tune", help="the study's name in the storage (default: tune)")
    parser.add_argument("--jobs", type=int, default=1, help="trial processes on this machine (default: 1)")
    parser.add_argument("--seed", type=int, default=0, help="the sampler's seed (default: 0)")
    parser.add_argument("--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else "
                        "sqlite:///mlflow.db)")
    parser.add_argument("--experiment-name", help="MLflow experiment (default: pipeline)")
    parser.add_argument("--no-mlflow", action="store_true", help="no MLflow runs (parent or trials)")
    parser.add_argument("--no-tensorboard", action="store_true", help="no TensorBoard events in the trials")
    parser.add_argument("--no-trees", action="store_true", help="do not tune boosted trees for comparison")
    parser.add_argument("--no-report", action="store_true", help="do not write report.html at the end")
    return parser


def main(argv: list[str] | None = None) -> int:
    from pipeline import cli

    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--worker-settings"] and len(argv) == 2:  # one of --jobs' processes
        return run_worker(Path(argv[1]))
    args = build_parser().parse_args(argv)

    def body() -> int:
        training = read_training(args.config) if args.config else {}
        for flag, key in (("tracking_uri", "tracking_uri"), ("experiment_name", "experiment_name")):
            if getattr(args, flag):
                training[key] = getattr(args, flag)
        if args.no_mlflow:
            training["mlflow"] = False
        if args.no_tensorboard:
            training["tensorboard"] = False
        search = [s.strip() for s in args.search.split(",") if s.strip()] if args.search is not None else None
        settings = TuneSettings(data_dir=args.data_dir, study_dir=args.study_dir, trials=args.trials,
                                minutes=args.minutes, epochs=args.epochs, metric=args.metric,
                                space=read_space(args.space, search), training=training, storage=args.storage,
                                study_name=args.study_name, seed=args.seed, jobs=args.jobs,
                                trees=not args.no_trees, report=not args.no_report)
        summary = tune(settings, log=print)
        return cli.EXIT_OK if summary["study"].get("complete") or args.minutes else cli.EXIT_FAILED

    return cli.guarded(body)


FIXED_BY_TUNER = ("data_dir", "save_dir", "epochs", "early_stopping_metric", "baselines", "progress", "run_name",
                  "resume")


def read_training(path: Path) -> dict[str, Any]:
    """--config: the training settings every trial shares, checked as train_pipeline.py checks them."""
    import yaml

    from pipeline import config as config_lib

    try:
        values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: expected a mapping of settings, e.g. 'epochs: 20'")
    values = {str(k).replace("-", "_"): v for k, v in values.items()}
    taken = sorted(set(values) & set(FIXED_BY_TUNER))
    if taken:
        raise ConfigError(f"{path}: {', '.join(taken)} {'is' if len(taken) == 1 else 'are'} set by the tuner for each "
                          "trial; remove it (--epochs sets the epochs)")
    config_lib.make_config({**values, "data_dir": ".", "save_dir": "."})  # every key and value checked now
    return values


if __name__ == "__main__":
    sys.exit(main())
