"""Baselines: what a user would try instead of a network, fitted on the same split and scored on the same test rows.

    scores = fit_baselines(X_train, y_train, X_test, y_test, task="classification", n_classes=3)
    # {"hist_gradient_boosting": {"accuracy": ..., "balanced_accuracy": ..., "fit_seconds": ...},
    #  "linear": {...}, "train_rows": 241, "of_train_rows": 241}

scikit-learn's HistGradientBoosting (the strong default for tables) and a linear model (logistic regression
or ridge), on the processed features the network sees. They answer the question a report should open with:
is the network worth it? Big tables are subsampled (a seeded random sample) so this costs seconds, and the
result says on how many rows they were fitted.
"""
from __future__ import annotations

import time
import warnings
from typing import Any

import numpy as np

from pipeline import metrics

MAX_ROWS = 20_000  # training rows the baselines see at most


def fit_baselines(X_train: np.ndarray, y_train: np.ndarray, X_test: np.ndarray, y_test: np.ndarray, *, task: str,
                  n_classes: int, seed: int = 0, max_rows: int = MAX_ROWS,
                  outputs: dict[str, np.ndarray] | None = None) -> dict[str, Any]:
    """Test scores of each baseline (the same metrics as the network's, plus `fit_seconds`). A baseline that
    fails (any exception: a subsample missing a class, a solver error) is listed under "failed" with its
    one-line reason and the others go on: a baseline never costs the network's run. `outputs`, when given,
    receives each baseline's test outputs (probabilities, or predictions) for the bootstrap."""
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
    from sklearn.linear_model import LogisticRegression, Ridge
    from threadpoolctl import threadpool_limits

    rows = X_train.shape[0]
    if rows > max_rows:
        keep = np.sort(np.random.default_rng(seed).choice(rows, size=max_rows, replace=False))
        X_fit, y_fit = np.asarray(X_train[keep]), np.asarray(y_train[keep])
    else:
        X_fit, y_fit = np.asarray(X_train), np.asarray(y_train)
    if task == "classification":
        models = {"hist_gradient_boosting": HistGradientBoostingClassifier(random_state=seed),
                  "linear": LogisticRegression(max_iter=1000)}
    else:
        models = {"hist_gradient_boosting": HistGradientBoostingRegressor(random_state=seed),
                  "linear": Ridge(alpha=1.0)}
    result: dict[str, Any] = {"train_rows": int(X_fit.shape[0]), "of_train_rows": int(rows)}
    for name, estimator in models.items():
        started = time.perf_counter()
        try:
            # one thread: OpenMP's spinning workers beside torch's (and anything else on the machine) made
            # HistGradientBoosting 10-30x slower here (0.2 s -> 6.6 s on 241 rows; 2.3 s -> 27 s on 20,000)
            with warnings.catch_warnings(), threadpool_limits(1):
                warnings.simplefilter("ignore")  # e.g. lbfgs "failed to converge": the score says enough
                estimator.fit(X_fit, y_fit)
            seconds = time.perf_counter() - started
            if task == "classification":
                predicted = class_probabilities(estimator, X_test, n_classes)
                scores = metrics.classification_metrics(np.asarray(y_test), predicted)
            else:
                predicted = estimator.predict(X_test)
                scores = metrics.regression_metrics(np.asarray(y_test), predicted)
        except Exception as exc:  # noqa: BLE001 - any failure of a baseline is reported, never fatal
            first = str(exc).splitlines()[0][:200] if str(exc) else ""
            result.setdefault("failed", {})[name] = f"{type(exc).__name__}: {first}".rstrip(": ")
            continue
        result[name] = {**scores, "fit_seconds": round(seconds, 3)}
        if outputs is not None:
            outputs[name] = predicted
    return result


def class_probabilities(estimator: Any, X: np.ndarray, n_classes: int) -> np.ndarray:
    """(rows, n_classes) probabilities, with zero columns for classes the training subsample lacked."""
    probabilities = np.zeros((X.shape[0], n_classes))
    probabilities[:, estimator.classes_.astype(int)] = estimator.predict_proba(X)
    return probabilities


def headline(task: str) -> str:
    """The one score a table of baselines is read by: balanced accuracy, or R² for regression."""
    return "balanced_accuracy" if task == "classification" else "r2"


def comparison_line(test: dict[str, Any], baselines: dict[str, Any] | None, task: str) -> str:
    """`test balanced_accuracy: network 0.912 [0.88, 0.94] · boosted trees 0.935 [...] · linear 0.871 [...]`, for the
    console, with each baseline that failed on a line of its own."""
    key = headline(task)
    def scored(value: Any, interval: Any) -> str:
        if not isinstance(value, (int, float)):
            return "n/a"
        return f"{value:.3f}" + (f" [{interval[0]:.3f}, {interval[1]:.3f}]" if isinstance(interval, list) else "")

    parts = [f"network {scored(test.get(key), (test.get('intervals') or {}).get(key))}"]
    for name, label in (("hist_gradient_boosting", "boosted trees"), ("linear", "linear")):
        entry = (baselines or {}).get(name) or {}
        if isinstance(entry.get(key), (int, float)):
            parts.append(f"{label} {scored(entry[key], (entry.get('intervals') or {}).get(key))}")
    line = f"test {key}: " + " · ".join(parts)
    if baselines and baselines["train_rows"] < baselines["of_train_rows"]:
        line += f" (baselines fitted on {baselines['train_rows']:,} of {baselines['of_train_rows']:,} training rows)"
    for name, reason in ((baselines or {}).get("failed") or {}).items():
        line += f"\nbaseline {name} failed and was skipped: {reason}"
    return line
