"""`prepare_dataset`: read, judge, split, preprocess, report and write, one step after another."""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline import __version__
from pipeline.data.columns import ColumnPlan, check_requested_columns, choose_target, infer_columns
from pipeline.data.diagnostics import check_warnings, column_report, format_column_report
from pipeline.data.output import _save_splits, _write_output, check_output_dir
from pipeline.data.preprocess import Preprocessor
from pipeline.data.reading import (CsvFile, _clip, _read_header, _rows, check_delimiter, check_encoding, check_numeric,
                                   read_csv, some)
from pipeline.data.split import _check_fractions, _check_split_sizes, row_groups, split_indices
from pipeline.data.store import PRODUCER, SCHEMA_VERSION, SPLITS
from pipeline.data.table import MAX_CATEGORIES, _in_background
from pipeline.data.targets import _check_classes, check_target, encode_target, infer_task
from pipeline.errors import DataError


# ------------------------------------------------------------------------------------------ orchestration
@dataclass(frozen=True)
class PrepareOptions:
    """Everything that shapes a preparation besides the input and output paths (the prepare CLI's flags)."""
    test_split: float = 0.2
    val_split: float = 0.1
    target: str | None = None
    task: str = "auto"
    seed: int = 42
    encoding: str = "utf-8"
    delimiter: str = ","
    drop: tuple[str, ...] = ()
    categorical: tuple[str, ...] = ()
    max_levels: int = MAX_CATEGORIES
    group_by: str = "rows"  # rows: exact duplicate rows stay on one side; features: rows with identical features do

    def __post_init__(self) -> None:
        object.__setattr__(self, "drop", tuple(self.drop))
        object.__setattr__(self, "categorical", tuple(self.categorical))

    def check(self) -> None:
        """Refuse bad settings before anything is read."""
        _check_fractions(self.test_split, self.val_split)
        levels, seed = self.max_levels, self.seed
        if isinstance(levels, bool) or not isinstance(levels, (int, np.integer)) or levels < 1:
            raise DataError(f"--max-levels must be a whole number >= 1, not {levels!r}")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise DataError(f"--seed must be a whole number >= 0 (it seeds the splits), not {_clip(repr(seed))}")
        if self.group_by not in GROUPINGS:
            raise DataError(f"--group-by must be one of {', '.join(GROUPINGS)}, not {_clip(repr(self.group_by))}")
        check_delimiter(self.delimiter)
        check_encoding(self.encoding)


GROUPINGS = ("rows", "features")


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


@dataclass
class _Read:
    """The CSV as read, with its target chosen and the rows without a target removed."""
    csv_file: CsvFile
    frame: pd.DataFrame
    target: str
    picked: str | None
    renamed: list[str] = field(default_factory=list)  # duplicate header names, as pandas renamed them (x.1)


def prepare_dataset(data_path: Path | str, output_dir: Path | str, options: PrepareOptions | None = None, *,
                    notes: list[str] | None = None, **settings: Any) -> PrepareResult:
    """Read, validate, split and preprocess a CSV; write `output_dir` complete or not at all.

    The settings are `PrepareOptions`' fields, given as one object or as keywords (`test_split=0.2, ...`).
    `drop`/`categorical`: columns to leave out / to treat as categories (integer codes); `max_levels`: one-hot
    columns per categorical feature at most. The result's schema holds the column report and the warnings."""
    options = PrepareOptions(**settings) if options is None else replace(options, **settings)
    notes = [] if notes is None else notes
    output_dir = Path(output_dir)
    options.check()
    check_output_dir(output_dir, data_path=Path(data_path))
    read = _read_input(Path(data_path), options, notes)
    task = infer_task(read.frame[read.target], options.task)
    notes.append(f"task: {task}" + (" (auto; override with --task)" if options.task == "auto" else ""))
    found = _renamed_warning(read) + _check_target_column(read, task)
    labels = read.frame[read.target]  # encoded on a thread of its own while the feature columns are inspected
    source, target = read.csv_file.path, read.target
    encoded = _in_background(lambda: encode_target(labels, task, source=source, target=target))
    plan = infer_columns(read.frame, target, source=source, drop=options.drop, categorical=options.categorical,
                         max_levels=options.max_levels)
    notes += [f"dropped column '{item['name']}': {item['reason']}" for item in plan.dropped]
    y_all, classes = encoded.result()
    if classes is not None:
        _check_classes(y_all, classes, source=source, target=target, picked=read.picked)
    splits = split_indices(y_all if classes is not None else None, row_groups(plan.columns, y_all if options.group_by == "rows" else None),
                           test_split=options.test_split, val_split=options.val_split, seed=options.seed)
    _check_split_sizes(splits, len(read.frame), options.test_split, options.val_split, source=source)
    preprocessor = Preprocessor(plan.numeric, plan.categorical, options.max_levels).fit(plan.columns, splits["train"])
    found += check_warnings(plan.columns, y_all, classes, splits, target=target, picked=read.picked, seed=options.seed)
    schema = _schema(read, options, task, (y_all, classes), plan, preprocessor, splits, found)
    kept = _write_output(output_dir, schema,
                         lambda staging: _save_splits(staging, preprocessor, plan.columns, splits, y_all))
    if kept is not None:
        notes.append(f"kept {kept}: the earlier output, because something was added to it while preparing")
    return PrepareResult(output_dir=output_dir, schema=schema, notes=notes)


