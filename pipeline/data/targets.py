"""The target column: which task it means, its encoding, and the checks that it is a real target."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.data.columns import (ID_DISTINCT_SHARE, ID_RULES_MIN_ROWS, NEAR_UNIQUE_SHARE, _ID_NAME,
                                   _is_row_number)
from pipeline.data.reading import _refuse_beyond_float32, _rows
from pipeline.data.store import FLOAT32_MAX
from pipeline.data.table import CLASSIFICATION_MAX_INT_CLASSES, _label_text, _numeric_values
from pipeline.errors import DataError


def infer_task(target: pd.Series, requested: str = "auto") -> str:
    """Classification for text/boolean targets and few-valued integers; regression for the rest."""
    if requested in ("classification", "regression"):
        return requested
    if requested != "auto":
        raise DataError(f"--task must be auto, classification or regression, not {requested!r}")
    if not pd.api.types.is_numeric_dtype(target) or pd.api.types.is_bool_dtype(target):
        return "classification"
    values = target.dropna()
    as_float = values.astype("float64").to_numpy()
    with np.errstate(invalid="ignore"):  # inf % 1 is NaN: not a whole number, and checked later
        is_integer = bool(np.all(np.mod(as_float, 1) == 0))
    if is_integer and values.nunique() <= CLASSIFICATION_MAX_INT_CLASSES:
        return "classification"
    return "regression"


# --------------------------------------------------------------------------------------------- targets
def encode_target(values: pd.Series, task: str, *, source: Path | str, target: str
                  ) -> tuple[np.ndarray, list[str] | None]:
    if task == "regression":
        numeric = pd.to_numeric(values, errors="coerce")
        bad = numeric.isna().to_numpy()
        if bad.any():
            raise DataError(f"{source}: target '{target}' has {int(bad.sum())} non-numeric value(s) (rows "
                            f"{_rows(bad)}) but the task is regression; fix them or use --task classification")
        wide = numeric.to_numpy(dtype=np.float64)
        if np.isinf(wide).any():
            infinite = np.isinf(wide)
            raise DataError(f"{source}: target '{target}' has {int(infinite.sum())} infinite value(s) (rows "
                            f"{_rows(infinite)}); replace them with real numbers or remove those rows")
        if np.abs(wide).max(initial=0.0) > FLOAT32_MAX:
            _refuse_beyond_float32(wide, target, source, "target")
        return wide.astype(np.float32), None
    codes, uniques = pd.factorize(values)
    names = [_label_text(u) for u in uniques]
    classes = sorted(set(names), key=_class_sort_key)
    position = {name: i for i, name in enumerate(classes)}
    return np.array([position[name] for name in names], dtype=np.int64)[codes], classes


def _class_sort_key(name: str) -> tuple[int, float, str]:
    try:
        return (0, float(name), name)
    except ValueError:
        return (1, 0.0, name)


def check_target(values: pd.Series, target: str, task: str, *, picked: str | None, source: Path | str
                 ) -> list[dict[str, Any]]:
    """A target the automatic rule `picked` that looks like an ID: refused when it is text with near-unique
    values (every class would be a row or two), a warning when it is whole numbers that look like a key."""
    if picked is None or len(values) < ID_RULES_MIN_ROWS:
        return []
    if task == "classification" and not pd.api.types.is_numeric_dtype(values):
        distinct = int(values.nunique())
        if distinct > NEAR_UNIQUE_SHARE * len(values):
            raise DataError(f"{source}: target '{target}' was picked automatically ({picked}) but looks like an ID, "
                            f"a name or free text ({distinct:,} distinct values in {len(values):,} rows); choose the "
                            "column to predict with --target")
        return []
    if not pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values):
        return []
    numbers = _numeric_values(values)
    filled = numbers[~np.isnan(numbers)]
    if np.mod(filled, 1).any():
        return []
    distinct = len(np.unique(filled))
    named, increasing = bool(_ID_NAME.search(target)), _is_row_number(filled)
    if distinct < ID_DISTINCT_SHARE * len(filled) or not (named or increasing):
        return []  # all-different whole numbers alone are common in a target (prices, counts)
    why = "the name says ID" if named else "they increase row by row, like a row number"
    return [{"kind": "id_target", "column": target, "distinct": distinct, "message": (
        f"target '{target}' was picked automatically ({picked}) but looks like an ID ({distinct:,} distinct whole "
        f"numbers in {len(filled):,} rows, and {why}); "
        "if that is not what you mean to predict, pass --target")}]


def _check_classes(y: np.ndarray, classes: list[str], *, source: Path, target: str, picked: str | None = None
                   ) -> None:
    counts = np.bincount(y, minlength=len(classes))
    # a target the automatic rule chose may simply be the wrong column: say so, with the way out
    hint = f" (the target was picked automatically, {picked}: choose yours with --target)" if picked else ""
    if len(classes) < 2:
        raise DataError(f"{source}: target '{target}' has only one class ({classes[0]!r}); classification needs "
                        f"at least two, or use --task regression for a numeric target{hint}")
    single = [classes[i] for i in np.flatnonzero(counts == 1)]
    if single:
        shown = str(single) if len(single) <= 10 else f"{str(single[:10])[:-1]}, ... ({len(single)} in all)]"
        raise DataError(f"{source}: class(es) {shown} of target '{target}' have a single row, too few to "
                        f"stratify train/val/test; add rows for them or remove those rows{hint}")
