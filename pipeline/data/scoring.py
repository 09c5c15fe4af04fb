"""New rows through a fitted schema (what `predict` and the MLflow pyfunc model score)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.data.columns import datetime_features
from pipeline.data.preprocess import Preprocessor
from pipeline.data.reading import _downcast, check_numeric, read_csv, some
from pipeline.errors import DataError


def load_raw_for_scoring(csv_path: Path | str, schema: dict[str, Any]) -> tuple[np.ndarray, pd.DataFrame]:
    """Apply a fitted schema's preprocessing to a new CSV (used by `predict`); the target may be absent."""
    source = schema["source"]  # the training file's encoding and delimiter: a new file exported the same way
    csv_file = read_csv(csv_path, encoding=source.get("encoding") or "utf-8", delimiter=source.get("delimiter", ","))
    return features_for_scoring(csv_file.frame, schema, source=csv_path), csv_file.frame


def raw_columns(schema: dict[str, Any]) -> list[str]:
    """The raw columns a scored table needs, in the training CSV's order: the features, a date column once for
    all the parts made from it."""
    derived = _derived(schema)
    needed = dict.fromkeys(derived.get(c, c) for c in schema["features"]["numeric"] + schema["features"]["categorical"])
    order = {name: i for i, name in enumerate(schema["features"].get("original", []))}
    return sorted(needed, key=lambda c: order.get(c, len(order)))


def features_for_scoring(frame: pd.DataFrame, schema: dict[str, Any], *, source: Path | str,
                         hint: str = "score a CSV with the training file's columns") -> np.ndarray:
    """A raw table (columns as `read_csv` gives them; others are ignored) as the processed (rows, features)
    float32 array the network was trained on. Missing cells are imputed as in training; a category level the
    training rows did not have (or kept) encodes as all zeros, as rare levels did in training."""
    missing = [c for c in raw_columns(schema) if c not in frame.columns]
    if missing:
        raise DataError(f"{source}: missing {len(missing)} feature column(s) the model was trained on "
                        f"({some(missing)}); {hint}")
    derived = _derived(schema)
    for column in schema["features"]["numeric"]:
        if column in derived or check_numeric(frame, column, source=source) is not None:
            continue
        if not pd.api.types.is_bool_dtype(frame[column]):  # text where the model was trained on numbers
            example = frame[column].dropna()
            shown = f", e.g. {str(example.iloc[0])[:40]!r}" if len(example) else ""
            raise DataError(f"{source}: column '{column}' holds text{shown}, but the model was trained on it as "
                            "numbers; send numbers (a missing value may be left empty)")
    dates = schema["features"].get("datetime", {})
    if dates:
        frame = frame.assign(**datetime_features(frame, dates))
    return Preprocessor.from_dict(schema["preprocessing"]).transform(frame)


def like_csv(frame: pd.DataFrame, schema: dict[str, Any]) -> pd.DataFrame:
    """Raw rows that arrive as a table (a pandas frame, a REST request) with the column types `read_csv` gives
    the same rows in a CSV, so they score exactly as `predict_csv` scores that file: a numeric feature column
    whose values are all whole numbers (none missing) is int64, as the parser reads integer text; other float
    columns are float32, as the reader stores them (both enter the preprocessing by different float paths).
    A whole number written as "39.0" in a CSV reads as a float there; here it counts as an integer: the
    scores can then differ in the last bits of float32."""
    frame = frame.copy()
    derived = _derived(schema)
    for column in schema["features"]["numeric"]:
        if column in derived or column not in frame.columns:
            continue
        if frame[column].dtype.kind not in "fiub":  # numbers held as text or objects (e.g. JSON with nulls)
            numbers = pd.to_numeric(frame[column], errors="coerce")
            if numbers.notna().sum() == frame[column].notna().sum():
                frame[column] = numbers  # else left as it is, for the checks to name the values that are not
        if frame[column].dtype.kind != "f":
            continue
        values = frame[column].to_numpy()
        whole = np.isfinite(values).all() and (np.abs(values) < 2.0**53).all() and (values == np.round(values)).all()
        if whole and len(values):
            frame[column] = values.astype(np.int64)
    return _downcast(frame, None)


def _derived(schema: dict[str, Any]) -> dict[str, str]:
    """{processed date part: its raw column}, e.g. {"signup.year": "signup"}."""
    dates = schema["features"].get("datetime", {})
    return {f"{column}.{part}": column for column, item in dates.items() for part in item["parts"]}
