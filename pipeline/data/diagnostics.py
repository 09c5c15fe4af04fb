"""The column report and the warnings with numbers (single-feature leaks, recodings, rare classes)."""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from pipeline.data.columns import ColumnPlan
from pipeline.data.preprocess import Preprocessor
from pipeline.data.store import MINORITY_SHARE, rare_classes
from pipeline.data.table import Columns, MISSING, _thread_map


# ------------------------------------------------------------------------------ the column report and warnings
CHECK_SAMPLE_ROWS = 5_000    # rows per side (train / held-out) the single-feature checks look at: cheap on any file


LEAK_ACCURACY, LEAK_BALANCED_ACCURACY, LEAK_R2 = 0.95, 0.90, 0.95  # "predicts the target almost perfectly"


_LEAK_BINS = 32              # a numeric feature is cut at 31 quantiles of its training values


def column_report(columns: list[str], target: str, task: str, classes: list[str] | None, plan: ColumnPlan,
                  preprocessor: Preprocessor) -> list[dict[str, Any]]:
    """Every CSV column in file order with the role prepare gave it and why: what `format_column_report`
    prints and schema.json's `columns` holds. Roles: target, numeric, categorical, datetime, dropped."""
    dropped = {item["name"]: item["reason"] for item in plan.dropped}
    n_rows = plan.columns.n_rows if plan.columns is not None else 0
    report = []
    for column in columns:
        fact = plan.facts.get(column, {})
        entry: dict[str, Any] = {"name": column}
        if column == target:
            entry.update(role="target", detail=(f"classification, {len(classes)} classes" if classes is not None
                                                 else "regression"))
        elif column in dropped:
            entry.update(role="dropped", detail=dropped[column], reason=dropped[column])
        elif column in plan.datetime:
            spec = plan.datetime[column]
            features = [f"{column}.{part}" for part in spec["parts"]]
            detail = f"dates ({spec['format']}) -> numeric {', '.join(p for p in spec['parts'])}"
            if spec["unparsed"]:
                detail += f"; {spec['unparsed']:,} row(s) not in that format are treated as missing"
            entry.update(role="datetime", detail=detail, features=features, format=spec["format"],
                         unparsed=spec["unparsed"])
        elif column in preprocessor.categories_:
            entry.update(role="categorical", **_level_facts(column, plan, preprocessor, n_rows))
            if fact.get("forced"):
                entry["detail"] += " (--categorical)"
        else:
            entry.update(role="numeric", detail=(f"{fact['missing']:,} missing ({_share(fact['missing'], n_rows)}) "
                                                  "-> the training median" if fact.get("missing") else "no gaps"))
            if fact.get("hint"):
                entry["detail"] += f"; {fact['hint']}"
                entry["hint"] = fact["hint"]
        if "missing" in fact:
            entry["missing"] = fact["missing"]
        report.append(entry)
    return report


def _level_facts(column: str, plan: ColumnPlan, preprocessor: Preprocessor, n_rows: int) -> dict[str, Any]:
    """Levels found, kept (one-hot columns) and how many rows encode as all zeros because theirs was not kept."""
    codes, names = plan.columns.categorical[column]
    kept = preprocessor.categories_[column]
    counts = np.bincount(codes, minlength=len(names))
    position = {name: i for i, name in enumerate(names)}
    outside = n_rows - int(sum(counts[position[name]] for name in kept))
    cap = preprocessor.max_categories
    capped = preprocessor.levels_seen_.get(column, 0) > cap
    levels = f"{len(names)} levels" + (f" (one is {MISSING})" if names[-1] == MISSING else "")
    if len(kept) == len(names):
        detail = f"{levels}, all kept"
    elif capped:
        detail = (f"{levels}, {len(kept)} kept (--max-levels {cap}): {outside:,} rows "
                  f"({_share(outside, n_rows)}) in the other {len(names) - len(kept)} encode as all zeros")
    else:
        detail = (f"{levels}, {len(kept)} seen in training: {outside:,} row(s) of the others encode "
                  "as all zeros")
    return {"detail": detail, "levels": len(names), "levels_kept": len(kept), "capped": capped,
            "rows_all_zero": outside}


def _percent(share: float, limit: float) -> str:
    """`share` as a percentage, with a second decimal where one would round it up to `limit` (9.98%, not 10.0%)."""
    shown = f"{100 * share:.1f}%"
    return f"{100 * share:.2f}%" if share < limit <= float(shown[:-1]) / 100 else shown


