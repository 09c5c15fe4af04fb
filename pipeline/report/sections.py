"""The report's run-level sections: the verdict, summary, hyperparameters, data, events, reproducibility and
the comparison of several runs. Each returns an HTML string in which every value from data or config is escaped."""
from __future__ import annotations

import json
from typing import Any

from pipeline.report.checks import MANY_CLASSES
from pipeline.report.helpers import (COLOURS, Html, _duration, _plt, esc, figure_html, fmt, headline_metric, note,
                                     shown_path, table, with_interval)
from pipeline.report.loading import RunData
from pipeline.report.charts import _epoch_points


BASELINE_NAMES = {"hist_gradient_boosting": "boosted trees (HistGradientBoosting)",
                  "linear": "linear model (logistic / ridge regression)"}


def section_worth_it(run: RunData) -> str:
    """Is the network worth it? Its test scores beside boosted trees' and a linear model's, on the same rows,
    each with its interval when metrics.json has one, and the difference network - baseline on the headline."""
    test, found = run.metrics.get("test"), run.metrics.get("baselines")
    if not test or not found:
        return note("No baselines in this run (turned off with --no-baselines, or the run did not finish): "
                    "nothing to compare the network with.")
    key = headline_metric(run)[0]
    columns = (["balanced_accuracy", "accuracy", "f1_macro", "roc_auc"] if run.task == "classification"
               else ["r2", "rmse", "mae"])
    rows = [["network (this run)", *_scores(test, columns), "", None]]
    for name, label in BASELINE_NAMES.items():
        scores = found.get(name) or {}
        difference = ((scores.get("difference") or {}).get(key) or {})
        shown = with_interval(difference.get("value"), difference.get("interval")) if difference else ""
        rows.append([label, *_scores(scores, columns), shown, scores.get("fit_seconds")])
    header = ["model", *columns, f"network − model ({key})", "fit seconds"]
    if not any(row[-2] for row in rows):  # an older metrics.json: no paired differences, no empty column
        header, rows = header[:-2] + header[-1:], [row[:-2] + row[-1:] for row in rows]
    failed = "".join(note(f"{BASELINE_NAMES.get(n, n)} failed: {why}", "warn")
                     for n, why in (found.get("failed") or {}).items())
    return (f"<p><strong>{esc(_verdict(run, key))}</strong></p>" + _worth_it_figure(run, key)
            + table([tuple(r) for r in rows], tuple(header), cls="grid")
            + _uncertainty_note(run) + _sample_note(found) + failed)


def _scores(scores: dict[str, Any], columns: list[str]) -> list[str]:
    intervals = scores.get("intervals") or {}
    return [with_interval(scores.get(c), intervals.get(c)) for c in columns]


def _verdict(run: RunData, key: str) -> str:
    """The verdict metrics.json states (decided by the interval of the difference); an older file has no intervals,
    and the report says so instead of judging point estimates."""
    stated = run.metrics.get("verdict") or {}
    if stated.get("text"):
        return stated["text"]
    test = run.metrics.get("test") or {}
    if not isinstance(test.get(key), (int, float)):
        return "No headline score to compare."
    rows = ((run.metrics.get("data") or {}).get("rows") or {}).get("test")
    on = f" on {rows:,} test rows" if isinstance(rows, int) else ""
    return (f"No intervals in this run's metrics.json (written by an earlier version): the test {key} scores below "
            f"are point estimates{on}, and a difference between them may be noise; retrain with this version for "
            "a verdict that says how sure it is.")


def _uncertainty_note(run: RunData) -> str:
    u = run.metrics.get("uncertainty") or {}
    if not u:
        return ""
    confidence = u.get("confidence")
    level = f"{100 * confidence:.0f}%" if isinstance(confidence, (int, float)) else "the"
    return note(f"Brackets: {level} intervals from a {'stratified ' if u.get('stratified') else ''}"
                f"{u.get('method', 'bootstrap')} of the {fmt(u.get('test_rows'))} test rows "
                f"({fmt(u.get('resamples'))} resamples, seed {u.get('seed')}); the difference is paired (the same "
                "resamples for both models).")


