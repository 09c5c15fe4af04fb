"""metrics.json checked field by field (`normalise`): a value of the wrong type is left out and listed, never a
traceback. Also `thin`, the point budget of every curve."""
from __future__ import annotations

import json
import math
from typing import Any

COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#17becf", "#7f7f7f"]
MANY_CLASSES = 30     # above this, per-class figures and tables show a selection, not every class
MAX_POINTS = 2000     # a curve is thinned to about this many points (a figure has fewer pixels)
MAX_CURVES = 10       # ROC curves drawn at most (the largest classes)



# ---------------------------------------------------------------------------------------- checking values
NUMBER, WHOLE, TEXT, ANY = "number", "whole", "text", "any"
_EPOCH = {"epoch": WHOLE, "step": WHOLE, "*": NUMBER}
_SPEC: dict[str, Any] = {
    "run": {"name": TEXT, "status": TEXT, "started_at": TEXT, "ended_at": TEXT, "message": TEXT, "device": TEXT,
            "amp": TEXT, "host": TEXT, "resumed": [{"time": TEXT, "checkpoint": TEXT, "epoch": WHOLE, "step": WHOLE,
                                                    "*": ANY}],
            "mlflow": {"tracking_uri": TEXT, "run_id": TEXT, "experiment_id": TEXT, "*": ANY},
            "versions": {"*": TEXT}, "*": ANY},
    "config": {"*": ANY},
    "data": {"task": TEXT, "target": TEXT, "classes": [TEXT], "n_features": WHOLE, "original_features": [TEXT],
             "rows": {"*": WHOLE}, "class_counts": {"*": [WHOLE]}, "source": TEXT, "source_sha256": TEXT,
             "data_sha256": TEXT, "*": ANY},
    "epochs": [_EPOCH],
    "best": {"epoch": WHOLE, "metric": TEXT, "value": NUMBER, "values": {"*": NUMBER}, "*": ANY},
    "test": {"confusion_matrix": [[WHOLE]], "per_class": {"*": {"support": WHOLE, "*": NUMBER}},
             "roc_curves": {"*": {"fpr": [NUMBER], "tpr": [NUMBER]}}, "intervals": {"*": [NUMBER]},
             "average_precision": ANY, "calibration": {"brier": NUMBER, "ece": NUMBER, "*": ANY},
             "pr_curves": ANY, "threshold": ANY,
             "predictions": {"y_true": [NUMBER], "y_pred": [NUMBER]}, "*": NUMBER},
    "baselines": {"train_rows": WHOLE, "of_train_rows": WHOLE, "failed": {"*": TEXT},
                  "*": {"fit_seconds": NUMBER, "intervals": {"*": [NUMBER]},
                        "difference": {"*": {"value": NUMBER, "interval": [NUMBER]}}, "*": NUMBER}},
    "verdict": {"metric": TEXT, "network": NUMBER, "baseline": TEXT, "baseline_value": NUMBER, "difference": NUMBER,
                "interval": [NUMBER], "outcome": TEXT, "text": TEXT, "*": ANY},
    "uncertainty": {"*": ANY},
    "system": {"*": ANY},
    "*": ANY,
}
_LARGEST = 1e100  # no metric, count or time is larger: a bigger number is damage (and would break the axes)


def _check(value: Any, spec: Any, where: str, problems: list[str]) -> Any:
    """`value` if it has the type `spec` describes (recursively), else None with a line added to `problems`."""
    if spec == ANY or value is None:
        return value
    if spec in (NUMBER, WHOLE):
        number = value if isinstance(value, (int, float)) and not isinstance(value, bool) else None
        if number is not None and isinstance(number, float) and not math.isfinite(number):
            return None  # NaN/inf: strict JSON cannot hold them, Python's json can; "no value"
        if number is None or abs(number) > _LARGEST or (spec == WHOLE and number != int(number)):
            problems.append(f"{where} ({_brief(value)})")
            return None
        return int(number) if spec == WHOLE else number
    if spec == TEXT:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        problems.append(f"{where} ({_brief(value)})")
        return None
    if isinstance(spec, list):
        if not isinstance(value, list):
            problems.append(f"{where} ({_brief(value)}, not a list)")
            return None
        return [_check(item, spec[0], f"{where}[{i}]", problems) for i, item in enumerate(value)]
    if not isinstance(value, dict):
        problems.append(f"{where} ({_brief(value)}, not an object)")
        return None
    return {key: _check(item, spec.get(key, spec.get("*", ANY)), f"{where}.{key}" if where else key, problems)
            for key, item in value.items()}


