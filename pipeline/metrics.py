"""Metric maths on NumPy arrays: pure functions, no I/O, no devices.

    classification_metrics(y_true, probabilities, classes)  -> accuracy, balanced accuracy, macro F1, ROC-AUC, ...
    regression_metrics(y_true, y_pred)                      -> rmse, mae, r2
"""
from __future__ import annotations

import numpy as np

from pipeline.errors import ConfigError

# Which direction is better, for early stopping and "best epoch".
HIGHER_IS_BETTER = {"accuracy", "balanced_accuracy", "f1_macro", "roc_auc", "r2"}


def higher_is_better(metric: str) -> bool:
    """`val_accuracy` -> True, `val_loss` -> False (the split prefix does not matter)."""
    name = metric.split("_", 1)[1] if metric.startswith(("val_", "test_")) else metric
    return name in HIGHER_IS_BETTER


# What the training loop produces per epoch, by task (as val_<name>; train_loss always).
TASK_METRICS = {"classification": ("loss", "accuracy", "balanced_accuracy", "f1_macro", "roc_auc"),
                "regression": ("loss", "rmse", "mae", "r2")}


def is_better(metric: str, value: float | None, best: float | None) -> bool:
    """Is `value` an improvement on `best` for `metric` (in its direction)? The one rule for "best epoch"."""
    if value is None or not np.isfinite(value):
        return False
    if best is None:
        return True
    return value > best if higher_is_better(metric) else value < best


def monitored_metric(requested: str, task: str, *, has_validation: bool) -> str:
    """The metric early stopping and "best" follow: `requested`, checked against what the task produces;
    train_loss when there is no validation split."""
    if not has_validation:
        return "train_loss"
    allowed = ["train_loss"] + [f"val_{name}" for name in TASK_METRICS[task]]
    if requested not in allowed:
        raise ConfigError(f"--early-stopping-metric {requested} is not produced for {task}; choose one of: "
                          f"{', '.join(allowed)}")
    return requested


def best_epoch(epochs: list[dict], metric: str) -> tuple[int, float] | None:
    """(epoch, value) of the best epoch by `metric` in its direction (the first, on ties), or None."""
    best: tuple[int, float] | None = None
    for entry in epochs:
        value = entry.get(metric)
        if isinstance(value, (int, float)) and is_better(metric, value, best[1] if best else None):
            best = (int(entry["epoch"]), float(value))
    return best