def _sample_note(found: dict[str, Any]) -> str:
    fitted, of = found.get("train_rows") or 0, found.get("of_train_rows") or 0
    if fitted < of:
        return note(f"The baselines were fitted on a random {fitted:,} of the {of:,} training rows, to keep them "
                    "to seconds.")
    return ""


def _worth_it_figure(run: RunData, key: str) -> str:
    """One bar per model on the headline metric, with the interval as an error bar when known."""
    test, found = run.metrics.get("test") or {}, run.metrics.get("baselines") or {}
    models = [("network", test)] + [(label.split(" (")[0], found.get(name) or {}) for name, label in BASELINE_NAMES.items()]
    values = [m.get(key) if isinstance(m.get(key), (int, float)) and abs(m.get(key)) < 1e6 else 0.0 for _, m in models]
    bounds = [(m.get("intervals") or {}).get(key) for _, m in models]
    errors = [[max(0.0, v - b[0]) if b else 0.0 for v, b in zip(values, bounds)],
              [max(0.0, b[1] - v) if b else 0.0 for v, b in zip(values, bounds)]]
    plt = _plt()
    figure, ax = plt.subplots(figsize=(7.5, 1.9))
    ys = list(range(len(models)))[::-1]
    ax.barh(ys, values, color=["#7f7f7f", "#2ca02c", "#1f77b4"][:len(models)],
            xerr=errors if any(bounds) else None, capsize=3)
    ax.set_yticks(ys, [name for name, _ in models])
    for y, v in zip(ys, values):
        ax.text(v, y, f" {fmt(float(v))}", va="bottom")
    ax.set(xlabel=f"test {key}", xlim=(min(0.0, min(values)), max(1.0, max(values)) * 1.12))
    return figure_html(figure, f"test {key} of each model")


# ---------------------------------------------------------------------------------------------- sections


def section_summary(run: RunData) -> str:
    m = run.metrics
    info = m["run"]
    status = str(info.get("status"))
    best = m.get("best") or {}
    rows = [("run", run.name), ("status", status), ("started", info.get("started_at")),
            ("ended", info.get("ended_at")), ("duration", duration_parts(run)),
            ("device", f"{info.get('device')} (AMP {info.get('amp', 'off')})"),
            ("processes", f"{info.get('world_size', 1)} (effective batch {info.get('effective_batch_size')})"
             if isinstance(info.get("world_size"), int) and info["world_size"] > 1 else 1),
            ("epochs run", len(run.epochs)), ("best epoch", best.get("epoch")),
            (f"best {best.get('metric', 'metric')}", best.get("value"))]
    rows += [(f"at the best epoch: {k.removeprefix('best_')}", v) for k, v in (best.get("values") or {}).items()
             if k != "best_epoch"]
    key, value = headline_metric(run)
    if value is not None:
        rows.append((f"test {key}", value))
    cards = "".join(f'<div class="card"><div class="label">{esc(k)}</div><div class="value">{fmt(v)}</div></div>'
                    for k, v in (("status", status), ("best epoch", best.get("epoch")), (f"test {key}", value)))
    message = note(info["message"], "warn" if status in ("failed", "interrupted") else "info") if info.get("message") else ""
    return f'<div class="cards status-{esc(status)}">{cards}</div>{message}{problems_note(run)}{table(rows)}'


def duration_parts(run: RunData) -> str:
    """The run's one duration (start to end of the process's run record) and what it is made of."""
    info = run.metrics["run"]
    total = _duration(info.get("started_at"), info.get("ended_at"))
    epochs = sum(e.get("epoch_seconds") or 0 for e in run.epochs)
    if total == "—" or not run.epochs:
        return total
    return (f"{total}: {len(run.epochs):,} epoch(s) of training {fmt(float(epochs))}s, the rest start-up, baselines, "
            "test evaluation and writing files (MLflow's own run time also counts its start-up)")


