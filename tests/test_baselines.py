"""Baselines in every run: boosted trees and a linear model on the same split, in metrics.json and the console."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipeline import baselines, train

from test_train import FAST, strict_json


def test_every_finished_run_carries_its_baselines(penguins_dir: Path, tmp_path: Path):
    logs: list[str] = []
    result = train.run(train.make_config(dict(data_dir=str(penguins_dir), save_dir=str(tmp_path / "s"), epochs=3,
                                              **FAST)), log=logs.append)
    m = strict_json(tmp_path / "s" / "metrics.json")
    b = m["baselines"]
    assert set(b) == {"hist_gradient_boosting", "linear", "train_rows", "of_train_rows"}
    for name in ("hist_gradient_boosting", "linear"):
        assert set(b[name]) >= {"accuracy", "balanced_accuracy", "f1_macro", "roc_auc", "fit_seconds"}
        assert 0.9 < b[name]["balanced_accuracy"] <= 1.0  # penguins are easy for both
    assert b["train_rows"] == b["of_train_rows"] == 241
    line = next(line for line in logs if line.startswith("test balanced_accuracy: network"))
    assert f"network {m['test']['balanced_accuracy']:.4f}" in line and "boosted trees" in line and "linear" in line
    assert result.metrics["baselines"] == b


def test_no_baselines_and_regression(regression_dir: Path, tmp_path: Path):
    off = train.run(train.make_config(dict(data_dir=str(regression_dir), save_dir=str(tmp_path / "off"), epochs=2,
                                           baselines=False, **FAST)), log=lambda m: None)
    assert off.metrics["baselines"] is None
    on = train.run(train.make_config(dict(data_dir=str(regression_dir), save_dir=str(tmp_path / "on"), epochs=2,
                                          **FAST)), log=lambda m: None)
    b = on.metrics["baselines"]
    assert b["hist_gradient_boosting"]["r2"] > 0.8 and b["linear"]["r2"] > 0.9  # a linear target plus a category
    assert set(b["linear"]) >= {"rmse", "mae", "r2", "fit_seconds"}


def test_big_tables_are_subsampled_and_missing_classes_are_zero_columns():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(3000, 4)).astype(np.float32)
    y = (X[:, 0] > 0).astype(np.int64)
    y[:3] = 2  # a rare third class that a subsample may miss
    scores = baselines.fit_baselines(X, y, X[:500], y[:500], task="classification", n_classes=3, max_rows=1000)
    assert scores["train_rows"] == 1000 and scores["of_train_rows"] == 3000
    assert scores["hist_gradient_boosting"]["accuracy"] > 0.9
    line = baselines.comparison_line({"balanced_accuracy": 0.5}, scores, "classification")
    assert "fitted on 1,000 of 3,000 training rows" in line


def test_no_baselines_flag(penguins_dir: Path, tmp_path: Path):
    import sys

    from conftest import ROOT
    sys.path.insert(0, str(ROOT / "solutions"))
    import train_pipeline

    assert train_pipeline.main(["--data-dir", str(penguins_dir), "--epochs", "1", "--save-dir", str(tmp_path / "s"),
                                "--no-mlflow", "--no-tensorboard", "--system-interval", "0", "--no-baselines"]) == 0
    assert strict_json(tmp_path / "s" / "metrics.json")["baselines"] is None
    with pytest.raises(SystemExit):
        train_pipeline.build_parser().parse_args(["--baselines"])  # only the --no- form exists