def overfitting(epochs: list[dict], metric: str = "val_loss", patience: int = 3) -> str | None:
    """The one overfitting rule (monitor alerts, the report's verdict): the monitored validation metric has
    not improved on its best for at least `patience` epochs while the training loss kept falling. Returns a
    sentence saying so, or None. "Improved" is `is_better`, the rule early stopping uses."""
    found = best_epoch(epochs, metric)
    if found is None or not metric.startswith("val_"):
        return None
    epoch, value = found
    since = [e for e in epochs if int(e["epoch"]) > epoch]
    at_best = next(e for e in epochs if int(e["epoch"]) == epoch).get("train_loss")
    last_train = since[-1].get("train_loss") if since else None
    if len(since) < patience or not isinstance(at_best, (int, float)) or not isinstance(last_train, (int, float)):
        return None
    if last_train >= at_best:
        return None
    latest = since[-1].get(metric)
    latest_text = f"{latest:.4g}" if isinstance(latest, (int, float)) else "n/a"
    return (f"{metric} has not improved for {len(since)} epochs (best {value:.4g} at epoch {epoch}, now "
            f"{latest_text}) while training loss fell ({at_best:.4g} -> {last_train:.4g})")


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """(n_classes, n_classes) counts; rows are true classes, columns predicted."""
    flat = y_true.astype(np.int64) * n_classes + y_pred.astype(np.int64)
    return np.bincount(flat, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def per_class_scores(matrix: np.ndarray) -> dict[str, np.ndarray]:
    true_pos = np.diag(matrix).astype(np.float64)
    predicted = matrix.sum(axis=0)
    actual = matrix.sum(axis=1)
    precision = np.divide(true_pos, predicted, out=np.zeros_like(true_pos), where=predicted > 0)
    recall = np.divide(true_pos, actual, out=np.zeros_like(true_pos), where=actual > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(true_pos), where=denom > 0)
    return {"precision": precision, "recall": recall, "f1": f1, "support": actual}


def roc_auc_ovr(y_true: np.ndarray, probabilities: np.ndarray) -> float | None:
    """Macro one-vs-rest ROC-AUC; None when a class is absent (AUC undefined)."""
    from sklearn.metrics import roc_auc_score

    n_classes = probabilities.shape[1]
    present = np.unique(y_true)
    if len(present) < 2 or len(present) < n_classes:
        return None
    if n_classes == 2:
        return float(roc_auc_score(y_true, probabilities[:, 1]))
    return float(roc_auc_score(y_true, probabilities, multi_class="ovr", average="macro",
                               labels=np.arange(n_classes)))


def classification_metrics(y_true: np.ndarray, probabilities: np.ndarray, *, detailed: bool = False,
                           classes: list[str] | None = None) -> dict:
    """Headline metrics from class probabilities (rows, n_classes); `detailed` adds the confusion matrix
    and per-class precision/recall/F1."""
    n_classes = probabilities.shape[1]
    y_pred = probabilities.argmax(axis=1)
    matrix = confusion_matrix(y_true, y_pred, n_classes)
    scores = per_class_scores(matrix)
    present = scores["support"] > 0
    result = {
        "accuracy": float((y_pred == y_true).mean()) if len(y_true) else float("nan"),
        "balanced_accuracy": float(scores["recall"][present].mean()) if present.any() else float("nan"),
        "f1_macro": float(scores["f1"][present].mean()) if present.any() else float("nan"),
        "roc_auc": roc_auc_ovr(y_true, probabilities),
    }
    if detailed:
        names = classes or [str(i) for i in range(n_classes)]
        result["confusion_matrix"] = matrix.tolist()
        result["per_class"] = {name: {"precision": float(scores["precision"][i]), "recall": float(scores["recall"][i]),
                                      "f1": float(scores["f1"][i]), "support": int(scores["support"][i])}
                               for i, name in enumerate(names)}
    return result


def regression_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    error = y_pred.astype(np.float64) - y_true.astype(np.float64)
    total = float(((y_true - y_true.mean()) ** 2).sum())
    return {"rmse": float(np.sqrt((error ** 2).mean())), "mae": float(np.abs(error).mean()),
            "r2": float(1 - (error ** 2).sum() / total) if total > 0 else float("nan")}


def average_precision(y_true: np.ndarray, probabilities: np.ndarray) -> float | None:
    """Area under the precision-recall curve (scikit-learn's average precision): of the positive class for two
    classes, macro one-vs-rest over the classes present for more. Unlike ROC-AUC it falls with the positives'
    share, so it is the score to read on an imbalanced table. None when no class can be scored."""
    from sklearn.metrics import average_precision_score

    n_classes = probabilities.shape[1]
    scored = [1] if n_classes == 2 else range(n_classes)
    values = [float(average_precision_score(y_true == c, probabilities[:, c])) for c in scored
              if 0 < (y_true == c).sum() < len(y_true)]
    return float(np.mean(values)) if values else None


def calibration(y_true: np.ndarray, probabilities: np.ndarray, bins: int = 10) -> dict:
    """How far predicted probabilities are from observed frequencies. Two classes: the positive class's
    probability against the share of positives (a reliability diagram); more classes: the top class's
    probability (the confidence) against how often it is right. `brier`: the mean squared error of the
    probabilities (of the positive class for two classes; summed over classes for more); `ece`: expected
    calibration error, the rows-weighted mean gap between confidence and frequency over equal-width bins."""
    n_classes = probabilities.shape[1]
    if n_classes == 2:
        confidence, observed = probabilities[:, 1], (y_true == 1).astype(np.float64)
        brier = float(((confidence - observed) ** 2).mean())
    else:
        confidence = probabilities.max(axis=1)
        observed = (probabilities.argmax(axis=1) == y_true).astype(np.float64)
        brier = float(((probabilities - np.eye(n_classes)[y_true]) ** 2).sum(axis=1).mean())
    which = np.minimum((confidence * bins).astype(int), bins - 1)
    count = np.bincount(which, minlength=bins)
    mean_confidence = np.bincount(which, weights=confidence, minlength=bins)
    mean_observed = np.bincount(which, weights=observed, minlength=bins)
    filled = count > 0
    mean_confidence[filled] /= count[filled]
    mean_observed[filled] /= count[filled]
    ece = float((np.abs(mean_confidence - mean_observed) * count).sum() / max(1, len(y_true)))
    table = [{"low": i / bins, "high": (i + 1) / bins, "count": int(count[i]),
              "confidence": round(float(mean_confidence[i]), 6), "observed": round(float(mean_observed[i]), 6)}
             for i in range(bins) if filled[i]]
    return {"brier": round(brier, 6), "ece": round(ece, 6), "of": "positive class" if n_classes == 2 else "top class",
            "bins": table}
