"""Phase 4: a standalone HTML training report, executed with papermill and rendered with nbconvert.

    python solutions/generate_report.py --metrics checkpoints/metrics.json --output training_report.html

`generate` runs the report notebook (`pipeline/templates/report.ipynb`) with the metrics path as a
papermill parameter, then renders it with a template that drops code cells and every script or font
from a CDN. Each section below returns an HTML string: every value that came from data or config is
escaped, figures are embedded as PNG data URIs, so the file opens offline and cannot be injected into.

A metrics.json is checked field by field when it is loaded (`normalise`): a value of the wrong type (a string
where a number belongs) is left out and listed in the summary, never a traceback. Every section scales with
the run: above `MANY_CLASSES` classes the confusion matrix shows the largest classes without per-cell labels
and per-class tables show the extremes; curves are thinned to `MAX_POINTS` points.
"""
from __future__ import annotations

import base64
import errno
import html
import io
import json
import math
import os
import re
import tempfile
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from pipeline import fileio, metrics, monitor
from pipeline.errors import DataError

TEMPLATES = resources.files("pipeline") / "templates"
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
            "versions": {"*": TEXT}, "git_commit": TEXT, "*": ANY},
    "config": {"*": ANY},
    "data": {"task": TEXT, "target": TEXT, "classes": [TEXT], "n_features": WHOLE, "original_features": [TEXT],
             "rows": {"*": WHOLE}, "class_counts": {"*": [WHOLE]}, "source": TEXT, "source_sha256": TEXT,
             "data_sha256": TEXT, "*": ANY},
    "epochs": [_EPOCH],
    "best": {"epoch": WHOLE, "metric": TEXT, "value": NUMBER, "values": {"*": NUMBER}, "*": ANY},
    "test": {"confusion_matrix": [[WHOLE]], "per_class": {"*": {"support": WHOLE, "*": NUMBER}},
             "roc_curves": {"*": {"fpr": [NUMBER], "tpr": [NUMBER]}},
             "pr_curves": {"*": {"recall": [NUMBER], "precision": [NUMBER], "share": NUMBER}},
             "intervals": {"*": [NUMBER]},
             "calibration": {"brier": NUMBER, "ece": NUMBER, "of": TEXT,
                             "bins": [{"count": WHOLE, "*": NUMBER}]},
             "predictions": {"y_true": [NUMBER], "y_pred": [NUMBER]}, "*": NUMBER},
    "baselines": {"train_rows": WHOLE, "of_train_rows": WHOLE, "failed": {"*": TEXT},
                  "*": {"fit_seconds": NUMBER, "intervals": {"*": [NUMBER]},
                        "difference": {"*": {"value": NUMBER, "interval": [NUMBER]}}, "*": NUMBER}},
    "uncertainty": {"method": TEXT, "skipped": [TEXT], "stratified": ANY, "paired": ANY, "*": NUMBER},
    "verdict": {"metric": TEXT, "baseline": TEXT, "outcome": TEXT, "text": TEXT, "interval": [NUMBER],
                "*": NUMBER},
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
    for key in ("best", "baselines", "system", "progress"):
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


# ---------------------------------------------------------------------------------------------- loading
@dataclass
class RunData:
    """A run as the sections read it. `metrics` is checked on construction (`normalise`); what was left out is
    in `problems`, and the system samples and events are checked as the monitor checks log records."""
    path: Path
    metrics: dict[str, Any]
    system: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.metrics, found = normalise(self.metrics)
        self.problems = list(self.problems) + found
        self.system = [r for r in map(monitor.clean_record, self.system) if r and "time" in r and
                       abs(r["time"]) < _LARGEST]
        self.events = [r for r in map(monitor.clean_record, self.events) if r]

    @property
    def name(self) -> str:
        return str(self.metrics["run"].get("name") or self.path.parent.name)

    @property
    def epochs(self) -> list[dict[str, Any]]:
        return self.metrics.get("epochs") or []

    @property
    def task(self) -> str:
        return self.metrics["data"]["task"]


def load_metrics(path: Path | str) -> dict[str, Any]:
    """Read and sanity-check a metrics.json written by train_pipeline.py (its values are checked by `RunData`)."""
    path = Path(path)
    if path.is_dir():
        raise DataError(f"{path}: is a folder; pass the metrics.json inside a training --save-dir")
    if not path.is_file():
        raise DataError(f"{path}: no such metrics file; pass the metrics.json in a training --save-dir")
    try:
        metrics = json.loads(path.read_bytes().decode("utf-8"))
    except OSError as exc:
        raise DataError(f"{path}: cannot be read ({exc.strerror or exc}); check the file's permissions") from None
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise DataError(f"{path}: not valid JSON ({str(exc)[:200]}); was it written by train_pipeline.py?") from None
    if not isinstance(metrics, dict) or metrics.get("schema_version") != 1 or "run" not in metrics:
        raise DataError(f"{path}: not a metrics.json (schema_version 1) written by train_pipeline.py")
    return metrics


def load_run(path: Path | str) -> RunData:
    """metrics.json plus, when present beside it, the resource samples and events under logs/."""
    path = Path(path)
    logs = path.parent / "logs"
    return RunData(path=path, metrics=load_metrics(path), system=_read_log(logs / "system.jsonl"),
                   events=[r for r in _read_log(logs / "metrics.jsonl") if r.get("type") in ("run", "status")])


