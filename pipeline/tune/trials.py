"""One trial: the network through the engine (a normal run folder, pruned by a sink), or boosted trees."""
from __future__ import annotations

import math
import os
import socket
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline import metrics, status as status_lib
from pipeline.tune.settings import TuneSettings, Log
from pipeline.tune.space import TREE_SPACE, suggest, trial_values

if TYPE_CHECKING:
    from pipeline.tune.summary import ParentRun

TREE_ITERATIONS = 300

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
