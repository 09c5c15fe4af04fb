"""The tuner's settings (`TuneSettings`), the study folder's file names, and the training settings every trial
shares (--config)."""
from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pipeline.errors import ConfigError
from pipeline.tune.space import SPACE

Log = Callable[[str], None]

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




FIXED_BY_TUNER = ("data_dir", "save_dir", "epochs", "early_stopping_metric", "baselines", "progress", "run_name",
                  "resume")


def read_training(path: Path) -> dict[str, Any]:
    """--config: the training settings every trial shares, checked as train_pipeline.py checks them."""
    from pipeline import config as config_lib, fileio

    values = fileio.read_yaml_mapping(path, what="config file", example="scheduler: cosine")
    values = {str(k).replace("-", "_"): v for k, v in values.items()}
    taken = sorted(set(values) & set(FIXED_BY_TUNER))
    if taken:
        raise ConfigError(f"{path}: {', '.join(taken)} {'is' if len(taken) == 1 else 'are'} set by the tuner for each "
                          "trial; remove it (--epochs sets the epochs)")
    config_lib.make_config({**values, "data_dir": ".", "save_dir": "."})  # every key and value checked now
    return values