def _read_log(path: Path) -> list[dict[str, Any]]:
    """A JSONL log's records; an unreadable or damaged log is no log (the report still renders)."""
    try:
        return list(fileio.read_jsonl(path))
    except (OSError, RecursionError):
        return []


# ---------------------------------------------------------------------------------------------- helpers
def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        return f"{value:.{digits}g}" if abs(value) < 1e4 else f"{value:,.0f}"
    return esc(value)


def table(rows: list[tuple[Any, ...]], header: tuple[str, ...] | None = None, *, cls: str = "kv") -> str:
    """An HTML table; every cell is escaped (numbers are formatted)."""
    head = "<tr>" + "".join(f"<th>{esc(h)}</th>" for h in header) + "</tr>" if header else ""
    body = "".join("<tr>" + "".join(f"<td>{fmt(c) if not isinstance(c, str) else esc(c)}</td>" for c in row) + "</tr>"
                   for row in rows)
    return f'<table class="{cls}">{head}{body}</table>'


def note(text: str, kind: str = "info") -> str:
    return f'<p class="note {kind}">{esc(text)}</p>'


def figure_html(figure: Any, alt: str) -> str:
    """A matplotlib figure as an embedded PNG (no file, no URL)."""
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(figure)
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    return f'<img class="figure" alt="{esc(alt)}" src="data:image/png;base64,{data}">'


def _plt() -> Any:
    """pyplot, configured for report figures (each is rendered to PNG and closed by `figure_html`)."""
    import matplotlib.pyplot as plt

    plt.rcParams["text.parse_math"] = False  # a class named "$x$" is text, not TeX
    plt.rcParams["figure.figsize"] = (7.5, 3.4)
    return plt


def _duration(start: str | None, end: str | None) -> str:
    from datetime import datetime

    if not start or not end:
        return "—"
    try:
        seconds = (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()
    except (TypeError, ValueError):  # not ISO times, or one with a time zone and one without
        return "—"
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}m {secs:02d}s" if minutes else f"{seconds:.1f}s"


def headline_metric(run: RunData) -> tuple[str, float | None]:
    """Balanced accuracy (a majority-class model scores 1/classes, not the majority's share) or R²."""
    test = run.metrics.get("test") or {}
    key = "balanced_accuracy" if run.task == "classification" else "r2"
    return key, test.get(key)


BASELINE_NAMES = {"hist_gradient_boosting": "boosted trees (HistGradientBoosting)",
                  "linear": "linear model (logistic / ridge regression)"}


def section_worth_it(run: RunData) -> str:
    """Is the network worth it? Its test scores beside boosted trees' and a linear model's, on the same rows."""
    test, found = run.metrics.get("test"), run.metrics.get("baselines")
    if not test or not found:
        return note("No baselines in this run (turned off with --no-baselines, or the run did not finish): "
                    "nothing to compare the network with.")
    key = headline_metric(run)[0]
    columns = (["balanced_accuracy", "accuracy", "f1_macro", "roc_auc"] if run.task == "classification"
               else ["r2", "rmse", "mae"])
    rows = [("network (this run)", *[test.get(c) for c in columns], None)]
    for name, label in BASELINE_NAMES.items():
        scores = found.get(name) or {}
        rows.append((label, *[scores.get(c) for c in columns], scores.get("fit_seconds")))
    verdict = (run.metrics.get("verdict") or {}).get("text")
    uncertainty = run.metrics.get("uncertainty") or {}
    if verdict:
        verdict = verdict[0].upper() + verdict[1:] + "."
        rows = [(r[0], *[with_interval(v, intervals_of(test if n == 0 else found.get(name), c))
                         for v, c in zip(r[1:-1], columns)], r[-1])
                for n, (r, name) in enumerate(zip(rows, ["network", *BASELINE_NAMES]))]
        verdict_note = note(f"Intervals: {round(100 * (uncertainty.get('confidence') or 0.95))}% bootstrap intervals "
                            f"over {uncertainty.get('resamples', 1000):,} resamples of the "
                            f"{uncertainty.get('test_rows', 0):,} test rows, stratified by class where there are "
                            "classes, every model on the same resamples: the verdict reads the interval of the "
                            "difference, not the two scores. An interval that spans 0 means this test split cannot "
                            "tell the two apart.")
    else:  # a metrics.json written before intervals existed: the scores are point estimates, and say so
        verdict = (f"No intervals in this run's metrics.json (written by an earlier version): the test {key} scores "
                   "below are point estimates, and small differences between them may be noise.")
        verdict_note = ""
    for name, reason in (found.get("failed") or {}).items():
        verdict_note += note(f"The {BASELINE_NAMES.get(name, name)} baseline failed and was skipped: {reason}", "warn")
    sample = ""
    fitted, of = found.get("train_rows") or 0, found.get("of_train_rows") or 0
    if fitted < of:
        sample = note(f"The baselines were fitted on a random {fitted:,} of the {of:,} training rows, to keep them "
                      "to seconds.")
    plt = _plt()
    labels = [r[0].split(" (")[0] for r in rows]
    points = [test.get(key), *[(found.get(name) or {}).get(key) for name in BASELINE_NAMES]]
    values = [v if isinstance(v, (int, float)) and abs(v) < 1e6 else 0.0 for v in points]
    figure, ax = plt.subplots(figsize=(7.5, 1.9))
    ax.barh(labels[::-1], values[::-1], color=["#7f7f7f", "#2ca02c", "#1f77b4"])
    for y, v in enumerate(values[::-1]):
        ax.text(v, y, f" {v:.3f}", va="center")
    ax.set(xlabel=f"test {key}", xlim=(min(0.0, min(values)), max(1.0, max(values)) * 1.12))
    return (f"<p><strong>{esc(verdict)}</strong></p>" + figure_html(figure, f"test {key} of each model")
            + table(rows, ("model", *columns, "fit seconds"), cls="grid") + verdict_note + sample)


