"""`prepare_dataset`: read, judge, split, preprocess, report and write, one step after another."""
from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline import __version__
from pipeline.data.columns import check_requested_columns, choose_target, infer_columns
from pipeline.data.diagnostics import check_warnings, column_report, format_column_report
from pipeline.data.output import _save_splits, _write_output, check_output_dir
from pipeline.data.preprocess import Preprocessor
from pipeline.data.reading import _clip, _read_header, _rows, check_delimiter, check_encoding, check_numeric, read_csv
from pipeline.data.split import _check_fractions, _check_split_sizes, row_groups, split_indices
from pipeline.data.store import PRODUCER, SCHEMA_VERSION, SPLITS
from pipeline.data.table import MAX_CATEGORIES, _in_background
from pipeline.data.targets import _check_classes, check_target, encode_target, infer_task
from pipeline.errors import DataError

# ------------------------------------------------------------------------------------------ orchestration
@dataclass
class PrepareResult:
    output_dir: Path
    schema: dict[str, Any]
    notes: list[str] = field(default_factory=list)

    @property
    def warnings(self) -> list[str]:
        return [item["message"] for item in self.schema["warnings"]]

    def column_table(self) -> str:
        return format_column_report(self.schema["columns"])


def prepare_dataset(data_path: Path | str, output_dir: Path | str, *, test_split: float = 0.2,
                    val_split: float = 0.1, target: str | None = None, task: str = "auto", seed: int = 42,
                    encoding: str = "utf-8", delimiter: str = ",", notes: list[str] | None = None,
                    drop: Iterable[str] = (), categorical: Iterable[str] = (), max_levels: int = MAX_CATEGORIES
                    ) -> PrepareResult:
    """Read, validate, split and preprocess a CSV; write `output_dir` complete or not at all.

    `drop`/`categorical`: columns to leave out / to treat as categories (integer codes); `max_levels`: one-hot
    columns per categorical feature at most. The result's schema holds the column report and the warnings."""
    notes = [] if notes is None else notes
    drop, categorical = list(drop), list(categorical)
    output_dir = Path(output_dir)
    _check_fractions(test_split, val_split)
    if isinstance(max_levels, bool) or not isinstance(max_levels, (int, np.integer)) or max_levels < 1:
        raise DataError(f"--max-levels must be a whole number >= 1, not {max_levels!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise DataError(f"--seed must be a whole number >= 0 (it seeds the splits), not {_clip(repr(seed))}")
    check_delimiter(delimiter)
    check_encoding(encoding)
    check_output_dir(output_dir, data_path=Path(data_path))
    requested = target
    header = _read_header(data_path, encoding, delimiter)
    target = choose_target(header, target, source=data_path) if header else target
    if header:  # refuse unknown --drop/--categorical names before parsing a big file
        check_requested_columns(header, target, drop=drop, categorical=categorical, source=data_path)
    csv_file = read_csv(data_path, encoding=encoding, delimiter=delimiter, keep_dtype=target)
    source = csv_file.path
    frame = csv_file.frame
    target = choose_target(list(frame.columns), target, source=source)
    check_requested_columns(list(frame.columns), target, drop=drop, categorical=categorical, source=source)
    picked = None if requested is not None else ("by its name" if target in ("target", "label") else "the last column")
    notes.append(f"target: '{target}'" + ("" if target == frame.columns[-1] else " (by name)"))

    missing_target = frame[target].isna().to_numpy()
    if missing_target.all():
        raise DataError(f"{source}: target column '{target}' is empty in every row; choose another with --target")
    if missing_target.any():
        footer = " (the last row: a totals or footer line?)" if missing_target[-1] and missing_target.sum() == 1 else ""
        notes.append(f"dropped {int(missing_target.sum())} row(s) with a missing target (rows {_rows(missing_target)})"
                     + footer)
        frame = _numbers_as_numbers(frame.loc[~missing_target].reset_index(drop=True))

    resolved_task = infer_task(frame[target], task)
    notes.append(f"task: {resolved_task}" + (" (auto; override with --task)" if task == "auto" else ""))
    if resolved_task == "regression" and pd.api.types.is_numeric_dtype(frame[target]):
        check_numeric(frame, target, source=source, what="target")
    found = check_target(frame[target], target, resolved_task, picked=picked, source=source)
    labels = frame[target]  # encoded on a thread of its own while the feature columns are inspected
    encoded = _in_background(lambda: encode_target(labels, resolved_task, source=source, target=target))
    plan = infer_columns(frame, target, source=source, drop=drop, categorical=categorical, max_levels=max_levels)
    for item in plan.dropped:
        notes.append(f"dropped column '{item['name']}': {item['reason']}")

    y_all, classes = encoded.result()
    if classes is not None:
        _check_classes(y_all, classes, source=source, target=target, picked=picked)
    table = plan.columns
    splits = split_indices(y_all if classes is not None else None, row_groups(table, y_all),
                           test_split=test_split, val_split=val_split, seed=seed)
    _check_split_sizes(splits, len(frame), test_split, val_split, source=source)

    preprocessor = Preprocessor(plan.numeric, plan.categorical, max_levels).fit(table, splits["train"])
    found += check_warnings(table, y_all, classes, splits, target=target, picked=picked, seed=seed)

    schema = {
        "schema_version": SCHEMA_VERSION,
        "producer": PRODUCER,
        "package_version": __version__,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "source": {"path": str(source), "sha256": csv_file.sha256, "rows": int(len(csv_file.frame)),
                   "encoding": csv_file.encoding, "delimiter": delimiter},
        "target": target,
        "task": resolved_task,
        "classes": classes,
        "features": {"original": [c for c in csv_file.frame.columns if c != target],
                     "numeric": plan.numeric, "categorical": plan.categorical, "dropped": plan.dropped,
                     "datetime": {c: {"format": d["format"], "parts": d["parts"]} for c, d in plan.datetime.items()},
                     "processed": preprocessor.feature_names_},
        "preprocessing": preprocessor.to_dict(),
        "splits": {"test_split": test_split, "val_split": val_split, "seed": seed,
                   "stratified": classes is not None, "duplicates_grouped": True},
        "rows": {name: int(len(idx)) for name, idx in splits.items()},
        "class_counts": ({name: np.bincount(y_all[idx], minlength=len(classes)).tolist() for name, idx in splits.items()}
                         if classes is not None else None),
        "columns": column_report(list(csv_file.frame.columns), target, resolved_task, classes, plan, preprocessor),
        "warnings": found,
        "options": {"drop": drop, "categorical": categorical, "max_levels": max_levels, "target_picked": picked},
        "files": {name: {"X": f"{name}_X.npy", "y": f"{name}_y.npy"} for name in SPLITS},
    }
    schema["data_sha256"] = _fingerprint(schema)
    kept = _write_output(output_dir, schema, lambda staging: _save_splits(staging, preprocessor, table, splits, y_all))
    if kept is not None:
        notes.append(f"kept {kept}: the earlier output, because something was added to it while preparing")
    return PrepareResult(output_dir=output_dir, schema=schema, notes=notes)


def _numbers_as_numbers(frame: pd.DataFrame) -> pd.DataFrame:
    """Text columns whose every value is a number, once rows were dropped (a footer like 'TOTAL,,' made the
    parser read a numeric column as text), become numeric again."""
    for column in frame.columns:
        series = frame[column]
        if pd.api.types.is_numeric_dtype(series) or pd.api.types.is_bool_dtype(series):
            continue
        filled = series.notna()
        parsed = pd.to_numeric(series.where(filled), errors="coerce")
        if filled.any() and bool((parsed.notna() == filled).all()):
            frame[column] = parsed
    return frame


def _fingerprint(schema: dict) -> str:
    """One hash for 'the same processed data': the source bytes and everything that shaped the splits
    (the transformation is deterministic, so the files follow from these)."""
    keyed = {k: schema[k] for k in ("source", "target", "task", "classes", "features", "preprocessing", "splits",
                                    "rows", "package_version")}
    keyed["source"] = {"sha256": schema["source"]["sha256"]}
    return hashlib.sha256(json.dumps(keyed, sort_keys=True).encode()).hexdigest()
