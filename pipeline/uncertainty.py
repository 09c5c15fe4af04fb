"""How sure a test score is: a seeded bootstrap of every test metric, paired across models, and the verdict.

    draws = bootstrap(y_test, {"network": p_net, "linear": p_lin}, task="classification", n_classes=3)
    intervals(draws["network"])                      # {"balanced_accuracy": [0.95, 1.0], ...}
    difference(draws["network"], draws["linear"])    # {"balanced_accuracy": [-0.04, 0.01], ...}: network - linear
    verdict(...)                                     # "ahead" | "behind" | "not distinguishable", with its sentence

Every model is scored on the *same* resamples of the test rows, so the difference network - baseline has an
interval of its own (a paired bootstrap): two models that fail on the same hard rows are compared on what
differs between them, not on the luck of the split. Classification resamples are stratified (each class keeps
its test count), so a rare class never vanishes from a resample.

How it stays fast: the confusion-matrix metrics (accuracy, balanced accuracy, macro F1) depend on a resample
only through how many of each class's rows land in each cell (true class, every model's prediction). Drawing
those counts directly, one multinomial per class, *is* the stratified bootstrap for these metrics, and costs
nothing per test row. ROC-AUC and the regression metrics need the rows themselves: each resample's row counts
are drawn by index, in chunks, and the totals come from one matrix product (ROC-AUC only up to `AUC_MAX_ROWS`
test rows: above that its interval is left out, and `uncertainty.skipped` says so).
Pure NumPy: no I/O, no devices.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from pipeline import metrics

RESAMPLES, CONFIDENCE = 1000, 0.95
AUC_MAX_ROWS = 5_000           # above this, no ROC-AUC interval (each draw costs a pass over the sorted rows)
JOINT_CELLS_MAX = 4096         # (classes ** models) up to which confusion counts are drawn directly
CHUNK = 64                     # resamples per chunk on the by-index path


@dataclass(frozen=True)
class Bootstrap:
    """The settings of a bootstrap: recorded in metrics.json `uncertainty`."""
    resamples: int = RESAMPLES
    confidence: float = CONFIDENCE
    seed: int = 0


# ------------------------------------------------------------------------------------------ resampling
def bootstrap(y: np.ndarray, outputs: dict[str, np.ndarray], *, task: str, n_classes: int = 0,
              settings: Bootstrap = Bootstrap()) -> dict[str, dict[str, np.ndarray]]:
    """Per model, per metric: `settings.resamples` bootstrap values, every model on the same resamples.
    `outputs`: class probabilities (rows, n_classes) for classification, predictions (rows,) for regression."""
    rng = np.random.default_rng(settings.seed)
    y = np.asarray(y)
    if task == "classification":
        return _classification(y, outputs, n_classes, settings.resamples, rng)
    return _regression(y.astype(np.float64), outputs, settings.resamples, rng)


def _classification(y: np.ndarray, outputs: dict[str, np.ndarray], n_classes: int, resamples: int,
                    rng: np.random.Generator) -> dict[str, dict[str, np.ndarray]]:
    names = list(outputs)
    predicted = np.stack([np.asarray(outputs[m]).argmax(axis=1) for m in names])    # (models, rows)
    matrices = _confusion_draws(y, predicted, n_classes, resamples, rng)             # (models, R, K, K)
    draws = {m: _confusion_metrics(matrices[i]) for i, m in enumerate(names)}
    if len(y) <= AUC_MAX_ROWS and len(np.unique(y)) == n_classes >= 2:
        aucs = _auc_draws(y, [np.asarray(outputs[m], dtype=np.float64) for m in names], resamples, rng)
        for i, m in enumerate(names):
            draws[m]["roc_auc"] = aucs[i]
    return draws


def _confusion_draws(y: np.ndarray, predicted: np.ndarray, k: int, resamples: int,
                     rng: np.random.Generator) -> np.ndarray:
    """(models, R, K, K) confusion matrices of stratified resamples, for every model on the same resamples."""
    n_models = predicted.shape[0]
    out = np.zeros((n_models, resamples, k, k), dtype=np.int64)
    for c in range(k):
        rows = np.flatnonzero(y == c)
        if rows.size == 0:
            continue
        if k ** n_models <= JOINT_CELLS_MAX:
            # one cell per combination of the models' predictions: its count in a resample is multinomial
            cell = np.ravel_multi_index(tuple(predicted[:, rows]), (k,) * n_models)
            shares = np.bincount(cell, minlength=k ** n_models) / rows.size
            counts = rng.multinomial(rows.size, shares, size=resamples)                # (R, K**models)
            counts = counts.reshape((resamples,) + (k,) * n_models)
            for m in range(n_models):
                others = tuple(1 + j for j in range(n_models) if j != m)
                out[m, :, c, :] = counts.sum(axis=others) if others else counts
        else:  # many classes and models: resample the class's rows by index
            for start in range(0, resamples, CHUNK):
                stop = min(resamples, start + CHUNK)
                picks = rows[rng.integers(0, rows.size, size=(stop - start, rows.size))]   # (chunk, n_c)
                for m in range(n_models):
                    labels = predicted[m][picks] + k * np.arange(stop - start)[:, None]
                    out[m, start:stop, c, :] = np.bincount(labels.ravel(), minlength=(stop - start) * k
                                                           ).reshape(stop - start, k)
    return out


def _confusion_metrics(matrices: np.ndarray) -> dict[str, np.ndarray]:
    """accuracy, balanced accuracy and macro F1 of (R, K, K) confusion matrices (rows: true class), as
    `metrics.classification_metrics` computes them (macro over the classes present in the test split)."""
    diagonal = np.diagonal(matrices, axis1=1, axis2=2).astype(np.float64)          # (R, K)
    actual, predicted = matrices.sum(axis=2), matrices.sum(axis=1)
    present = actual[0] > 0                                                           # stratified: fixed counts
    recall = np.divide(diagonal, actual, out=np.zeros_like(diagonal), where=actual > 0)
    precision = np.divide(diagonal, predicted, out=np.zeros_like(diagonal), where=predicted > 0)
    denominator = precision + recall
    f1 = np.divide(2 * precision * recall, denominator, out=np.zeros_like(diagonal), where=denominator > 0)
    return {"accuracy": diagonal.sum(axis=1) / actual.sum(axis=1),
            "balanced_accuracy": recall[:, present].mean(axis=1),
            "f1_macro": f1[:, present].mean(axis=1)}


def _stratified_weights(y: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """(size, rows) counts of each test row in `size` stratified resamples: each class's rows drawn from its own."""
    weights = np.zeros((size, len(y)), dtype=np.float64)
    for c in np.unique(y):
        rows = np.flatnonzero(y == c)
        weights[:, rows] = _row_counts(rows.size, size, rng)
    return weights