def intervals_of(scores: dict[str, Any] | None, metric: str) -> list[float] | None:
    interval = ((scores or {}).get("intervals") or {}).get(metric)
    return interval if isinstance(interval, list) and len(interval) == 2 and None not in interval else None


def with_interval(value: Any, interval: list[float] | None) -> Any:
    """`0.989 [0.967, 1.000]` (three decimals, the report's rule for scores), or the value alone."""
    if not isinstance(value, (int, float)):
        return value
    return f"{value:.3f}" + (f" [{interval[0]:.3f}, {interval[1]:.3f}]" if interval else "")


# ---------------------------------------------------------------------------------------------- sections
def section_summary(run: RunData) -> str:
    m = run.metrics
    info = m["run"]
    status = str(info.get("status"))
    best = m.get("best") or {}
    rows = [("run", run.name), ("status", status), ("started", info.get("started_at")),
            ("ended", info.get("ended_at")), ("duration", _duration(info.get("started_at"), info.get("ended_at"))),
            ("device", f"{info.get('device')} (AMP {info.get('amp', 'off')})"),
            ("processes", f"{info.get('world_size', 1)} (effective batch {info.get('effective_batch_size')})"
             if isinstance(info.get("world_size"), int) and info["world_size"] > 1 else 1),
            ("epochs run", len(run.epochs)), ("best epoch", best.get("epoch")),
            (f"best {best.get('metric', 'metric')}", best.get("value"))]
    key, value = headline_metric(run)
    if value is not None:
        rows.append((f"test {key}", value))
    cards = "".join(f'<div class="card"><div class="label">{esc(k)}</div><div class="value">{fmt(v)}</div></div>'
                    for k, v in (("status", status), ("best epoch", best.get("epoch")), (f"test {key}", value)))
    message = note(info["message"], "warn" if status in ("failed", "interrupted") else "info") if info.get("message") else ""
    return f'<div class="cards status-{esc(status)}">{cards}</div>{message}{problems_note(run)}{table(rows)}'


PATH_SETTINGS = ("data_dir", "save_dir")


def short_path(value: Any) -> Any:
    """A machine path as the reader would type it: relative to the current folder when inside it, else from `~`."""
    if not isinstance(value, str) or not value.startswith("/"):
        return value
    path = Path(value)
    for base, shown in ((Path.cwd(), "."), (Path.home(), "~")):
        try:
            return str(Path(shown) / path.relative_to(base))
        except ValueError:
            continue
    return value


def section_hyperparameters(run: RunData) -> str:
    """The settings that differ from the defaults first (what makes this run this run), then all of them folded."""
    from pipeline import config as config_lib

    config = run.metrics.get("config") or {}
    defaults = config_lib.TrainConfig("", "").to_dict()

    def shown(key: str, value: Any) -> Any:
        if key in PATH_SETTINGS:
            return short_path(value)
        return value if isinstance(value, (int, float, bool)) or value is None else (
            json.dumps(value) if not isinstance(value, str) else value)

    changed = [(k, shown(k, v), shown(k, defaults[k])) for k, v in sorted(config.items())
               if k in defaults and k not in PATH_SETTINGS and json.dumps(v) != json.dumps(defaults[k])]
    out = (table(changed, ("setting", "this run", "default"), cls="grid") if changed
           else note("Every setting is at its default."))
    every = table([(k, shown(k, v)) for k, v in sorted(config.items())], ("parameter", "value"))
    return out + f"<details><summary>All {len(config):,} settings (as resolved)</summary>{every}</details>"


def problems_note(run: RunData) -> str:
    """A warning listing (a few of) the values of metrics.json that had the wrong type and were left out."""
    if not run.problems:
        return ""
    shown = "; ".join(run.problems[:5]) + (f"; and {len(run.problems) - 5:,} more" if len(run.problems) > 5 else "")
    return note(f"{run.path}: {len(run.problems):,} value(s) of the wrong type were left out of this report: {shown}.",
                "warn")


def some_names(names: list[Any], limit: int = 50) -> str:
    return ", ".join(map(str, names[:limit])) + (f" and {len(names) - limit:,} more" if len(names) > limit else "")