def _shown_setting(value: Any) -> Any:
    if isinstance(value, (int, float, bool)) or value is None:
        return value
    return shown_path(value) if isinstance(value, str) else json.dumps(value)


def config_defaults() -> dict[str, Any]:
    """Every setting's default, from the config's own definition (a setting without one is left out)."""
    import dataclasses

    from pipeline.config import TrainConfig

    out = {}
    for f in dataclasses.fields(TrainConfig):
        if f.default is not dataclasses.MISSING:
            out[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            out[f.name] = f.default_factory()
    return out


def section_hyperparameters(run: RunData) -> str:
    """The settings that differ from the defaults first; the full table folded below them."""
    config = run.metrics.get("config") or {}
    defaults = config_defaults()
    changed = [(k, _shown_setting(v), _shown_setting(defaults[k])) for k, v in sorted(config.items())
               if k in defaults and json.dumps(v, default=str) != json.dumps(defaults[k], default=str)
               and k not in ("data_dir", "save_dir")]
    full = table([(k, _shown_setting(v)) for k, v in sorted(config.items())], ("parameter", "value"))
    head = (table(changed, ("changed from the default", "value", "default"), cls="grid") if changed
            else "<p>Every setting is at its default.</p>")
    return f"{head}<details><summary>All {len(config):,} settings</summary>{full}</details>"


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
    rows = [("source", shown_path(d.get("source"))), ("target", d.get("target")), ("task", d.get("task")),
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
    rows.append(("git commit", info.get("git_commit") or "— (not recorded: an older metrics.json, or the trainer ran outside a git work tree)"))
    rows += [(f"version: {k}", v) for k, v in (info.get("versions") or {}).items()]
    mlflow = info.get("mlflow")
    if mlflow:
        rows += [("MLflow tracking URI", shown_path(mlflow.get("tracking_uri"))), ("MLflow run", mlflow_run(mlflow))]
    return table(rows)


def mlflow_run(mlflow: dict[str, Any]) -> str:
    """The MLflow run as a link into the tracking server's UI, or (a local store) its id and how to browse it."""
    uri, run_id, experiment = mlflow.get("tracking_uri") or "", mlflow.get("run_id"), mlflow.get("experiment_id")
    if not run_id:
        return "—"
    if uri.startswith(("http://", "https://")) and experiment:
        link = f"{uri.rstrip('/')}/#/experiments/{experiment}/runs/{run_id}"
        return Html(f'<a href="{esc(link)}">{esc(run_id)}</a>')
    return f"{run_id} (a local store: `make mlflow-ui` and open the run in the browser)"


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
        metric = "val_" + headline_metric(run)[0]
        if not any(e.get(metric) is not None for e in shown):
            metric = "val_accuracy" if run.task == "classification" else "val_r2"
        axes[1].plot(epochs, [e.get(metric) for e in shown], color=colour, label=run.name)
    axes[0].set(title="validation loss (solid) and train loss (dotted)", xlabel="epoch")
    axes[1].set(title=f"validation {headline_metric(runs[0])[0]}", xlabel="epoch")
    axes[0].legend(fontsize=8)
    figure.tight_layout()
    configs = [r.metrics.get("config") or {} for r in runs]
    ignore = {"save_dir", "run_name", "resolved_device", "data_dir"}
    differing = sorted(k for k in set().union(*configs) if k not in ignore and len({json.dumps(c.get(k)) for c in configs}) > 1)
    header = ("run", *differing, "status", "epochs run", "best epoch", "best value", *["test " + headline_metric(runs[0])[0]])
    rows = []
    for run, config in zip(runs, configs):
        best = run.metrics.get("best") or {}
        rows.append((run.name, *[config.get(k) if not isinstance(config.get(k), list) else str(config.get(k))
                                 for k in differing], run.metrics["run"].get("status"), len(run.epochs),
                     best.get("epoch"), best.get("value"), headline_metric(run)[1]))
    return figure_html(figure, "runs compared") + table(rows, header, cls="grid")
