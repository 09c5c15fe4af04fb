"""What a study ends with: tuning.json (every trial, importances, the best trial's test score with its interval, the
tuned trees against it), the MLflow parent run, and the closing lines."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline.tune.settings import Log, TuneSettings
from pipeline.tune.study import counted, masked, storage_url
from pipeline.tune.trials import describe, fit_trees


class ParentRun:
    """The study's MLflow parent run (created once, its id kept in the study); each trial's run becomes its child."""

    def __init__(self, tracking_uri: str | None, experiment: str, study: Any, *, name: str, log: Log):
        from mlflow.tracking import MlflowClient

        from pipeline import mlflow_sink, tracking

        tracking.configure_mlflow_http()
        self.uri = tracking_uri or tracking.default_tracking_uri()
        self.client, self.log = MlflowClient(self.uri), log
        self.run_id = study.user_attrs.get("mlflow_parent_run_id")
        if self.run_id is None:
            found = self.client.get_experiment_by_name(experiment)
            experiment_id = (found.experiment_id if found
                             else mlflow_sink.create_experiment(self.client, experiment, self.uri))
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