def section_data(run: RunData) -> str:
    plt = _plt()
    d = run.metrics["data"]
    rows = [("source", short_path(d.get("source"))), ("target", d.get("target")), ("task", d.get("task")),
            ("processed features", d.get("n_features"))]
    rows += [(f"rows: {split}", n) for split, n in (d.get("rows") or {}).items()]
    out = table(rows)
    out += f"<p>Original features: {esc(some_names([f for f in d.get('original_features') or [] if f is not None]))}</p>"
    counts = d.get("class_counts")
    classes = d.get("classes") or []
    if counts and classes and len(classes) <= MANY_CLASSES:
        figure, ax = plt.subplots(figsize=(7.5, 2.8))
        width = 0.8 / len(counts)
        for i, (split, values) in enumerate(counts.items()):
            ax.bar([x + i * width for x in range(len(classes))], values, width=width, label=split,
                   color=COLOURS[i % len(COLOURS)])
        ax.set_xticks([x + width * (len(counts) - 1) / 2 for x in range(len(classes))], classes)
        ax.set(title="class balance per split", ylabel="rows")
        ax.legend()
        out += figure_html(figure, "class balance per split")
    elif counts and classes:  # many classes: one line per split, classes sorted by their training rows
        import numpy as np

        first = np.asarray(next(iter(counts.values())), dtype=float)
        order = np.argsort(-first, kind="stable")
        figure, ax = plt.subplots(figsize=(7.5, 2.8))
        for i, (split, values) in enumerate(counts.items()):
            ax.plot(np.asarray(values, dtype=float)[order], label=split, color=COLOURS[i % len(COLOURS)])
        ax.set(title=f"rows per class, {len(classes):,} classes, largest first", xlabel="class rank", ylabel="rows")
        ax.legend()
        out += figure_html(figure, "rows per class in each split")
    return out


def _epoch_points(run: RunData) -> list[dict[str, Any]]:
    """The epochs to draw: all of them, or about MAX_POINTS evenly spaced ones keeping the best epoch."""
    best = (run.metrics.get("best") or {}).get("epoch")
    keep = tuple(i for i, e in enumerate(run.epochs) if e["epoch"] == best)
    return [run.epochs[i] for i in thin(len(run.epochs), keep=keep)]


def _marker(n: int) -> dict[str, Any]:
    return {"marker": "o", "ms": 3} if n <= 200 else {}


def section_learning_curves(run: RunData) -> str:
    if not run.epochs:
        return note("No epoch finished, so there are no learning curves.", "warn")
    plt = _plt()
    shown = _epoch_points(run)
    epochs = [e["epoch"] for e in shown]
    style = _marker(len(shown))
    figure, axes = plt.subplots(1, 2, figsize=(11, 3.6))
    axes[0].plot(epochs, [e.get("train_loss") for e in shown], label="train", **style)
    if any(e.get("val_loss") is not None for e in shown):
        axes[0].plot(epochs, [e.get("val_loss") for e in shown], label="validation", **style)
    best = (run.metrics.get("best") or {}).get("epoch")
    if best:
        for ax in axes:
            ax.axvline(best, color="grey", linestyle="--", linewidth=1)
        axes[0].annotate(f"best epoch {best}", xy=(best, axes[0].get_ylim()[1]), fontsize=8, ha="left", va="top")
    axes[0].set(title="loss", xlabel="epoch")
    axes[0].legend()
    metric = "val_accuracy" if run.task == "classification" else "val_r2"
    values = [e.get(metric) for e in shown]
    if any(v is not None for v in values):
        axes[1].plot(epochs, values, color="tab:green", label=metric, **style)
        if run.task == "classification":
            axes[1].plot(epochs, [e.get("val_f1_macro") for e in shown], color="tab:purple", label="val_f1_macro",
                         **style)
        axes[1].legend()
    axes[1].set(title="validation metrics", xlabel="epoch")
    figure.tight_layout()
    return figure_html(figure, "learning curves: train and validation loss, validation metrics")


def section_learning_rate(run: RunData) -> str:
    if not run.epochs:
        return note("No learning-rate record.", "warn")
    rates = {e.get("lr") for e in run.epochs}
    if len(rates) == 1:
        return note(f"A constant learning rate ({fmt(next(iter(rates)))}, no schedule): nothing to plot.")
    plt = _plt()
    shown = _epoch_points(run)
    figure, ax = plt.subplots(figsize=(7.5, 2.6))
    ax.plot([e["epoch"] for e in shown], [e.get("lr") for e in shown], **_marker(len(shown)))
    ax.set(title=f"learning rate ({(run.metrics.get('config') or {}).get('scheduler', 'none')} schedule)",
           xlabel="epoch", ylabel="lr at epoch end")
    return figure_html(figure, "learning rate per epoch")


def overfitting_analysis(epochs: list[dict[str, Any]], metric: str = "val_loss", patience: int = 3) -> dict[str, Any]:
    """Generalisation gap per epoch, the best epoch by the monitored `metric` (in its direction), and a
    plain-words verdict from the project's one overfitting rule (`metrics.overfitting`). Pure."""
    pairs = [(e["epoch"], e.get("train_loss"), e.get("val_loss")) for e in epochs]
    pairs = [(n, t, v) for n, t, v in pairs if t is not None and v is not None]
    if len(pairs) < 2:
        return {"gaps": [], "verdict": "Too few epochs with a validation loss to judge."}
    gaps = [(n, v - t) for n, t, v in pairs]
    best = metrics.best_epoch(epochs, metric)
    finding = metrics.overfitting(epochs, metric, patience)
    if finding:
        verdict = (f"Overfitting: {finding}. The best checkpoint (epoch {best[0]}, not the last) is the one "
                   "evaluated and exported.")
    elif gaps[-1][1] > 0.5 * abs(pairs[-1][2]):
        verdict = ("A large generalisation gap: the model fits training data much better than validation data. "
                   "More data, dropout or weight decay may help.")
    else:
        verdict = f"No sign of overfitting: {metric} kept improving, or training loss stopped falling with it."
    return {"gaps": gaps, "best_epoch": best[0] if best else None, "metric": metric, "verdict": verdict}


