"""The Optuna study: its storage, the checks before it continues, the recovery of trials cut short, the budget."""
from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from pipeline import metrics
from pipeline.fileio import pid_alive as alive
from pipeline.errors import ConfigError
from pipeline.tune.settings import LOCK_FILE, STUDY_FILE, WORKER_ENV, Log, TuneSettings

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
                          "settings to continue, or choose a new --save-dir (or --study-name)")
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
