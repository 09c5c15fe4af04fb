"""Metric maths against scikit-learn's: average precision, the Brier score and the calibration table."""
from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, brier_score_loss

from pipeline import metrics


def test_average_precision_is_sklearns_for_two_classes_and_the_macro_for_more():
    rng = np.random.default_rng(0)
    y = (rng.random(500) < 0.2).astype(int)
    p1 = np.clip(0.3 * y + rng.random(500) * 0.7, 0, 1)
    probabilities = np.stack([1 - p1, p1], axis=1)
    assert metrics.average_precision(y, probabilities) == pytest.approx(average_precision_score(y, p1))
    y3 = rng.integers(0, 3, 300)
    p3 = rng.dirichlet([1, 1, 1], 300)
    expected = np.mean([average_precision_score(y3 == c, p3[:, c]) for c in range(3)])
    assert metrics.average_precision(y3, p3) == pytest.approx(expected)
    assert metrics.average_precision(np.zeros(10, dtype=int), np.full((10, 2), 0.5)) is None  # no positive row


def test_brier_is_sklearns_and_ece_is_zero_for_a_calibrated_table():
    rng = np.random.default_rng(1)
    p1 = rng.random(20_000)
    y = (rng.random(20_000) < p1).astype(int)       # calibrated by construction
    probabilities = np.stack([1 - p1, p1], axis=1)
    found = metrics.calibration(y, probabilities)
    assert found["brier"] == pytest.approx(brier_score_loss(y, p1), abs=1e-6)
    assert found["ece"] < 0.02 and found["of"] == "positive class"
    assert sum(b["count"] for b in found["bins"]) == 20_000
    overconfident = np.stack([1 - np.round(p1), np.round(p1)], axis=1)   # 0 or 1: as sure as it can be
    assert metrics.calibration(y, overconfident)["ece"] > 0.2


def test_multiclass_calibration_uses_the_top_class():
    y = np.array([0, 1, 2, 0])
    p = np.array([[0.9, 0.05, 0.05], [0.1, 0.8, 0.1], [0.6, 0.2, 0.2], [0.5, 0.25, 0.25]])
    found = metrics.calibration(y, p, bins=2)
    assert found["of"] == "top class"
    # bin [0.5, 1): all four rows, mean confidence 0.7, right 3 of 4
    assert found["bins"] == [{"low": 0.5, "high": 1.0, "count": 4, "confidence": 0.7, "observed": 0.75}]
    assert found["ece"] == pytest.approx(0.05)
    assert found["brier"] == pytest.approx(np.mean(((p - np.eye(3)[y]) ** 2).sum(axis=1)))
