"""Phase 1: turn a CSV into processed, leakage-free train/val/test splits plus a `schema.json`.

    python solutions/prepare_dataset.py --data-path data/train.csv --output-dir processed_data

The steps are small functions that return values (`read_csv`, `infer_columns`, `choose_target`,
`infer_task`, `split_indices`, `Preprocessor.fit/transform`, `column_report`, `check_warnings`);
`prepare_dataset` orchestrates them and is the only one that writes. Every column's role and the reason for it
(the column report) and warnings with numbers (leaks, rare classes, a doubtful target) go into schema.json;
the rules are listed in data/README.md. Bad input raises `DataError` naming the file, column or row and the fix.

The package, one concern per module (lower ones never import higher ones):
    store        the processed splits and schema.json: load_processed, Dataset, rare_classes (no pandas)
    table        Columns (the feature table as arrays), the thread helpers and shared limits
    reading      CSV reading: encoding detection, chunked parsing, numeric-column checks
    columns      column judgement: IDs, constants, dates, categories -> ColumnPlan
    targets      the target: choose the task, encode labels, doubtful-target warnings
    split        the grouped, stratified train/val/test split
    preprocess   Preprocessor: fit on train rows, transform any rows
    diagnostics  the column report and the leak / imbalance warnings
    output       output-folder safety, staging and atomic writes
    scoring      load_raw_for_scoring, features_for_scoring: new rows through a fitted schema (predict, serving)
    prepare      prepare_dataset: the steps above in order

Names resolve lazily, so `from pipeline.data import store` (what training uses) does not import pandas.
"""
from __future__ import annotations

import importlib
from typing import Any


_WHERE = {
    "store": ("Dataset", "FLOAT32_MAX", "MINORITY_SHARE", "PRODUCER", "SCHEMA_VERSION", "SPLITS", "load_processed",
        "load_schema", "load_split", "rare_classes",),
    "table": ("CLASSIFICATION_MAX_INT_CLASSES", "Columns", "MAX_CATEGORIES", "MISSING", "worker_count",),
    "reading": ("CsvFile", "check_delimiter", "check_encoding", "check_numeric", "read_csv", "some",),
    "columns": ("ColumnPlan", "DATETIME_PARTS", "DATETIME_SHARE", "ID_DISTINCT_SHARE", "ID_RULES_MIN_ROWS",
        "NEAR_UNIQUE_SHARE", "check_requested_columns", "choose_target", "datetime_features", "infer_columns",),
    "targets": ("check_target", "encode_target", "infer_task",),
    "split": ("_group_ids", "row_groups", "split_indices",),
    "preprocess": ("Preprocessor", "_median", "_numeric_stats",),
    "diagnostics": ("CHECK_SAMPLE_ROWS", "_percent", "check_warnings", "column_report", "format_column_report",),
    "output": ("_save_splits", "check_output_dir",),
    "scoring": ("features_for_scoring", "like_csv", "load_raw_for_scoring", "raw_columns",),
    "prepare": ("PrepareResult", "prepare_dataset", "PrepareOptions",),
}
_MODULE_OF = {name: module for module, names in _WHERE.items() for name in names}
__all__ = sorted(_MODULE_OF)


def __getattr__(name: str) -> Any:
    """`data.prepare_dataset` and friends, imported on first use (PEP 562)."""
    if name in _MODULE_OF:
        value = getattr(importlib.import_module(f"pipeline.data.{_MODULE_OF[name]}"), name)
        globals()[name] = value
        return value
    if name in _WHERE:
        return importlib.import_module(f"pipeline.data.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_MODULE_OF) | set(_WHERE))