def _read_input(data_path: Path, options: PrepareOptions, notes: list[str]) -> _Read:
    """Read the CSV (refusing unknown --target/--drop/--categorical names first, from the header alone) and
    drop the rows whose target is missing."""
    header = _read_header(data_path, options.encoding, options.delimiter)
    target = choose_target(header, options.target, source=data_path) if header else options.target
    if header:  # refuse unknown --drop/--categorical names before parsing a big file
        check_requested_columns(header, target, drop=options.drop, categorical=options.categorical,
                                source=data_path)
    csv_file = read_csv(data_path, encoding=options.encoding, delimiter=options.delimiter, keep_dtype=target)
    source, frame = csv_file.path, csv_file.frame
    target = choose_target(list(frame.columns), target, source=source)
    check_requested_columns(list(frame.columns), target, drop=options.drop, categorical=options.categorical,
                            source=source)
    picked = (None if options.target is not None
              else ("by its name" if target in ("target", "label") else "the last column"))
    notes.append(f"target: '{target}'" + ("" if target == frame.columns[-1] else " (by name)"))
    missing_target = frame[target].isna().to_numpy()
    if missing_target.all():
        raise DataError(f"{source}: target column '{target}' is empty in every row; choose another with --target")
    if missing_target.any():
        footer = " (the last row: a totals or footer line?)" if missing_target[-1] and missing_target.sum() == 1 else ""
        notes.append(f"dropped {int(missing_target.sum())} row(s) with a missing target (rows {_rows(missing_target)})"
                     + footer)
        frame = _numbers_as_numbers(frame.loc[~missing_target].reset_index(drop=True))
    renamed = [str(c) for c in frame.columns if c not in set(header)] if len(set(header)) < len(header) else []
    return _Read(csv_file=csv_file, frame=frame, target=target, picked=picked, renamed=renamed)


def _renamed_warning(read: _Read) -> list[dict[str, Any]]:
    """One warning naming the columns pandas renamed because their header name repeats an earlier one."""
    if not read.renamed:
        return []
    return [{"kind": "duplicate_names", "columns": read.renamed, "message": (
        f"{len(read.renamed)} header name(s) repeat an earlier column and were renamed: {some(read.renamed)}; "
        "--drop/--categorical take these new names (rename the columns in the file to choose your own)")}]


def _check_target_column(read: _Read, task: str) -> list[dict[str, Any]]:
    """Refuse a target that cannot be one; the warnings about a doubtful one."""
    if task == "regression" and pd.api.types.is_numeric_dtype(read.frame[read.target]):
        check_numeric(read.frame, read.target, source=read.csv_file.path, what="target")
    return check_target(read.frame[read.target], read.target, task, picked=read.picked, source=read.csv_file.path)


def _schema(read: _Read, options: PrepareOptions, task: str, labels: tuple[np.ndarray, list[str] | None],
            plan: ColumnPlan, preprocessor: Preprocessor, splits: dict[str, np.ndarray],
            found: list[dict[str, Any]]) -> dict[str, Any]:
    """schema.json's content: where the data came from, what each column became, the splits and the warnings.
    `labels`: the encoded target and its classes (None for regression)."""
    csv_file, target = read.csv_file, read.target
    y_all, classes = labels
    schema = {
        "schema_version": SCHEMA_VERSION,
        "producer": PRODUCER,
        "package_version": __version__,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "source": {"path": str(csv_file.path), "sha256": csv_file.sha256, "rows": int(len(csv_file.frame)),
                   "encoding": csv_file.encoding, "delimiter": options.delimiter},
        "target": target,
        "task": task,
        "classes": classes,
        "features": {"original": [c for c in csv_file.frame.columns if c != target],
                     "numeric": plan.numeric, "categorical": plan.categorical, "dropped": plan.dropped,
                     "datetime": {c: {"format": d["format"], "parts": d["parts"]} for c, d in plan.datetime.items()},
                     "processed": preprocessor.feature_names_},
        "preprocessing": preprocessor.to_dict(),
        "splits": {"test_split": options.test_split, "val_split": options.val_split, "seed": options.seed,
                   "stratified": classes is not None, "duplicates_grouped": True,
                   "grouped_on": options.group_by},
        "rows": {name: int(len(idx)) for name, idx in splits.items()},
        "class_counts": ({name: np.bincount(y_all[idx], minlength=len(classes)).tolist()
                          for name, idx in splits.items()} if classes is not None else None),
        "columns": column_report(list(csv_file.frame.columns), target, task, classes, plan, preprocessor),
        "warnings": found,
        "options": {"drop": list(options.drop), "categorical": list(options.categorical),
                    "max_levels": options.max_levels, "target_picked": read.picked},
        "files": {name: {"X": f"{name}_X.npy", "y": f"{name}_y.npy"} for name in SPLITS},
    }
    schema["data_sha256"] = _fingerprint(schema)
    return schema


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
