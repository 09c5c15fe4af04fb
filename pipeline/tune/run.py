"""The command: `tune` runs (or continues) a study until its budget is spent; `main` is solutions/tune.py."""
from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any

from pipeline import fileio, metrics
from pipeline.errors import ConfigError, DataError
from pipeline.tune.settings import (REPORT_FILE, STUDY_FILE, SUMMARY_FILE, WORKER_ENV, WORKER_FILE, NOT_IDENTITY,
                                    Log, TuneSettings, read_training)
from pipeline.tune.space import SPACE, read_space
from pipeline.tune.study import counted, folder_lock, masked, objective_metric, open_storage, open_study, optimise, \
    recover, storage_url
from pipeline.tune.summary import ParentRun, closing_line, summarise
from pipeline.tune.trials import network_objective, tree_objective

def tune(settings: TuneSettings, *, log: Log = print) -> dict[str, Any]:
    """Run (or continue) the study until its budget is spent; write tuning.json (and report.html); return it."""
    import optuna

    from pipeline.data import store

    if settings.trials < 1:
        raise ConfigError(f"--n-trials {settings.trials}: the budget must be at least 1 trial")
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
        raise ConfigError(f"{study_dir}: holds trials/ but no {STUDY_FILE}; choose a new --save-dir (the old trials "
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

    import pipeline.tune

    parts = (pipeline.tune.__doc__ or "").split("\n\n")  # the first line; the examples and the folder's files
    parser = argparse.ArgumentParser(prog="tune.py", description=parts[0], epilog="\n\n".join(parts[1:4]),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", required=True, help="folder written by prepare_dataset.py (required)")
    parser.add_argument("--save-dir", "--study-dir", dest="study_dir", required=True,
                        help="folder of the study: study.db, trials/, tuning.json "
                        "(required; the same folder continues the study)")
    parser.add_argument("--n-trials", "--trials", dest="trials", type=int, default=20,
                        help="finished trials the study ends with, counted "
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
