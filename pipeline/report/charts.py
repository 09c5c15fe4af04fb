"""The report's figure sections: learning curves, learning rate, overfitting, test evaluation, throughput and
system resources. Figures are embedded as PNG data URIs (`figure_html`)."""
from __future__ import annotations

import math
from typing import Any

from pipeline import metrics
from pipeline.report.checks import MANY_CLASSES, MAX_CURVES, thin
from pipeline.report.helpers import COLOURS, _plt, esc, figure_html, fmt, fmt_interval, note, table
from pipeline.report.loading import RunData

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
    names = (["val_balanced_accuracy", "val_accuracy", "val_f1_macro"] if run.task == "classification"
             else ["val_r2"])
    drawn = [n for n in names if any(e.get(n) is not None for e in shown)]
    for i, name in enumerate(drawn):  # the headline metric first, drawn thicker
        axes[1].plot(epochs, [e.get(name) for e in shown], color=COLOURS[(i + 2) % len(COLOURS)], label=name,
                     linewidth=2.2 if i == 0 else 1.2, **style)
    if drawn:
        axes[1].legend()
    axes[1].set(title="validation metrics", xlabel="epoch")
    figure.tight_layout()
    return figure_html(figure, "learning curves: train and validation loss, validation metrics")


def section_learning_rate(run: RunData) -> str:
    if not run.epochs:
        return note("No learning-rate record.", "warn")
    rates = {e.get("lr") for e in run.epochs if e.get("lr") is not None}
    if len(rates) <= 1:
        return note(f"A constant learning rate ({fmt(next(iter(rates)) if rates else None)}, no schedule): "
                    "nothing to chart.")
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
        out = score_table(test, ("loss", "rmse", "mae", "r2"))
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
    out = score_table(test, ("loss", "accuracy", "balanced_accuracy", "f1_macro", "roc_auc"))
    out += calibration_html(test)
    out += per_class_table(test.get("per_class") or {})
    matrix = test.get("confusion_matrix")
    figure, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    if matrix:
        out += confusion_figure(axes[0], matrix, classes)
    curves = test.get("roc_curves") or {}
    binary = len(classes) == 2 and classes[1] in curves
    drawn = [classes[1]] if binary else largest_classes(list(curves), test.get("per_class") or {}, MAX_CURVES)
    for i, name in enumerate(drawn):
        curve = curves[name]
        axes[1].plot(curve["fpr"], curve["tpr"], label=name, color=COLOURS[i % len(COLOURS)])
    axes[1].plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=0.8)
    title = (f"ROC (positive class {drawn[0]})" if binary else "ROC (one vs rest)"
             + (f", the {len(drawn)} largest of {len(curves):,} classes" if len(drawn) < len(curves) else ""))
    axes[1].set(title=title, xlabel="false positive rate", ylabel="true positive rate")
    if drawn:
        axes[1].legend(fontsize=8)
    figure.tight_layout()
    out += figure_html(figure, "confusion matrix and ROC curves on the test split")
    return out + precision_recall_and_calibration(test, classes)


def precision_recall_and_calibration(test: dict[str, Any], classes: list[str]) -> str:
    """Precision-recall curves (the curve to read on an imbalanced table: its floor is the class's share, not
    0.5) and the reliability diagram (predicted probability against observed frequency)."""
    curves = {name: c for name, c in (test.get("pr_curves") or {}).items() if isinstance(c, dict)
              and isinstance(c.get("recall"), list) and isinstance(c.get("precision"), list)
              and len(c["recall"]) == len(c["precision"]) and isinstance(c.get("share"), (int, float))}
    calibration = test.get("calibration") or {}
    bins = [b for b in (calibration.get("bins") or []) if isinstance(b, dict)
            and all(isinstance(b.get(k), (int, float)) for k in ("confidence", "observed"))]
    if not curves and not bins:
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
    if bins:
        axes[1].plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=0.8)
        axes[1].plot([b["confidence"] for b in bins], [b["observed"] for b in bins], "o-")
        of = calibration.get("of") if isinstance(calibration.get("of"), str) else "probability"
        axes[1].set(title=f"reliability ({of}; dashed: perfectly calibrated)", xlabel="predicted probability",
                    ylabel="observed frequency", xlim=(0, 1), ylim=(0, 1))
    figure.tight_layout()
    return figure_html(figure, "precision-recall curves and reliability diagram on the test split")