def _share(part: float, whole: float) -> str:
    return f"{100 * part / whole:.1f}%" if whole else "-"


def format_column_report(report: list[dict[str, Any]], *, width: int = 24) -> str:
    """The column report as a compact table, one line per column: name, role, details."""
    shown = min(width, max([len("column")] + [len(item["name"]) for item in report]))
    lines = [f"{'column':<{shown}}  {'role':<11}  details"]
    for item in report:
        name = item["name"] if len(item["name"]) <= shown else item["name"][: shown - 1] + "~"
        lines.append(f"{name:<{shown}}  {item['role']:<11}  {item['detail']}")
    return "\n".join(lines)


def check_warnings(table: Columns, labels: np.ndarray, classes: list[str] | None, splits: dict[str, np.ndarray],
                   *, target: str, picked: str | None, seed: int) -> list[dict[str, Any]]:
    """Warnings with numbers, each {"kind", "column", "message", <figures>}:

    - `leak`: one feature alone predicts the target almost perfectly on held-out rows (a leak, or a recoding);
    - `recoded_target`: the target the automatic rule `picked` is a one-to-one recoding of another column;
    - `imbalance`: a class under 10% of the rows.
    Single-feature checks learn "feature value -> target" on up to 5,000 training rows and score it on up to
    5,000 validation+test rows (a fixed seeded sample: a few milliseconds per column on any file, and held out,
    so a feature with a different value in every row cannot look predictive)."""
    found: list[dict[str, Any]] = []
    rng = np.random.default_rng(seed)
    held_out = np.concatenate([splits["val"], splits["test"]])
    train = _sample(splits["train"], rng)
    other = _sample(held_out, rng)
    recoded = set()
    if picked is not None and classes is not None:
        for column, n_values in _recodings(table, labels, np.concatenate([train, other])):
            recoded.add(column)
            found.append({"kind": "recoded_target", "column": column, "values": n_values, "message": (
                f"target '{target}' was picked automatically ({picked}) and is a one-to-one recoding of column "
                f"'{column}' ({n_values} values, each going with exactly one class in {len(train) + len(other):,} "
                f"sampled rows): pass --target for the column you mean to predict (or --drop {column} if "
                f"'{target}' is right)")})
    one_class = classes is not None and len(other) > 0 and len(np.unique(labels[other])) == 1
    if one_class and len(other) >= 20:  # every feature would "predict" the one class: the rows cannot tell
        found.append({"kind": "leak_check_skipped", "column": target, "message": (
            f"the {len(other):,} held-out rows the leak check looks at all hold one class of '{target}' "
            f"('{classes[int(labels[other][0])]}'), so they cannot tell whether a feature alone predicts it; the "
            "single-feature leak check was skipped (more rows of the rare classes would let it run)")})
    elif len(other) >= 20:  # fewer held-out rows prove nothing
        scores = _thread_map(lambda item: _single_feature_score(item[0], item[1], labels[train], labels[other],
                                                                train, other, classes), list(_feature_codes(table)))
        for score in sorted(scores, key=lambda s: -s["score"]):
            if score["column"] in recoded or not score.pop("leak"):
                continue
            figure = (f"R^2 {score['r2']:.3f}" if classes is None else
                      f"accuracy {score['accuracy']:.3f}, balanced accuracy {score['balanced_accuracy']:.3f}; "
                      f"the majority class alone: accuracy {score['baseline']:.3f}")
            found.append({"kind": "leak", **score, "message": (
                f"feature '{score['column']}' alone predicts '{target}' almost perfectly on {len(other):,} held-out "
                f"rows ({figure}): if it is only known after the outcome, or is the target in disguise, pass "
                f"--drop {score['column']}")})
    if classes is not None:
        found += _imbalance_warnings(labels, classes, target)
    return found