def section_overfitting(run: RunData) -> str:
    analysis = overfitting_analysis(run.epochs, (run.metrics.get("best") or {}).get("metric") or "val_loss")
    out = f"<p>{esc(analysis['verdict'])}</p>"
    out += ("<p>The <em>generalisation gap</em> is validation loss minus training loss. It usually grows slowly; "
            "when it grows while validation loss rises, the model is memorising the training set.</p>")
    if analysis["gaps"]:
        plt = _plt()
        gaps = [analysis["gaps"][i] for i in thin(len(analysis["gaps"]))]
        figure, ax = plt.subplots(figsize=(7.5, 2.6))
        ax.plot([g[0] for g in gaps], [g[1] for g in gaps], color="tab:red", **_marker(len(gaps)))
        ax.axhline(0, color="grey", linewidth=0.8)
        ax.set(title="generalisation gap (val loss - train loss)", xlabel="epoch")
        out += figure_html(figure, "generalisation gap over epochs")
    return out


def section_test(run: RunData) -> str:
    test = run.metrics.get("test")
    if not test:
        status = run.metrics["run"].get("status")
        return note(f"No test evaluation: the run ended with status '{status}' before it.", "warn")
    plt = _plt()
    if run.task == "regression":
        out = table([(k, test.get(k)) for k in ("loss", "rmse", "mae", "r2")], ("metric", "value"))
        predictions = test.get("predictions")
        if predictions and predictions.get("y_true"):
            keep = thin(len(predictions["y_true"]), 5000)
            y, p = [predictions["y_true"][i] for i in keep], [predictions["y_pred"][i] for i in keep]
            figure, axes = plt.subplots(1, 2, figsize=(11, 3.6))
            axes[0].scatter(y, p, s=8, alpha=0.6)
            low, high = min(y + p), max(y + p)
            axes[0].plot([low, high], [low, high], color="grey", linestyle="--")
            axes[0].set(title="predicted vs actual", xlabel="actual", ylabel="predicted")
            axes[1].scatter(p, [a - b for a, b in zip(y, p)], s=8, alpha=0.6)
            axes[1].axhline(0, color="grey", linestyle="--")
            axes[1].set(title="residuals", xlabel="predicted", ylabel="actual - predicted")
            figure.tight_layout()
            out += figure_html(figure, "predicted versus actual values, and residuals")
        return out
    classes = run.metrics["data"].get("classes") or []
    calibration = test.get("calibration") or {}
    rows = [(k, with_interval(test.get(k), intervals_of(test, k)))
            for k in ("loss", "accuracy", "balanced_accuracy", "f1_macro", "roc_auc", "average_precision")]
    rows += [(f"Brier score ({calibration.get('of', '')})", calibration.get("brier")),
             ("expected calibration error", calibration.get("ece"))] if calibration else []
    out = table(rows, ("metric", "value [95% interval]" if test.get("intervals") else "value"))
    out += per_class_table(test.get("per_class") or {})
    matrix = test.get("confusion_matrix")
    figure, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    if matrix:
        out += confusion_figure(axes[0], matrix, classes)
    curves = test.get("roc_curves") or {}
    drawn = largest_classes(list(curves), test.get("per_class") or {}, MAX_CURVES)
    for i, name in enumerate(drawn):
        curve = curves[name]
        axes[1].plot(curve["fpr"], curve["tpr"], label=name, color=COLOURS[i % len(COLOURS)])
    axes[1].plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=0.8)
    title = "ROC (one vs rest)" + (f", the {len(drawn)} largest of {len(curves):,} classes" if len(drawn) < len(curves)
                                   else "")
    axes[1].set(title=title, xlabel="false positive rate", ylabel="true positive rate")
    if drawn:
        axes[1].legend(fontsize=8)
    figure.tight_layout()
    out += figure_html(figure, "confusion matrix and ROC curves on the test split")
    return out + precision_recall_and_calibration(test, classes)


def precision_recall_and_calibration(test: dict[str, Any], classes: list[str]) -> str:
    """Precision-recall curves (the curve to read on an imbalanced table: its floor is the class's share, not
    0.5) and the reliability diagram (predicted probability against observed frequency)."""
    curves, calibration = test.get("pr_curves") or {}, test.get("calibration") or {}
    if not curves and not calibration.get("bins"):
        return ""
    plt = _plt()
    figure, axes = plt.subplots(1, 2, figsize=(11, 4.0))
    drawn = largest_classes(list(curves), test.get("per_class") or {}, MAX_CURVES)
    for i, name in enumerate(drawn):
        curve, colour = curves[name], COLOURS[i % len(COLOURS)]
        axes[0].plot(curve["recall"], curve["precision"], label=f"{name} (share {curve['share']:.3f})", color=colour)
        axes[0].axhline(curve["share"], color=colour, linestyle=":", linewidth=0.8)
    axes[0].set(title="precision-recall (dotted: a random guess)", xlabel="recall", ylabel="precision",
                xlim=(0, 1), ylim=(0, 1.02))
    if drawn:
        axes[0].legend(fontsize=8)
    bins = calibration.get("bins") or []
    if bins:
        axes[1].plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=0.8)
        axes[1].plot([b["confidence"] for b in bins], [b["observed"] for b in bins], "o-")
        axes[1].set(title=f"reliability ({calibration.get('of')}): Brier {calibration.get('brier', 0):.3f}, "
                          f"ECE {calibration.get('ece', 0):.3f}",
                    xlabel="predicted probability", ylabel="observed frequency", xlim=(0, 1), ylim=(0, 1))
    figure.tight_layout()
    return figure_html(figure, "precision-recall curves and reliability diagram on the test split")


