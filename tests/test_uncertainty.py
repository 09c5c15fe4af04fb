"""The bootstrap: intervals that cover the truth, a paired difference that matches a hand computation, the
verdict's words on the three outcomes, stratification, and determinism."""
from __future__ import annotations

import numpy as np
import pytest

from pipeline import metrics, uncertainty

SETTINGS = uncertainty.Bootstrap(resamples=400, seed=0)


def one_hot(labels: np.ndarray, k: int) -> np.ndarray:
    return np.eye(k)[labels]


def test_95_percent_intervals_cover_the_true_accuracy_at_least_93_percent_of_the_time():
    rng = np.random.default_rng(0)
    truth, rows, covered, trials = 0.8, 150, 0, 300
    y = np.repeat([0, 1], rows // 2)                      # fixed class counts: the design stratification assumes
    for trial in range(trials):
        correct = rng.random(rows) < truth
        predicted = np.where(correct, y, 1 - y)
        draws = uncertainty.bootstrap(y, {"network": one_hot(predicted, 2)}, task="classification", n_classes=2,
                                      settings=uncertainty.Bootstrap(resamples=400, seed=trial))
        low, high = uncertainty.intervals(draws["network"])["accuracy"]
        covered += low <= truth <= high
    assert covered / trials >= 0.93, covered / trials


def test_regression_intervals_cover_the_true_mae():
    rng = np.random.default_rng(1)
    covered, trials = 0, 300
    for trial in range(trials):
        y = rng.normal(size=400)
        predicted = y + rng.normal(size=400)                  # |N(0,1)| has mean sqrt(2/pi)
        draws = uncertainty.bootstrap(y, {"network": predicted}, task="regression",
                                      settings=uncertainty.Bootstrap(resamples=400, seed=trial))
        low, high = uncertainty.intervals(draws["network"])["mae"]
        covered += low <= np.sqrt(2 / np.pi) <= high
    assert covered / trials >= 0.93, covered / trials


def test_the_paired_difference_equals_a_hand_computation_on_the_same_resamples():
    """Two classes of 4 rows; per class, the multinomial over (net, base) prediction pairs is the bootstrap."""
    y = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    net = np.array([0, 0, 0, 1, 1, 1, 1, 0])    # 6/8 right
    base = np.array([0, 0, 1, 1, 1, 1, 0, 0])   # 4/8 right
    draws = uncertainty.bootstrap(y, {"network": one_hot(net, 2), "base": one_hot(base, 2)}, task="classification",
                                  n_classes=2, settings=uncertainty.Bootstrap(resamples=2000, seed=3))
    diff = draws["network"]["accuracy"] - draws["base"]["accuracy"]
    # by hand: per resample, accuracy difference = (#rows where only net is right - #rows where only base is right) / 8
    # class 0: cells (net right, base right): rows 0,1 both; row 2 only net; row 3 neither -> P(only net)=1/4
    # class 1: rows 4,5 both; row 6 only net; row 7 neither -> P(only net)=1/4; never "only base"
    # so 8 * diff ~ Binomial(4, 1/4) + Binomial(4, 1/4) = Binomial(8, 1/4): mean 2/8, variance 8*(1/4)*(3/4)/64
    assert abs(diff.mean() - 0.25) < 0.01
    assert abs(diff.var() - 8 * 0.25 * 0.75 / 64) < 0.003
    assert (diff >= 0).all()                    # paired: the base is never right where the network is wrong
    point_net, point_base = metrics.classification_metrics(y, one_hot(net, 2)), metrics.classification_metrics(
        y, one_hot(base, 2))
    found = uncertainty.difference(draws["network"], draws["base"], point_network=point_net,
                                   point_baseline=point_base)["accuracy"]
    assert found["value"] == pytest.approx(0.25)
    assert found["interval"][0] >= 0 and found["interval"][1] <= 0.625


def test_confusion_metrics_of_the_draws_match_the_metrics_module_without_resampling():
    rng = np.random.default_rng(2)
    y = rng.integers(0, 3, 90)
    p = rng.dirichlet([1, 1, 1], 90)
    matrix = metrics.confusion_matrix(y, p.argmax(axis=1), 3)[None]
    ours = uncertainty._confusion_metrics(matrix)
    theirs = metrics.classification_metrics(y, p)
    for name in ("accuracy", "balanced_accuracy", "f1_macro"):
        assert ours[name][0] == pytest.approx(theirs[name])


def test_weighted_auc_with_unit_weights_is_sklearns():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(4)
    y = rng.integers(0, 2, 200)
    scores = np.round(rng.random(200) + 0.3 * y, 2)       # ties included
    assert uncertainty._weighted_auc(np.ones((1, 200)), y == 1, scores)[0] == pytest.approx(roc_auc_score(y, scores))


def test_stratified_resamples_keep_every_class_count():
    y = np.array([0] * 95 + [1] * 5)
    rng = np.random.default_rng(0)
    weights = uncertainty._stratified_weights(y, 50, rng)
    assert (weights[:, y == 1].sum(axis=1) == 5).all() and (weights[:, y == 0].sum(axis=1) == 95).all()
    predicted = np.array([0] * 100)
    draws = uncertainty.bootstrap(y, {"network": one_hot(predicted, 2)}, task="classification", n_classes=2,
                                  settings=SETTINGS)
    assert np.allclose(draws["network"]["balanced_accuracy"], 0.5)   # the rare class is in every resample


def test_the_same_seed_gives_the_same_intervals_and_another_seed_others():
    rng = np.random.default_rng(5)
    y = rng.integers(0, 2, 300)
    p = rng.dirichlet([1, 1], 300)
    a, b, c = (uncertainty.intervals(uncertainty.bootstrap(y, {"n": p}, task="classification", n_classes=2,
                                                           settings=uncertainty.Bootstrap(300, seed=s))["n"])
               for s in (1, 1, 2))
    assert a == b and a != c


def verdict_for(network: float, baseline: float, interval: list[float], metric: str = "balanced_accuracy"):
    baselines = {"linear": {metric: baseline, "difference": {metric: {"value": network - baseline,
                                                                      "interval": interval}}},
                 "hist_gradient_boosting": {metric: baseline - 0.05, "difference": {
                     metric: {"value": network - baseline + 0.05, "interval": [0.01, 0.09]}}}}
    return uncertainty.verdict(metric, network, baselines, test_rows=69)


def test_the_verdict_follows_the_interval_not_the_point_estimate():
    behind_but_unclear = verdict_for(0.989, 1.0, [-0.04, 0.01])
    assert behind_but_unclear["outcome"] == "not distinguishable" and behind_but_unclear["baseline"] == "linear"
    assert "not distinguishable" in behind_but_unclear["text"] and "69 test rows" in behind_but_unclear["text"]
    assert "the linear model 1.000, network 0.989" in behind_but_unclear["text"]
    assert "-0.011 [-0.040, +0.010]" in behind_but_unclear["text"]
    ahead = verdict_for(0.95, 0.935, [0.004, 0.027])
    assert ahead["outcome"] == "ahead" and "the network is ahead" in ahead["text"]
    behind = verdict_for(0.90, 0.935, [-0.05, -0.02])
    assert behind["outcome"] == "behind" and "the linear model is ahead" in behind["text"]


def test_for_a_lower_is_better_metric_a_negative_difference_is_the_network_ahead():
    baselines = {"linear": {"rmse": 2.0, "difference": {"rmse": {"value": -0.5, "interval": [-0.8, -0.2]}}}}
    assert uncertainty.verdict("rmse", 1.5, baselines, test_rows=100)["outcome"] == "ahead"