def _sample(rows: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    if len(rows) <= CHECK_SAMPLE_ROWS:
        return rows
    return np.sort(rng.choice(rows, CHECK_SAMPLE_ROWS, replace=False))


def _feature_codes(table: Columns) -> Iterator[tuple[str, np.ndarray | tuple[np.ndarray, list[str]]]]:
    yield from table.numeric.items()
    yield from table.categorical.items()


def _single_feature_score(column: str, values: Any, y_train: np.ndarray, y_other: np.ndarray,
                          train: np.ndarray, other: np.ndarray, classes: list[str] | None) -> dict[str, Any]:
    """Learn value -> class (majority) or value -> mean target from training rows, score it on held-out ones.
    Numeric values are cut into quantile bins of the training values (missing: a bin of its own)."""
    if isinstance(values, tuple):  # categorical: (codes, names)
        bins_train, bins_other = values[0][train], values[0][other]
        n_bins = len(values[1])
        if n_bins > 4 * (len(train) + len(other)):  # many levels: number only those the samples hold
            _, inverse = np.unique(np.concatenate([bins_train, bins_other]), return_inverse=True)
            bins_train, bins_other = inverse[: len(train)], inverse[len(train):]
            n_bins = int(inverse.max()) + 1
    else:
        part = values[train]
        present = part[~np.isnan(part)]
        edges = (np.unique(np.quantile(present, np.linspace(0, 1, _LEAK_BINS + 1)[1:-1])) if len(present)
                 else np.empty(0))

        def cut(v: np.ndarray) -> np.ndarray:
            b = np.searchsorted(edges, v, side="right")
            b[np.isnan(v)] = len(edges) + 1
            return b

        bins_train, bins_other, n_bins = cut(part), cut(values[other]), len(edges) + 2
    seen = np.bincount(bins_train, minlength=n_bins)
    if classes is None:
        y_train, y_other = y_train.astype(np.float64), y_other.astype(np.float64)
        means = np.bincount(bins_train, weights=y_train, minlength=n_bins) / np.maximum(seen, 1)
        means[seen == 0] = y_train.mean()  # a bin only held-out rows have: the overall mean
        total = float(np.square(y_other - y_train.mean()).sum())
        r2 = 1 - float(np.square(y_other - means[bins_other]).sum()) / total if total > 0 else 0.0
        return {"column": column, "score": r2, "r2": r2, "leak": r2 >= LEAK_R2}
    k = len(classes)
    majority_class = int(np.bincount(y_train, minlength=k).argmax())
    # the majority class per bin: count (bin, class) pairs, keep each bin's most frequent (ties: lowest class)
    pairs, counts = np.unique(bins_train * k + y_train, return_counts=True)
    order = np.lexsort((pairs % k, -counts, pairs // k))
    first = order[np.diff(pairs[order] // k, prepend=-1) > 0]
    guess = np.full(n_bins, majority_class, dtype=np.int64)
    guess[pairs[first] // k] = pairs[first] % k
    predicted = guess[bins_other]
    support = np.bincount(y_other, minlength=k)
    correct = np.bincount(y_other[predicted == y_other], minlength=k)
    accuracy = float((predicted == y_other).mean())
    balanced = float((correct[support > 0] / support[support > 0]).mean())
    return {"column": column, "score": accuracy, "accuracy": accuracy, "balanced_accuracy": balanced,
            "baseline": float((y_other == majority_class).mean()),
            "leak": accuracy >= LEAK_ACCURACY and balanced >= LEAK_BALANCED_ACCURACY}


def _recodings(table: Columns, labels: np.ndarray, rows: np.ndarray) -> list[tuple[str, int]]:
    """Columns whose values match the classes one to one on `rows`: (column, number of values)."""
    y = labels[rows]
    n_classes = len(np.unique(y))
    found = []
    for column, values in _feature_codes(table):
        codes = values[0][rows] if isinstance(values, tuple) else values[rows]
        if len(np.unique(codes[:200])) > n_classes:
            continue  # more values than classes in the first rows already (most numeric columns): cheap exit
        distinct, inverse = np.unique(codes, return_inverse=True)
        if len(distinct) != n_classes:
            continue
        if len(np.unique(inverse.astype(np.int64) * n_classes + y)) == n_classes:
            found.append((column, n_classes))
    return found


def _imbalance_warnings(labels: np.ndarray, classes: list[str], target: str) -> list[dict[str, Any]]:
    counts = np.bincount(labels, minlength=len(classes))
    n = int(counts.sum())
    majority = int(counts.argmax())
    found = []
    for i in rare_classes(labels, len(classes)):
        share = counts[i] / n
        found.append({"kind": "imbalance", "column": target, "class": classes[i], "share": float(share),
                      "rows": int(counts[i]), "message": (
            f"class '{classes[i]}' of '{target}' is {_percent(share, MINORITY_SHARE)} of the rows ({int(counts[i]):,} "
            f"of {n:,}; '{classes[majority]}' {100 * counts[majority] / n:.1f}%): a model that never predicts it can "
            f"still score accuracy {1 - share:.3f}, so watch balanced accuracy and macro F1 (val_balanced_accuracy, "
            "val_f1_macro), not accuracy; training weights the classes to balance them (--class-weights auto; "
            "--class-weights none weights every row alike)")})
    return found