def _weighted_auc(weights: np.ndarray, positive: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """ROC-AUC (ties count half) of one class against the rest, for each row of `weights` (R, rows)."""
    order = np.argsort(scores, kind="stable")
    s, pos, w = scores[order], positive[order], weights[:, order]
    # group tied scores: a positive beats the negatives strictly below it, and half of those tied with it
    starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])
    negative_w = np.add.reduceat(w * ~pos, starts, axis=1)                             # (R, groups)
    positive_w = np.add.reduceat(w * pos, starts, axis=1)
    below = np.cumsum(negative_w, axis=1) - negative_w
    wins = (positive_w * (below + 0.5 * negative_w)).sum(axis=1)
    return wins / (positive_w.sum(axis=1) * negative_w.sum(axis=1))


def _auc_draws(y: np.ndarray, probabilities: list[np.ndarray], resamples: int,
               rng: np.random.Generator) -> list[np.ndarray]:
    """Macro one-vs-rest ROC-AUC (the positive class's for two classes), per model, on shared resamples."""
    k = probabilities[0].shape[1]
    classes = [1] if k == 2 else list(range(k))
    result = [np.empty(resamples) for _ in probabilities]
    for start in range(0, resamples, CHUNK):
        stop = min(resamples, start + CHUNK)
        weights = _stratified_weights(y, stop - start, rng)
        for i, p in enumerate(probabilities):
            result[i][start:stop] = np.mean([_weighted_auc(weights, y == c, p[:, c]) for c in classes], axis=0)
    return result


def _regression(y: np.ndarray, outputs: dict[str, np.ndarray], resamples: int,
                rng: np.random.Generator) -> dict[str, dict[str, np.ndarray]]:
    """rmse, mae and r2 of each model on shared resamples: each resample's counts of the rows (R, rows) times the
    rows' sums (y, y², and per model e², |e|) gives every resample's totals in one matrix product."""
    n = len(y)
    columns = [y, y ** 2]
    for p in outputs.values():
        error = np.asarray(p, dtype=np.float64).reshape(-1) - y
        columns += [error ** 2, np.abs(error)]
    table = np.stack(columns, axis=1)                                                  # (rows, 2 + 2 * models)
    totals = np.concatenate([_row_counts(n, min(CHUNK, resamples - start), rng) @ table
                             for start in range(0, resamples, CHUNK)])                 # (R, columns)
    spread = totals[:, 1] - totals[:, 0] ** 2 / n                                      # sum of (y - mean)²
    draws = {}
    for i, m in enumerate(outputs):
        squared, absolute = totals[:, 2 + 2 * i], totals[:, 3 + 2 * i]
        with np.errstate(divide="ignore", invalid="ignore"):
            r2 = np.where(spread > 0, 1 - squared / spread, np.nan)
        draws[m] = {"rmse": np.sqrt(squared / n), "mae": absolute / n, "r2": r2}
    return draws


