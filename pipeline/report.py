"""Phase 4: a standalone HTML training report, executed with papermill and rendered with nbconvert.

    python solutions/generate_report.py --metrics checkpoints/metrics.json --output training_report.html

`generate` runs the report notebook (`pipeline/templates/report.ipynb`) with the metrics path as a
papermill parameter, then renders it with a template that drops code cells and every script or font
from a CDN. Each section below returns an HTML string: every value that came from data or config is
escaped, figures are embedded as PNG data URIs, so the file opens offline and cannot be injected into.
"""
from __future__ import annotations

import base64
import html
import io
import json
import math
import re
import tempfile
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from pipeline import fileio, metrics
from pipeline.errors import DataError

TEMPLATES = resources.files("pipeline") / "templates"
COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#17becf", "#7f7f7f"]


# ---------------------------------------------------------------------------------------------- loading
@dataclass
class RunData:
    path: Path
    metrics: dict[str, Any]
    system: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)

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
    """Read and sanity-check a metrics.json written by train_pipeline.py."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such metrics file; pass the metrics.json in a training --save-dir")
    try:
        metrics = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise DataError(f"{path}: not valid JSON ({exc}); was it written by train_pipeline.py?") from None
    if not isinstance(metrics, dict) or metrics.get("schema_version") != 1 or "run" not in metrics:
        raise DataError(f"{path}: not a metrics.json (schema_version 1) written by train_pipeline.py")
    return metrics


def load_run(path: Path | str) -> RunData:
    """metrics.json plus, when present beside it, the resource samples and events under logs/."""
    path = Path(path)
    logs = path.parent / "logs"
    return RunData(path=path, metrics=load_metrics(path), system=list(fileio.read_jsonl(logs / "system.jsonl")),
                   events=[r for r in fileio.read_jsonl(logs / "metrics.jsonl") if r.get("type") in ("run", "status")])


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
    seconds = (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()
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
    ours, trees = test.get(key), (found.get("hist_gradient_boosting") or {}).get(key)
    if isinstance(ours, (int, float)) and isinstance(trees, (int, float)):
        gap = ours - trees
        if gap >= 0.005:
            verdict = f"The network beats boosted trees on test {key} by {gap:.3f}."
        elif gap > -0.005:
            verdict = f"The network holds its own: within half a point of boosted trees on test {key} ({gap:+.3f})."
        else:
            verdict = (f"Boosted trees are better by {-gap:.3f} test {key}: for this table they are the simpler "
                       "choice, unless the network is needed for something trees cannot do.")
    else:
        verdict = "No headline score to compare."
    sample = ""
    if found.get("train_rows", 0) < found.get("of_train_rows", 0):
        sample = note(f"The baselines were fitted on a random {found['train_rows']:,} of the "
                      f"{found['of_train_rows']:,} training rows, to keep them to seconds.")
    plt = _plt()
    labels = [r[0].split(" (")[0] for r in rows]
    values = [r[1] if isinstance(r[1], (int, float)) else 0.0 for r in rows]
    figure, ax = plt.subplots(figsize=(7.5, 1.9))
    ax.barh(labels[::-1], values[::-1], color=["#7f7f7f", "#2ca02c", "#1f77b4"])
    for y, v in enumerate(values[::-1]):
        ax.text(v, y, f" {v:.3f}", va="center")
    ax.set(xlabel=f"test {key}", xlim=(min(0.0, min(values)), max(1.0, max(values)) * 1.12))
    return (f"<p><strong>{esc(verdict)}</strong></p>" + figure_html(figure, f"test {key} of each model")
            + table(rows, ("model", *columns, "fit seconds"), cls="grid") + sample)


# ---------------------------------------------------------------------------------------------- sections
def section_summary(run: RunData) -> str:
    m = run.metrics
    info = m["run"]
    status = str(info.get("status"))
    best = m.get("best") or {}
    rows = [("run", run.name), ("status", status), ("started", info.get("started_at")),
            ("ended", info.get("ended_at")), ("duration", _duration(info.get("started_at"), info.get("ended_at"))),
            ("device", f"{info.get('device')} (AMP {info.get('amp', 'off')})"),
            ("epochs run", len(run.epochs)), ("best epoch", best.get("epoch")),
            (f"best {best.get('metric', 'metric')}", best.get("value"))]
    key, value = headline_metric(run)
    if value is not None:
        rows.append((f"test {key}", value))
    cards = "".join(f'<div class="card"><div class="label">{esc(k)}</div><div class="value">{fmt(v)}</div></div>'
                    for k, v in (("status", status), ("best epoch", best.get("epoch")), (f"test {key}", value)))
    message = note(info["message"], "warn" if status in ("failed", "interrupted") else "info") if info.get("message") else ""
    return f'<div class="cards status-{esc(status)}">{cards}</div>{message}{table(rows)}'


def section_hyperparameters(run: RunData) -> str:
    config = run.metrics.get("config") or {}
    return table([(k, v if isinstance(v, (int, float, bool)) or v is None else json.dumps(v) if not isinstance(v, str)
                   else v) for k, v in sorted(config.items())], ("parameter", "value"))


def section_data(run: RunData) -> str:
    plt = _plt()
    d = run.metrics["data"]
    rows = [("source", d.get("source")), ("target", d.get("target")), ("task", d.get("task")),
            ("processed features", d.get("n_features"))]
    rows += [(f"rows: {split}", n) for split, n in (d.get("rows") or {}).items()]
    out = table(rows)
    out += f"<p>Original features: {esc(', '.join(d.get('original_features') or []))}</p>"
    counts = d.get("class_counts")
    if counts and d.get("classes"):
        classes = d["classes"]
        figure, ax = plt.subplots(figsize=(7.5, 2.8))
        width = 0.8 / len(counts)
        for i, (split, values) in enumerate(counts.items()):
            ax.bar([x + i * width for x in range(len(classes))], values, width=width, label=split,
                   color=COLOURS[i % len(COLOURS)])
        ax.set_xticks([x + width * (len(counts) - 1) / 2 for x in range(len(classes))], classes)
        ax.set(title="class balance per split", ylabel="rows")
        ax.legend()
        out += figure_html(figure, "class balance per split")
    return out


def section_learning_curves(run: RunData) -> str:
    if not run.epochs:
        return note("No epoch finished, so there are no learning curves.", "warn")
    plt = _plt()
    epochs = [e["epoch"] for e in run.epochs]
    figure, axes = plt.subplots(1, 2, figsize=(11, 3.6))
    axes[0].plot(epochs, [e.get("train_loss") for e in run.epochs], marker="o", ms=3, label="train")
    if any(e.get("val_loss") is not None for e in run.epochs):
        axes[0].plot(epochs, [e.get("val_loss") for e in run.epochs], marker="o", ms=3, label="validation")
    best = (run.metrics.get("best") or {}).get("epoch")
    if best:
        for ax in axes:
            ax.axvline(best, color="grey", linestyle="--", linewidth=1)
        axes[0].annotate(f"best epoch {best}", xy=(best, axes[0].get_ylim()[1]), fontsize=8, ha="left", va="top")
    axes[0].set(title="loss", xlabel="epoch")
    axes[0].legend()
    metric = "val_accuracy" if run.task == "classification" else "val_r2"
    values = [e.get(metric) for e in run.epochs]
    if any(v is not None for v in values):
        axes[1].plot(epochs, values, marker="o", ms=3, color="tab:green", label=metric)
        if run.task == "classification":
            axes[1].plot(epochs, [e.get("val_f1_macro") for e in run.epochs], marker="o", ms=3, color="tab:purple",
                         label="val_f1_macro")
        axes[1].legend()
    axes[1].set(title="validation metrics", xlabel="epoch")
    figure.tight_layout()
    return figure_html(figure, "learning curves: train and validation loss, validation metrics")


def section_learning_rate(run: RunData) -> str:
    if not run.epochs:
        return note("No learning-rate record.", "warn")
    plt = _plt()
    figure, ax = plt.subplots(figsize=(7.5, 2.6))
    ax.plot([e["epoch"] for e in run.epochs], [e.get("lr") for e in run.epochs], marker="o", ms=3)
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
        figure, ax = plt.subplots(figsize=(7.5, 2.6))
        ax.plot([g[0] for g in analysis["gaps"]], [g[1] for g in analysis["gaps"]], marker="o", ms=3, color="tab:red")
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
        if predictions:
            y, p = predictions["y_true"], predictions["y_pred"]
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
    classes = run.metrics["data"]["classes"]
    out = table([(k, test.get(k)) for k in ("loss", "accuracy", "balanced_accuracy", "f1_macro", "roc_auc")],
                ("metric", "value"))
    per_class = test.get("per_class") or {}
    out += table([(name, s["precision"], s["recall"], s["f1"], s["support"]) for name, s in per_class.items()],
                 ("class", "precision", "recall", "F1", "support"), cls="grid")
    matrix = test.get("confusion_matrix")
    figure, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    if matrix:
        axes[0].imshow(matrix, cmap="Blues")
        for i, row in enumerate(matrix):
            for j, count in enumerate(row):
                axes[0].text(j, i, str(count), ha="center", va="center",
                             color="white" if count > max(map(max, matrix)) / 2 else "black")
        axes[0].set_xticks(range(len(classes)), classes, rotation=30, ha="right")
        axes[0].set_yticks(range(len(classes)), classes)
        axes[0].set(title="confusion matrix", xlabel="predicted", ylabel="true")
    curves = test.get("roc_curves") or {}
    for i, (name, curve) in enumerate(curves.items()):
        axes[1].plot(curve["fpr"], curve["tpr"], label=name, color=COLOURS[i % len(COLOURS)])
    axes[1].plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=0.8)
    axes[1].set(title="ROC (one vs rest)", xlabel="false positive rate", ylabel="true positive rate")
    if curves:
        axes[1].legend(fontsize=8)
    figure.tight_layout()
    return out + figure_html(figure, "confusion matrix and ROC curves on the test split")


def section_throughput(run: RunData) -> str:
    if not run.epochs:
        return note("No epoch timings.", "warn")
    plt = _plt()
    epochs = [e["epoch"] for e in run.epochs]
    figure, axes = plt.subplots(1, 2, figsize=(11, 3.2))
    axes[0].plot(epochs, [e.get("samples_per_second") for e in run.epochs], marker="o", ms=3)
    axes[0].set(title="throughput", xlabel="epoch", ylabel="samples / second")
    data_s = [e.get("data_seconds") or 0.0 for e in run.epochs]
    compute_s = [e.get("compute_seconds") or 0.0 for e in run.epochs]
    axes[1].bar(epochs, compute_s, label="compute")
    axes[1].bar(epochs, data_s, bottom=compute_s, label="waiting for data")
    axes[1].set(title="epoch time", xlabel="epoch", ylabel="seconds")
    axes[1].legend()
    figure.tight_layout()
    total = sum(e.get("epoch_seconds") or 0 for e in run.epochs)
    return (table([("total training time", f"{total:.2f}s"), ("mean epoch", f"{total / len(run.epochs):.3f}s"),
                   ("data-wait share", f"{100 * sum(data_s) / total:.1f}%" if total else "—")])
            + figure_html(figure, "throughput and epoch time split into compute and data wait"))


def section_system(run: RunData) -> str:
    summary = run.metrics.get("system") or {}
    rows = [(k, v) for k, v in summary.items() if not isinstance(v, dict)]
    out = table(rows) if rows else ""
    if not run.system:
        return out + note("No resource samples were recorded (logs/system.jsonl missing or sampling off).")
    plt = _plt()
    t0 = run.system[0]["time"]
    times = [s["time"] - t0 for s in run.system]
    gpus = sorted({g["index"] for s in run.system for g in s.get("gpus", [])})
    figure, axes = plt.subplots(1, 2 + bool(gpus), figsize=(11 + 4 * bool(gpus), 3.2))
    axes[0].plot(times, [s.get("cpu_percent") for s in run.system], label="machine")
    axes[0].plot(times, [s.get("process_cpu_percent") for s in run.system], label="training process")
    axes[0].set(title="CPU %", xlabel="seconds")
    axes[0].legend()
    axes[1].plot(times, [s.get("rss_mb") for s in run.system], label="process RSS")
    axes[1].plot(times, [s.get("ram_used_mb") for s in run.system], label="machine RAM used")
    axes[1].set(title="memory (MB)", xlabel="seconds")
    axes[1].legend()
    for index in gpus:
        series = [next((g for g in s.get("gpus", []) if g["index"] == index), {}) for s in run.system]
        axes[2].plot(times, [g.get("util_percent") for g in series], label=f"GPU {index} util %")
        axes[2].plot(times, [g.get("temperature_c") for g in series], label=f"GPU {index} °C")
        axes[2].set(title="GPU", xlabel="seconds")
        axes[2].legend()
    figure.tight_layout()
    return out + figure_html(figure, "system resources over time")


def section_events(run: RunData) -> str:
    info = run.metrics["run"]
    rows = [("resumed", r.get("time"), f"from {r.get('checkpoint')} at epoch {r.get('epoch')}, step {r.get('step')}")
            for r in info.get("resumed") or []]
    rows += [("status", "", f"{e.get('status')}: {e.get('message') or ''}") for e in run.events if e.get("type") == "status"]
    if not rows:
        return note("The run was never interrupted or resumed.")
    return table(rows, ("event", "time", "details"), cls="grid")


def section_reproducibility(run: RunData) -> str:
    info, d, config = run.metrics["run"], run.metrics["data"], run.metrics.get("config") or {}
    rows = [("seed", config.get("seed")), ("deterministic mode", config.get("deterministic")),
            ("source data sha256", d.get("source_sha256")), ("processed data fingerprint", d.get("data_sha256"))]
    rows += [(f"version: {k}", v) for k, v in (info.get("versions") or {}).items()]
    mlflow = info.get("mlflow")
    if mlflow:
        rows += [("MLflow tracking URI", mlflow.get("tracking_uri")), ("MLflow run id", mlflow.get("run_id"))]
    return table(rows)


def section_comparison(runs: list[RunData]) -> str:
    """Several runs: curves overlaid, and a table of the settings that differ against the results."""
    if len(runs) < 2:
        return ""
    plt = _plt()
    figure, axes = plt.subplots(1, 2, figsize=(11, 3.6))
    for i, run in enumerate(runs):
        colour = COLOURS[i % len(COLOURS)]
        epochs = [e["epoch"] for e in run.epochs]
        axes[0].plot(epochs, [e.get("val_loss", e.get("train_loss")) for e in run.epochs], color=colour, label=run.name)
        axes[0].plot(epochs, [e.get("train_loss") for e in run.epochs], color=colour, linestyle=":", linewidth=1)
        metric = "val_accuracy" if run.task == "classification" else "val_r2"
        axes[1].plot(epochs, [e.get(metric) for e in run.epochs], color=colour, label=run.name)
    axes[0].set(title="validation loss (solid) and train loss (dotted)", xlabel="epoch")
    axes[1].set(title="validation metric", xlabel="epoch")
    axes[0].legend(fontsize=8)
    figure.tight_layout()
    configs = [r.metrics.get("config") or {} for r in runs]
    ignore = {"save_dir", "run_name", "resolved_device", "data_dir"}
    differing = sorted(k for k in set().union(*configs) if k not in ignore and len({json.dumps(c.get(k)) for c in configs}) > 1)
    header = ("run", *differing, "status", "epochs", "best epoch", "best value", *["test " + headline_metric(runs[0])[0]])
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
    import papermill

    papermill.execute_notebook(str(TEMPLATES / "report.ipynb"), str(executed_path),
                               parameters={"metrics_path": str(metrics_path.resolve()),
                                           "compare_paths": [str(p.resolve()) for p in compare], "title": title},
                               kernel_name="python3", progress_bar=False, log_output=False,
                               extra_arguments=["--IPKernelApp.log_level=ERROR"],
                               cwd=str(executed_path.parent))


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
    if output.is_dir():
        raise DataError(f"{output}: is a folder; pass a file name like report.html to --output")
    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="report-") as tmp:
        executed = Path(executed_notebook) if executed_notebook else Path(tmp) / "report.ipynb"
        executed.parent.mkdir(parents=True, exist_ok=True)
        execute_report_notebook(metrics, compare, executed, title=title)
        fileio.atomic_write_bytes(output, render_html(executed).encode("utf-8"))
    return output