def largest_classes(names: list[str], per_class: dict[str, dict[str, Any]], k: int) -> list[str]:
    """Up to `k` of `names`, those with the most test rows first (file order when supports are unknown)."""
    if len(names) <= k:
        return names
    return sorted(names, key=lambda n: -((per_class.get(n) or {}).get("support") or 0))[:k]


def per_class_table(per_class: dict[str, dict[str, Any]]) -> str:
    """Precision, recall, F1 and support per class; above MANY_CLASSES, the worst and the largest classes."""
    rows = [(name, s.get("precision"), s.get("recall"), s.get("f1"), s.get("support")) for name, s in per_class.items()]
    header = ("class", "precision", "recall", "F1", "support")
    if len(rows) <= MANY_CLASSES:
        return table(rows, header, cls="grid")
    present = [r for r in rows if (r[4] or 0) > 0]
    worst = sorted(present, key=lambda r: (r[3] if r[3] is not None else math.inf, -(r[4] or 0)))[:10]
    largest = sorted(rows, key=lambda r: -(r[4] or 0))[:10]
    return (f"<p>{len(rows):,} classes: the 10 with the lowest F1 (among those in the test split), then the 10 "
            "largest. Every class is in metrics.json (<code>test.per_class</code>).</p>"
            + table(worst, header, cls="grid") + table(largest, header, cls="grid"))


def confusion_figure(ax: Any, matrix: list[list[int]], classes: list[str]) -> str:
    """Draw the confusion matrix on `ax`; returns HTML to put beside the figure (the top confusions, for many
    classes). Up to MANY_CLASSES classes: every cell with its count. More: the MANY_CLASSES largest classes and
    one 'all others' row and column, colour only (a text label per cell was 250,000 labels for 500 classes)."""
    import numpy as np

    # (true class, predicted class); a damaged file may hold counts beyond int64 (up to the checks' 1e100)
    counts = np.asarray(matrix, dtype=np.int64 if max((abs(v) for row in matrix for v in row), default=0) < 2 ** 62
                        else np.float64)
    names = list(classes)
    extra = ""
    if len(names) > MANY_CLASSES:
        confused = counts.copy()
        np.fill_diagonal(confused, 0)
        top = np.argsort(confused, axis=None)[::-1][:10]
        pairs = [(names[i], names[j], int(confused[i, j])) for i, j in zip(*np.unravel_index(top, confused.shape))
                 if confused[i, j] > 0]
        extra = ("<p>The most frequent confusions on the test split:</p>"
                 + table(pairs, ("true class", "predicted as", "rows"), cls="grid")) if pairs else ""
        keep = np.argsort(-counts.sum(axis=1), kind="stable")[:MANY_CLASSES]
        rest = np.setdiff1d(np.arange(len(names)), keep)
        groups = [[int(i)] for i in keep] + [rest.tolist()]
        counts = np.array([[counts[np.ix_(a, b)].sum() for b in groups] for a in groups])
        names = [names[i] for i in keep] + [f"all {len(rest):,} others"]
    ax.imshow(counts, cmap="Blues")
    if len(classes) <= MANY_CLASSES:
        limit = counts.max(initial=0) / 2
        for i, row in enumerate(counts):
            for j, count in enumerate(row):
                ax.text(j, i, str(count), ha="center", va="center", color="white" if count > limit else "black")
    ax.set_xticks(range(len(names)), names, rotation=30 if len(names) <= 10 else 90, ha="right",
                  fontsize=None if len(names) <= 10 else 6)
    ax.set_yticks(range(len(names)), names, fontsize=None if len(names) <= 10 else 6)
    title = "confusion matrix" if len(classes) <= MANY_CLASSES else f"confusion matrix, {MANY_CLASSES} largest classes"
    ax.set(title=title, xlabel="predicted", ylabel="true")
    return extra


def section_throughput(run: RunData) -> str:
    if not run.epochs:
        return note("No epoch timings.", "warn")
    plt = _plt()
    shown = _epoch_points(run)
    epochs = [e["epoch"] for e in shown]
    figure, axes = plt.subplots(1, 2, figsize=(11, 3.2))
    axes[0].plot(epochs, [e.get("samples_per_second") for e in shown], **_marker(len(shown)))
    axes[0].set(title="throughput", xlabel="epoch", ylabel="samples / second")
    data_s = [e.get("data_seconds") or 0.0 for e in shown]
    compute_s = [e.get("compute_seconds") or 0.0 for e in shown]
    if len(shown) <= 200:
        axes[1].bar(epochs, compute_s, label="compute")
        axes[1].bar(epochs, data_s, bottom=compute_s, label="waiting for data")
    else:  # thousands of bars take longer to draw than they are worth
        axes[1].stackplot(epochs, compute_s, data_s, labels=["compute", "waiting for data"])
    axes[1].set(title="epoch time", xlabel="epoch", ylabel="seconds")
    axes[1].legend()
    figure.tight_layout()
    total = sum(e.get("epoch_seconds") or 0 for e in run.epochs)
    waited = sum(e.get("data_seconds") or 0 for e in run.epochs)
    return (table([("total training time", f"{total:.2f}s"), ("mean epoch", f"{total / len(run.epochs):.3f}s"),
                   ("data-wait share", f"{100 * waited / total:.1f}%" if total > 0 else "—")])
            + figure_html(figure, "throughput and epoch time split into compute and data wait"))


