"""The tuning section of a report (`pipeline.tune` writes tuning.json): how the search went, which settings
mattered, the best trial's settings and test score with its interval, and the network against boosted trees
tuned with the same budget."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline import fileio, metrics
from pipeline.errors import DataError
from pipeline.report.helpers import _plt, esc, figure_html, note, table, with_interval


def load_tuning(path: Path | str) -> dict[str, Any]:
    """tuning.json, checked enough to draw from (a file that is not one is one clear line)."""
    found = fileio.read_json(Path(path))
    if not isinstance(found, dict) or not isinstance(found.get("study"), dict) or \
            not isinstance(found.get("history"), list):
        raise DataError(f"{path}: not a tuning.json written by solutions/tune.py")
    return found


def section_tuning(tuning: dict[str, Any]) -> str:
    study, best = tuning["study"], tuning.get("best")
    states = ", ".join(f"{n} {s}" for s, n in sorted((study.get("states") or {}).items()))
    parts = [note(f"Optuna study {study.get('name')!r}: {study.get('counted')} of {study.get('budget')} trials "
                  f"finished ({states}); each chose on {study.get('metric')}, the best epoch's validation score "
                  "(the test split was read only for the best trial, below).")]
    parts.append(history_figure(tuning))
    parts.append(importance_html(tuning.get("importances")))
    if best is None:
        parts.append(note("No trial completed yet: no best settings to show.", "warn"))
        return "".join(parts)
    parts.append("<h3>The best trial</h3>")
    rows = [("trial", best.get("number")), (study.get("metric"), best.get("value")),
            *((name, f"{value:.3g}" if isinstance(value, float) else value)
              for name, value in (best.get("params") or {}).items())]
    parts.append(table(rows, ("setting", "value")))
    parts.append(comparison_html(tuning))
    return "".join(parts)


def history_figure(tuning: dict[str, Any]) -> str:
    """Each finished trial's value by trial number, the best so far as a step line, pruned trials marked."""
    metric, direction = tuning["study"].get("metric", ""), tuning["study"].get("direction", "maximize")
    complete = [(t["number"], t["value"]) for t in tuning["history"]
                if t.get("state") == "complete" and isinstance(t.get("value"), (int, float))]
    pruned = [(t["number"], t["last_reported"]) for t in tuning["history"]
              if t.get("state") == "pruned" and isinstance(t.get("last_reported"), (int, float))]
    if not complete:
        return note("No completed trial yet: nothing to chart.", "warn")
    plt = _plt()
    figure, ax = plt.subplots(figsize=(7.5, 3.0))
    numbers, values = zip(*complete)
    ax.scatter(numbers, values, s=18, label="completed trial", zorder=3)
    best, running = [], None
    for value in values:
        running = value if running is None or (value > running if direction == "maximize" else value < running) \
            else running
        best.append(running)
    ax.step(numbers, best, where="post", color="#d62728", label="best so far")
    if pruned:
        ax.scatter(*zip(*pruned), marker="x", color="#7f7f7f", label="pruned (its last epoch's value)")
    ax.set(title="optimisation history", xlabel="trial", ylabel=metric)
    ax.legend(loc="best", fontsize=8)
    return figure_html(figure, f"{metric} of each trial and the best so far")


def importance_html(importances: dict[str, float] | None) -> str:
    if not importances:
        return note("Parameter importances need at least three completed trials with two or more searched "
                    "settings.")
    plt = _plt()
    names = list(importances)[::-1]
    figure, ax = plt.subplots(figsize=(7.5, 0.35 * len(names) + 0.9))
    ax.barh(names, [importances[n] for n in names])
    ax.set(title="parameter importances (fANOVA: share of the objective's variance)", xlabel="importance")
    return figure_html(figure, "parameter importances") + note(
        "Importances are estimated from the trials run: with few trials they are rough, and a setting the "
        "search never varied much can look unimportant.")


def comparison_html(tuning: dict[str, Any]) -> str:
    best, trees, verdict = tuning.get("best") or {}, tuning.get("trees"), tuning.get("comparison")
    test = best.get("test") or {}
    key = "balanced_accuracy" if "balanced_accuracy" in test else "r2"
    intervals = test.get("intervals") or {}
    rows = [("tuned network (best trial)", with_interval(test.get(key), intervals.get(key)))]
    if trees:
        tree_test = trees.get("test") or {}
        rows.append((f"boosted trees tuned with the same budget ({trees.get('trials')} trials)",
                     with_interval(tree_test.get(key), (tree_test.get("intervals") or {}).get(key))))
        diff = (trees.get("difference") or {}).get(key) or {}
        if diff:
            rows.append(("network − trees", with_interval(diff.get("value"), diff.get("interval"))))
    html = "<h3>On the test split</h3>" + table(rows, (f"test {key} [95% interval]", ""))
    if verdict:
        kind = {"ahead": "ok", "behind": "warn"}.get(verdict.get("outcome"), "info")
        html += note(verdict.get("text", ""), kind)
    elif not trees:
        html += note("Boosted trees were not tuned (--no-trees): no tuned comparison.")
    if trees and trees.get("best_params"):
        shown = ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}"
                          for k, v in trees["best_params"].items())
        html += f"<p>The trees' best settings: {esc(shown)}</p>"
    higher = metrics.higher_is_better(key)
    return html + ("" if higher else note(f"Lower {key} is better."))