def _brief(value: Any) -> str:
    text = json.dumps(value, default=str) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 30 else text[:27] + "..."


def normalise(raw: Any) -> tuple[dict[str, Any], list[str]]:
    """(metrics with every field of the type the sections expect, the fields that were not and were left out).

    Beyond types: `run`, `data` and `config` are objects; epochs without an epoch number are dropped; the task
    is classification or regression; a confusion matrix must be square over the classes; paired lists (ROC
    points, predictions) keep only complete pairs. A well-formed metrics.json comes back unchanged."""
    problems: list[str] = []
    if not isinstance(raw, dict):
        problems.append(f"the file holds {_brief(raw)}, not an object")
        raw = {}
    m = _check(raw, _SPEC, "", problems)
    for key in ("run", "config", "data"):
        m[key] = m.get(key) if isinstance(m.get(key), dict) else {}
    epochs = m.get("epochs") or []
    m["epochs"] = [e for e in epochs if isinstance(e, dict) and isinstance(e.get("epoch"), int)]
    if len(m["epochs"]) < len(epochs):
        problems.append(f"epochs: {len(epochs) - len(m['epochs'])} record(s) without an epoch number")
    data = m["data"]
    classes = data.get("classes")
    if classes is not None:
        data["classes"] = [name if name is not None else f"class {i}" for i, name in enumerate(classes)]
    if data.get("task") not in ("classification", "regression"):
        if "task" in data:
            problems.append(f"data.task ({_brief(data['task'])})")
        data["task"] = "classification" if data.get("classes") else "regression"
    k = len(data.get("classes") or [])
    if isinstance(data.get("class_counts"), dict):
        data["class_counts"] = {split: [c or 0 for c in counts] for split, counts in data["class_counts"].items()
                                if isinstance(counts, list) and len(counts) == k}
    for key in ("best", "baselines", "system", "progress", "verdict", "uncertainty"):
        if key in m and m[key] is not None and not isinstance(m[key], dict):
            m[key] = None
    test = m.get("test")
    if isinstance(test, dict):
        matrix = test.get("confusion_matrix")
        if matrix is not None and not (len(matrix) == k and all(isinstance(r, list) and len(r) == k for r in matrix)):
            problems.append(f"test.confusion_matrix (not {k} x {k}, one row and column per class)")
            test["confusion_matrix"] = None
        elif matrix is not None:
            test["confusion_matrix"] = [[c or 0 for c in row] for row in matrix]
        if "per_class" in test:
            test["per_class"] = {name: s for name, s in (test["per_class"] or {}).items() if isinstance(s, dict)}
        if "roc_curves" in test:
            test["roc_curves"] = {name: _pairs(c, "fpr", "tpr") for name, c in (test["roc_curves"] or {}).items()
                                  if isinstance(c, dict)}
        if isinstance(test.get("predictions"), dict):
            test["predictions"] = _pairs(test["predictions"], "y_true", "y_pred")
    return m, problems


def _pairs(item: dict[str, Any], a: str, b: str) -> dict[str, list[float]]:
    """Two parallel lists, keeping only positions where both hold a number."""
    kept = [(x, y) for x, y in zip(item.get(a) or [], item.get(b) or []) if x is not None and y is not None]
    return {a: [x for x, _ in kept], b: [y for _, y in kept]}


def thin(n: int, limit: int = MAX_POINTS, keep: tuple[int, ...] = ()) -> list[int]:
    """At most about `limit` evenly spaced indices of range(n), always with the first, the last and `keep`."""
    if n <= limit:
        return list(range(n))
    step = n / limit
    chosen = {int(i * step) for i in range(limit)} | {0, n - 1} | {i for i in keep if 0 <= i < n}
    return sorted(chosen)