def section_system(run: RunData) -> str:
    summary = run.metrics.get("system") or {}
    rows = [(k, v) for k, v in summary.items() if not isinstance(v, dict)]
    out = table(rows) if rows else ""
    if not run.system:
        return out + note("No resource samples were recorded (logs/system.jsonl missing or sampling off).")
    plt = _plt()
    samples = [run.system[i] for i in thin(len(run.system))]
    t0 = samples[0]["time"]
    times = [s["time"] - t0 for s in samples]
    gpus = sorted({g["index"] for s in samples for g in s.get("gpus", [])})[:8]
    figure, axes = plt.subplots(1, 2 + bool(gpus), figsize=(11 + 4 * bool(gpus), 3.2))
    axes[0].plot(times, [s.get("cpu_percent") for s in samples], label="machine")
    axes[0].plot(times, [s.get("process_cpu_percent") for s in samples], label="training process")
    axes[0].set(title="CPU %", xlabel="seconds")
    axes[0].legend()
    axes[1].plot(times, [s.get("rss_mb") for s in samples], label="process RSS")
    axes[1].plot(times, [s.get("ram_used_mb") for s in samples], label="machine RAM used")
    axes[1].set(title="memory (MB)", xlabel="seconds")
    axes[1].legend()
    for index in gpus:
        series = [next((g for g in s.get("gpus", []) if g["index"] == index), {}) for s in samples]
        axes[2].plot(times, [g.get("util_percent") for g in series], label=f"GPU {index} util %")
        axes[2].plot(times, [g.get("temperature_c") for g in series], label=f"GPU {index} °C")
        axes[2].set(title="GPU", xlabel="seconds")
        axes[2].legend()
    figure.tight_layout()
    return out + figure_html(figure, "system resources over time")


def section_events(run: RunData) -> str:
    info = run.metrics["run"]
    rows = [("resumed", r.get("time"), f"from {r.get('checkpoint')} at epoch {r.get('epoch')}, step {r.get('step')}")
            for r in info.get("resumed") or [] if isinstance(r, dict)]
    rows += [("status", "", f"{e.get('status')}: {e.get('message') or ''}") for e in run.events if e.get("type") == "status"]
    if not rows:
        return note("The run was never interrupted or resumed.")
    more = note(f"... and {len(rows) - 100:,} more events, not shown.") if len(rows) > 100 else ""
    return table(rows[:50] + rows[-50:] if more else rows, ("event", "time", "details"), cls="grid") + more


def section_reproducibility(run: RunData) -> str:
    info, d, config = run.metrics["run"], run.metrics["data"], run.metrics.get("config") or {}
    rows = [("seed", config.get("seed")), ("deterministic mode", config.get("deterministic")),
            ("source data sha256", d.get("source_sha256")), ("processed data fingerprint", d.get("data_sha256"))]
    rows += [(f"version: {k}", v) for k, v in (info.get("versions") or {}).items()]
    rows.append(("git commit", info.get("git_commit") or "— (not run from a git checkout)"))
    mlflow = info.get("mlflow")
    out = table(rows)
    if mlflow:
        uri, run_id, experiment = mlflow.get("tracking_uri") or "", mlflow.get("run_id"), mlflow.get("experiment_id")
        if uri.startswith(("http://", "https://")) and run_id and experiment:
            link = f"{uri.rstrip('/')}/#/experiments/{experiment}/runs/{run_id}"
            out += f'<p>MLflow run: <a href="{esc(link)}">{esc(link)}</a></p>'
        else:
            out += note(f"MLflow run {run_id} in {short_path(uri.replace('sqlite:///', '')) if uri else 'a local store'}"
                        ": open it with `make mlflow-ui` (or `mlflow ui --backend-store-uri {uri}`), then the "
                        "experiment's runs.")
    return out


def section_comparison(runs: list[RunData]) -> str:
    """Several runs: curves overlaid, and a table of the settings that differ against the results."""
    if len(runs) < 2:
        return ""
    plt = _plt()
    figure, axes = plt.subplots(1, 2, figsize=(11, 3.6))
    for i, run in enumerate(runs):
        colour = COLOURS[i % len(COLOURS)]
        shown = _epoch_points(run)
        epochs = [e["epoch"] for e in shown]
        axes[0].plot(epochs, [e.get("val_loss", e.get("train_loss")) for e in shown], color=colour, label=run.name)
        axes[0].plot(epochs, [e.get("train_loss") for e in shown], color=colour, linestyle=":", linewidth=1)
        metric = "val_accuracy" if run.task == "classification" else "val_r2"
        axes[1].plot(epochs, [e.get(metric) for e in shown], color=colour, label=run.name)
    axes[0].set(title="validation loss (solid) and train loss (dotted)", xlabel="epoch")
    axes[1].set(title="validation metric", xlabel="epoch")
    axes[0].legend(fontsize=8)
    figure.tight_layout()
    configs = [r.metrics.get("config") or {} for r in runs]
    ignore = {"save_dir", "run_name", "resolved_device", "data_dir"}
    differing = sorted(k for k in set().union(*configs) if k not in ignore and len({json.dumps(c.get(k)) for c in configs}) > 1)
    header = ("run", *[f"setting: {k}" for k in differing], "status", "epochs run", "best epoch", "best value",
              "test " + headline_metric(runs[0])[0])
    rows = []
    for run, config in zip(runs, configs):
        best = run.metrics.get("best") or {}
        rows.append((run.name, *[config.get(k) if not isinstance(config.get(k), list) else str(config.get(k))
                                 for k in differing], run.metrics["run"].get("status"), len(run.epochs),
                     best.get("epoch"), best.get("value"), headline_metric(run)[1]))
    return figure_html(figure, "runs compared") + table(rows, header, cls="grid")