def _row_counts(n: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """(size, n): how often each of n rows is drawn in each of `size` plain (unstratified) resamples."""
    picks = rng.integers(0, n, size=(size, n), dtype=np.int64) + n * np.arange(size)[:, None]
    return np.bincount(picks.ravel(), minlength=size * n).reshape(size, n).astype(np.float64)


# ------------------------------------------------------------------------------------------ summaries
def _percentiles(values: np.ndarray, confidence: float) -> list[float] | None:
    values = values[np.isfinite(values)]
    if values.size == 0:
        return None
    tail = (1 - confidence) / 2
    low, high = np.quantile(values, [tail, 1 - tail])
    return [round(float(low), 6), round(float(high), 6)]


def intervals(draws: dict[str, np.ndarray], confidence: float = CONFIDENCE) -> dict[str, list[float]]:
    """Percentile interval of each metric: {"accuracy": [low, high], ...}."""
    found = {name: _percentiles(values, confidence) for name, values in draws.items()}
    return {name: interval for name, interval in found.items() if interval is not None}


def difference(network: dict[str, np.ndarray], baseline: dict[str, np.ndarray], *, point_network: dict[str, Any],
               point_baseline: dict[str, Any], confidence: float = CONFIDENCE) -> dict[str, dict[str, Any]]:
    """network - baseline per metric: the point difference and the paired interval (same resamples)."""
    result = {}
    for name in network.keys() & baseline.keys():
        a, b = point_network.get(name), point_baseline.get(name)
        interval = _percentiles(network[name] - baseline[name], confidence)
        if isinstance(a, (int, float)) and isinstance(b, (int, float)) and interval is not None:
            result[name] = {"value": round(float(a) - float(b), 6), "interval": interval}
    return result


LABELS = {"hist_gradient_boosting": "boosted trees", "linear": "the linear model",
          "tuned_trees": "tuned boosted trees"}


def verdict(metric: str, network: float, baselines: dict[str, dict[str, Any]], *, test_rows: int,
            confidence: float = CONFIDENCE) -> dict[str, Any] | None:
    """The network against the best baseline on `metric`, in words that follow the interval of the difference:
    "ahead" or "behind" only when the interval excludes 0, "not distinguishable" otherwise.
    `baselines`: {name: {metric: value, "difference": {metric: {"value", "interval"}}}}."""
    scored = {name: b for name, b in baselines.items()
              if isinstance(b, dict) and isinstance(b.get(metric), (int, float))
              and metric in (b.get("difference") or {})}
    if not scored or not isinstance(network, (int, float)):
        return None
    higher = metrics.higher_is_better(metric)
    best = max(scored, key=lambda name: scored[name][metric] if higher else -scored[name][metric])
    value, diff = scored[best][metric], scored[best]["difference"][metric]
    low, high = diff["interval"]
    better_low, better_high = (low, high) if higher else (-high, -low)   # > 0 means the network is better
    label = LABELS.get(best, best)
    head = (f"{metric}: {label} {value:.3f}, network {network:.3f}; network - {label} = {diff['value']:+.3f} "
            f"[{low:+.3f}, {high:+.3f}] ({round(100 * confidence)}% interval, {test_rows:,} test rows)")
    if better_low > 0:
        outcome, text = "ahead", f"{head}: the network is ahead"
    elif better_high < 0:
        outcome, text = "behind", f"{head}: {label} is ahead, and simpler to run"
    else:
        outcome, text = "not distinguishable", f"{head}: not distinguishable; {label} is simpler"
    return {"metric": metric, "network": round(float(network), 6), "baseline": best,
            "baseline_value": round(float(value), 6), "difference": diff["value"], "interval": diff["interval"],
            "outcome": outcome, "text": text}


def summarise(y: np.ndarray, *, task: str, n_classes: int, network: tuple[dict[str, Any], np.ndarray],
              baselines: dict[str, tuple[dict[str, Any], np.ndarray]], headline: str,
              settings: Bootstrap = Bootstrap()) -> dict[str, Any]:
    """Everything metrics.json gains from one bootstrap: the network's intervals, each baseline's intervals and
    paired difference, the bootstrap's settings and the verdict. `network` and each baseline: (scores, outputs)."""
    outputs = {"network": network[1], **{name: pair[1] for name, pair in baselines.items()}}
    draws = bootstrap(y, outputs, task=task, n_classes=n_classes, settings=settings)
    compared = {}
    for name, (scores, _) in baselines.items():
        compared[name] = {"intervals": intervals(draws[name], settings.confidence),
                          "difference": difference(draws["network"], draws[name], point_network=network[0],
                                                   point_baseline=scores, confidence=settings.confidence)}
    skipped = [] if task != "classification" or "roc_auc" in draws["network"] else [
        f"roc_auc: no interval above {AUC_MAX_ROWS:,} test rows (or with a class missing from the test split)"]
    judged = verdict(headline, network[0].get(headline),
                     {name: {**scores, **compared[name]} for name, (scores, _) in baselines.items()},
                     test_rows=len(y), confidence=settings.confidence)
    return {"test_intervals": intervals(draws["network"], settings.confidence), "baselines": compared,
            "uncertainty": {"method": "bootstrap", "resamples": settings.resamples,
                            "confidence": settings.confidence, "stratified": task == "classification",
                            "paired": True, "seed": settings.seed, "test_rows": int(len(y)), "skipped": skipped},
            "verdict": judged}
