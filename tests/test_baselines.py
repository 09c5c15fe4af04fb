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
    assert set(b) == {"hist_gradient_boosting", "linear", "train_rows", "of_train_rows"}  # and no "failed"
    for name in ("hist_gradient_boosting", "linear"):
        assert set(b[name]) >= {"accuracy", "balanced_accuracy", "f1_macro", "roc_auc", "fit_seconds"}
        assert 0.9 < b[name]["balanced_accuracy"] <= 1.0  # penguins are easy for both
    assert b["train_rows"] == b["of_train_rows"] == 241
    line = next(line for line in logs if line.startswith("test balanced_accuracy: network"))
    low, high = m["test"]["intervals"]["balanced_accuracy"]
    assert f"network {m['test']['balanced_accuracy']:.3f} [{low:.3f}, {high:.3f}]" in line
    assert "boosted trees" in line and "linear" in line
    assert result.metrics["baselines"] == b
    # every score has its interval, every baseline its paired difference, and the verdict is printed
    for name in ("hist_gradient_boosting", "linear"):
        assert set(b[name]["intervals"]) >= {"accuracy", "balanced_accuracy", "f1_macro"}
        diff = b[name]["difference"]["balanced_accuracy"]
        assert diff["value"] == pytest.approx(m["test"]["balanced_accuracy"] - b[name]["balanced_accuracy"], abs=1e-6)
        assert diff["interval"][0] <= diff["value"] <= diff["interval"][1]
    assert m["uncertainty"]["test_rows"] == 69 and m["uncertainty"]["stratified"] is True
    verdict = m["verdict"]
    best = max(("hist_gradient_boosting", "linear"), key=lambda n: b[n]["balanced_accuracy"])
    assert verdict["baseline"] == best and verdict["outcome"] in ("ahead", "behind", "not distinguishable")
    assert verdict["text"] in logs


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



def test_a_failing_baseline_is_reported_and_skipped_never_fatal(penguins_dir: Path, tmp_path: Path, monkeypatch):
    """Any exception in one baseline (here the linear model's fit) is listed under baselines.failed with its
    reason; the network's run completes, the other baseline is scored and the verdict uses it."""
    from sklearn.linear_model import LogisticRegression

    def broken(self, X, y):
        raise ValueError("broadcast shapes (4,) and (3,)\nsecond line")
    monkeypatch.setattr(LogisticRegression, "fit", broken)
    logs: list[str] = []
    result = train.run(train.make_config(dict(data_dir=str(penguins_dir), save_dir=str(tmp_path / "s"), epochs=2,
                                              **FAST)), log=logs.append)
    assert result.status == "completed" and result.exit_code == 0
    b = result.metrics["baselines"]
    assert b["failed"] == {"linear": "ValueError: broadcast shapes (4,) and (3,)"}
    assert "linear" not in b and "balanced_accuracy" in b["hist_gradient_boosting"]
    assert result.metrics["verdict"]["baseline"] == "hist_gradient_boosting"
    assert any("baseline linear failed and was skipped: ValueError" in line for line in logs)


def test_the_quick_start_verdict_on_penguins_is_not_distinguishable(penguins_dir: Path, tmp_path: Path):
    """The README's Quick Start settings (50 epochs, batch 32, lr 0.001): on 69 test rows the network and the
    best baseline cannot be told apart, and the words must say so whatever the point estimates are."""
    result = train.run(train.make_config(dict(data_dir=str(penguins_dir), save_dir=str(tmp_path / "q"), epochs=50,
                                              batch_size=32, learning_rate=0.001, **FAST)), log=lambda m: None)
    verdict = result.metrics["verdict"]
    assert verdict["outcome"] == "not distinguishable", verdict["text"]
    low, high = verdict["interval"]
    assert low <= 0 <= high and "not distinguishable" in verdict["text"] and "69 test rows" in verdict["text"]