SECTIONS = [("Is the network worth it?", section_worth_it), ("Run summary", section_summary), ("Hyperparameters", section_hyperparameters), ("Data", section_data),
            ("Learning curves", section_learning_curves), ("Learning-rate schedule", section_learning_rate),
            ("Overfitting analysis", section_overfitting), ("Test evaluation", section_test),
            ("Throughput and epoch times", section_throughput), ("System resources", section_system),
            ("Resume and interruption events", section_events), ("Reproducibility", section_reproducibility)]


def show(section_html: str) -> None:
    """Display a section in a notebook (what the report notebook's cells call)."""
    from IPython.display import HTML, display

    display(HTML(section_html))


# --------------------------------------------------------------------------------------------- generate
def execute_report_notebook(metrics_path: Path, compare: list[Path], executed_path: Path, *,
                            title: str = "Training report") -> None:
    from pipeline import nbexec

    nbexec.execute_notebook(TEMPLATES / "report.ipynb", executed_path,
                            {"metrics_path": str(metrics_path.resolve()),
                             "compare_paths": [str(p.resolve()) for p in compare], "title": title},
                            cwd=executed_path.parent)


def render_html(executed_path: Path) -> str:
    """Executed notebook -> one self-contained HTML string (no inputs, no prompts, no CDN)."""
    import nbformat
    from nbconvert import HTMLExporter

    exporter = HTMLExporter(extra_template_basedirs=[str(TEMPLATES)], template_name="report", exclude_input=True,
                            exclude_input_prompt=True, exclude_output_prompt=True)
    notebook = nbformat.read(str(executed_path), as_version=4)
    notebook.metadata.pop("widgets", None)  # widget state would pull its renderer from a CDN
    body, _ = exporter.from_notebook_node(notebook)
    # JupyterLab's stylesheet cites its sources in comments; drop them so the file names no remote URL at all
    return re.sub(r"(<style[^>]*>)(.*?)(</style>)",
                  lambda m: m.group(1) + re.sub(r"/\*.*?\*/", "", m.group(2), flags=re.S) + m.group(3),
                  body, flags=re.S)


def generate(metrics: Path | str, output: Path | str, *, compare: list[Path | str] | None = None,
             executed_notebook: Path | str | None = None, title: str = "Training report") -> Path:
    """Execute the report notebook and write one standalone HTML file (atomically)."""
    metrics = Path(metrics)
    compare = [Path(p) for p in compare or []]
    for path in [metrics, *compare]:
        load_metrics(path)  # fail fast, with a clear message, before starting a kernel
    output = Path(output)
    check_output(output)
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="report-") as tmp:
            executed = Path(executed_notebook) if executed_notebook else Path(tmp) / "report.ipynb"
            executed.parent.mkdir(parents=True, exist_ok=True)
            execute_report_notebook(metrics, compare, executed, title=title)
            fileio.atomic_write_bytes(output, render_html(executed).encode("utf-8"))
    except OSError as exc:  # a full disk, a read-only file system: the earlier report (if any) is untouched
        where = Path(exc.filename).parent if getattr(exc, "filename", None) else output.parent
        raise DataError(f"{output}: could not be written ({_os_reason(exc)}, in {where}); an earlier report there "
                        "is unchanged: free some space or choose another --output") from None
    return output


def check_output(output: Path) -> None:
    """Refuse, before a kernel starts, an --output that is a folder, lies under a file, or cannot be written."""
    ancestor = next((p for p in (output, *output.parents) if os.path.lexists(p)), Path("."))
    if ancestor == output and output.is_dir():
        raise DataError(f"{output}: is a folder; pass a file name like report.html to --output")
    if ancestor != output and not ancestor.is_dir():
        raise DataError(f"{output}: cannot be made, because {ancestor} is a file; choose another --output")
    folder = output.parent if ancestor == output else ancestor
    if not os.access(folder, os.W_OK | os.X_OK):
        raise DataError(f"{output}: cannot write in {folder} ({_os_reason(PermissionError(errno.EACCES, ''), folder)});"
                        " choose another --output")


def _os_reason(exc: OSError, folder: Path | None = None) -> str:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return "no space left on the device"
    if exc.errno == errno.EFBIG:
        return "a file grew beyond the size limit"
    try:
        if exc.errno == errno.EROFS or (folder is not None and os.statvfs(folder).f_flag & os.ST_RDONLY):
            return "a read-only file system"
    except OSError:
        pass
    if exc.errno == errno.EACCES:
        return "permission denied"
    return exc.strerror or str(exc)