def score_table(test: dict[str, Any], keys: tuple[str, ...]) -> str:
    """The test scores, each with its interval when metrics.json has one."""
    intervals = test.get("intervals") or {}
    rows = [(k, test.get(k), fmt_interval(intervals.get(k)) or "—") for k in keys if k in test]
    return table(rows, ("metric", "value", "interval"), cls="grid")


def calibration_html(test: dict[str, Any]) -> str:
    """Average precision (binary: one number; multi-class: macro and per class) and the calibration figures."""
    rows: list[tuple[Any, ...]] = []
    ap = test.get("average_precision")
    if isinstance(ap, (int, float)) and not isinstance(ap, bool):
        rows.append(("average precision (area under the PR curve)", float(ap)))
    elif isinstance(ap, dict):
        rows += [(f"average precision: {k}", float(v)) for k, v in ap.items()
                 if isinstance(v, (int, float)) and not isinstance(v, bool)][:MAX_CURVES + 1]
    calibration = test.get("calibration") or {}
    if calibration.get("brier") is not None:
        rows.append(("Brier score (lower is better)", calibration["brier"]))
    if calibration.get("ece") is not None:
        rows.append(("expected calibration error (lower is better)", calibration["ece"]))
    return table(rows, ("imbalance and calibration", "value"), cls="grid") if rows else ""


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
    return (table([("training time (the epochs only)", f"{fmt(float(total))}s"),
                   ("mean epoch", f"{fmt(total / len(run.epochs))}s"),
                   ("data-wait share", f"{fmt(100 * waited / total)}%" if total > 0 else "—")])
            + figure_html(figure, "throughput and epoch time split into compute and data wait"))


def section_system(run: RunData) -> str:
    summary = run.metrics.get("system") or {}
    rows = [(k, v) for k, v in summary.items() if not isinstance(v, dict)]
    out = table(rows) if rows else ""
    if not run.system:
        return out + note("No resource samples were recorded (logs/system.jsonl missing or sampling off).")
    plt = _plt()
    first = run.system[0]
    zero = not first.get("process_cpu_percent") or not first.get("cpu_percent")
    recorded = run.system[1:] if len(run.system) > 1 and zero else run.system
    samples = [recorded[i] for i in thin(len(recorded))]  # psutil's first CPU reading is 0 (no interval yet): dropped
    t0 = samples[0]["time"]
    times = [s["time"] - t0 for s in samples]
    gpus = sorted({g["index"] for s in samples for g in s.get("gpus", [])})[:8]
    figure, axes = plt.subplots(1, 3 + bool(gpus), figsize=(13 + 4 * bool(gpus), 3.2))
    axes[0].plot(times, [s.get("cpu_percent") for s in samples], color=COLOURS[0])
    axes[0].set(title="machine CPU (all cores, 0-100%)", xlabel="seconds", ylabel="%", ylim=(0, 105))
    axes[1].plot(times, [s.get("process_cpu_percent") for s in samples], color=COLOURS[1])
    axes[1].set(title="training process CPU (100% = one core)", xlabel="seconds", ylabel="% of one core")
    axes[1].set_ylim(bottom=0)
    axes[2].plot(times, [s.get("rss_mb") for s in samples], label="process RSS")
    axes[2].plot(times, [s.get("ram_used_mb") for s in samples], label="machine RAM used")
    axes[2].set(title="memory (MB)", xlabel="seconds")
    axes[2].legend()
    for index in gpus:
        series = [next((g for g in s.get("gpus", []) if g["index"] == index), {}) for s in samples]
        axes[3].plot(times, [g.get("util_percent") for g in series], label=f"GPU {index} util %")
        axes[3].plot(times, [g.get("temperature_c") for g in series], label=f"GPU {index} °C")
        axes[3].set(title="GPU", xlabel="seconds")
        axes[3].legend()
    figure.tight_layout()
    return out + figure_html(figure, "system resources over time")
