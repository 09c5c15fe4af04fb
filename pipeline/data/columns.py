"""Column judgement: which columns are features (numeric, categorical, dates) and which are dropped, and why."""
from __future__ import annotations

import difflib
import math
import re
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pandas.tseries.api import guess_datetime_format

from pipeline.data.reading import _clip, _finite_values, _refuse_numbers_with_garbage, some
from pipeline.data.table import Columns, MAX_CATEGORIES, _named_codes, _thread_map
from pipeline.errors import DataError

# How prepare judges a column (the rules the column report cites; documented in data/README.md too):
NEAR_UNIQUE_SHARE = 0.5       # text with more distinct values than this share of its filled cells: ID/name/free text
ID_RULES_MIN_ROWS = 20        # below this many filled cells, uniqueness says nothing
ID_DISTINCT_SHARE = 0.95      # whole numbers this distinct, named like an ID or increasing: a key, not a measure
DATETIME_SHARE = 0.9          # a text column is dates when this share of its distinct values parse with one format
DATETIME_PARTS = {"year": "year", "month": "month", "day": "day", "weekday": "day_of_week", "hour": "hour",
                  "minute": "minute"}  # part -> pandas .dt attribute; weekday: Monday 0 .. Sunday 6


_DATETIME_FORMATS = ("%Y-%m-%d", "%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M", "%Y/%m/%d",
                     "%d-%b-%y", "%d-%b-%Y", "%d %b %Y", "%d %B %Y", "%b %d, %Y", "%B %d, %Y", "%m/%d/%Y",
                     "%d/%m/%Y", "%m/%d/%y", "%d/%m/%y", "%d.%m.%Y", "%m/%d/%Y %H:%M", "%d/%m/%Y %H:%M")


_ID_NAME = re.compile(r"(?:^|[^A-Za-z])(?:id|Id|ID|key|Key|KEY|uuid|UUID|guid|index|Index|idx)$|[a-z](?:Id|ID)$")
_CODE_NAME = re.compile(r"code|type|kind|class|categ|group|status|district|school|region|zone|zip", re.IGNORECASE)


@dataclass(frozen=True)
class ColumnPlan:
    numeric: list[str]  # feature names; a datetime column contributes one per part, e.g. 'date.month'
    categorical: list[str]
    dropped: list[dict[str, str]]  # [{"name", "reason"}]
    columns: Columns | None = field(default=None, repr=False, compare=False)  # the kept ones, converted
    datetime: dict[str, dict[str, Any]] = field(default_factory=dict)  # column -> {"format", "parts", "unparsed"}
    facts: dict[str, dict[str, Any]] = field(default_factory=dict, repr=False)  # column -> what the report cites


def infer_columns(frame: pd.DataFrame, target: str, *, source: Path | str = "data", drop: Iterable[str] = (),
                  categorical: Iterable[str] = (), max_levels: int = MAX_CATEGORIES) -> ColumnPlan:
    """Classify every feature column as numeric, categorical, datetime (expanded into numeric parts) or dropped
    (with the reason the column report prints). `drop` and `categorical` are the user's --drop/--categorical.

    Columns are inspected on worker threads; the plan carries the kept ones converted (`ColumnPlan.columns`),
    so nothing is parsed or factorized twice."""
    drop, forced = set(drop), set(categorical)
    features = [column for column in frame.columns if column != target]
    inspected = [column for column in features if column not in drop]
    series = [frame[column] for column in inspected]  # taken here: the threads only read NumPy/Arrow data
    verdicts = dict(zip(inspected, _thread_map(
        lambda item: _inspect_column(item[0], item[1], source, categorical=item[1] in forced, max_levels=max_levels),
        list(zip(series, inspected)))))
    numeric: dict[str, np.ndarray] = {}
    categories: dict[str, tuple[np.ndarray, list[str]]] = {}
    dates: dict[str, dict[str, Any]] = {}
    dropped, facts = [], {}
    for column in features:
        kind, detail, fact = verdicts.get(column, ("dropped", "dropped with --drop", {}))
        facts[column] = fact
        if kind == "numeric":
            numeric[column] = detail
        elif kind == "categorical":
            categories[column] = detail
        elif kind == "datetime":
            parts, spec = detail
            for part, values in parts.items():
                name = f"{column}.{part}"
                if name not in frame.columns:  # a real column of that name wins
                    numeric[name] = values
            dates[column] = spec
        else:
            dropped.append({"name": column, "reason": detail})
    if not numeric and not categories:
        raise DataError(f"{source}: no usable feature columns besides the target '{target}' (dropped: "
                        f"{some((d['name'] + ' - ' + d['reason'] for d in dropped), 5, quote=False) or 'none'})")
    return ColumnPlan(numeric=list(numeric), categorical=list(categories), dropped=dropped,
                      columns=Columns(numeric=numeric, categorical=categories, n_rows=len(frame)),
                      datetime=dates, facts=facts)


def _inspect_column(series: pd.Series, column: str, source: Path | str, *, categorical: bool = False,
                    max_levels: int = MAX_CATEGORIES) -> tuple[str, Any, dict[str, Any]]:
    """("numeric", values, facts) | ("categorical", (codes, names), facts) | ("datetime", (parts, spec), facts)
    | ("dropped", reason, facts). `categorical`: the user said so (--categorical), whatever the values look like."""
    n_rows = len(series)
    if pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series):
        values, low, high = _finite_values(series, column, source)
        if math.isnan(low):
            return "dropped", "all values missing", {}
        facts: dict[str, Any] = {"missing": int(np.count_nonzero(np.isnan(values)))}
        if low == high:
            return "dropped", "constant (one distinct value)", facts
        if categorical:
            return "categorical", _named_codes(*pd.factorize(series)), {**facts, "forced": True}
        reason, distinct = _judge_whole_numbers(values, column)
        if reason:
            return "dropped", reason, facts
        if distinct is not None and 3 <= distinct <= max_levels and (_CODE_NAME.search(column) or _ID_NAME.search(column)):
            facts["hint"] = f"whole numbers, {distinct} distinct: if they are codes, pass --categorical {column}"
        return "numeric", values, facts
    codes, uniques = pd.factorize(series)
    if not len(uniques):
        return "dropped", "all values missing", {}
    facts = {"missing": int(np.count_nonzero(codes < 0))}
    if not categorical and not pd.api.types.is_bool_dtype(series):  # --categorical: '3+' beside 0, 1, 2 is a level
        _refuse_numbers_with_garbage(series, codes, uniques, column, source,
                                     hint=f", or pass --categorical {column} if its values are categories")
    if len(uniques) == 1:
        return "dropped", "constant (one distinct value)", facts
    if not categorical and not pd.api.types.is_bool_dtype(series):
        parsed = _parse_datetimes(uniques, codes)
        if parsed is not None:
            return "datetime", parsed, facts
        filled = n_rows - facts["missing"]
        if n_rows >= ID_RULES_MIN_ROWS and len(uniques) == n_rows:
            return "dropped", "ID-like (a different value in every row)", facts
        if filled >= ID_RULES_MIN_ROWS and len(uniques) > NEAR_UNIQUE_SHARE * filled:
            return "dropped", (f"near-unique text: {len(uniques):,} distinct values in {filled:,} filled rows "
                               "(an ID, a name or free text)"), facts
    return "categorical", _named_codes(codes, uniques), {**facts, "forced": categorical}


def _judge_whole_numbers(values: np.ndarray, column: str) -> tuple[str | None, int | None]:
    """(reason to drop as an ID or None, distinct count or None) for a numeric column.

    None, None for anything with fractions (most measurements: decided from the first 1,000 rows, cheaply).
    An ID: >= 95% distinct whole numbers that are named like an ID, or that increase row by row over a range
    under twice the row count (a row number). Distinct whole numbers alone are no proof: volumes, prices in
    cents and populations are often all different."""
    head = values[:1000]
    if np.mod(head[~np.isnan(head)], 1).any():
        return None, None
    filled = values[~np.isnan(values)]
    if np.mod(filled, 1).any():
        return None, None
    distinct = len(np.unique(filled))
    if len(filled) < ID_RULES_MIN_ROWS or distinct < ID_DISTINCT_SHARE * len(filled):
        return None, distinct
    if _ID_NAME.search(column):
        return (f"ID-like: {distinct:,} distinct whole numbers in {len(filled):,} filled rows, and the name "
                "says ID"), distinct
    if _is_row_number(filled):
        return "ID-like: whole numbers increasing row by row, like a row number", distinct
    return None, distinct


def _is_row_number(values: np.ndarray) -> bool:
    """Strictly increasing whole numbers spanning less than twice their count: a row number or serial key."""
    return bool(len(values) > 1 and np.all(np.diff(values) > 0) and values[-1] - values[0] < 2 * len(values))


def _parse_datetimes(uniques: Any, codes: np.ndarray) -> tuple[dict[str, np.ndarray], dict[str, Any]] | None:
    """Numeric parts of a text column of dates (({part: float values per row}, spec)), or None if it is not one.

    Judged on up to 50 distinct values: most must hold two groups of digits, and one format (guessed by pandas,
    else the first of a few common ones, the one parsing most values) must parse >= 90% of them; then all distinct
    values are parsed with it (vectorised, once per distinct value). Parts that never vary are left out."""
    sample = [str(u) for u in np.asarray(uniques[:50], dtype=object)]
    if sum(bool(re.search(r"\d+\D+\d+", value)) for value in sample) < DATETIME_SHARE * len(sample):
        return None
    candidates = []
    for value in sample[:3]:
        for dayfirst in (False, True):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # "dayfirst=True but the format is year-first": noted, not needed
                guessed = guess_datetime_format(value, dayfirst=dayfirst)
            if guessed and guessed not in candidates:
                candidates.append(guessed)
    candidates += [f for f in _DATETIME_FORMATS if f not in candidates]
    best, best_parsed = None, 0
    for fmt in candidates:
        if not re.search("%[mbB]", fmt) or not re.search("%[Yy]", fmt):
            continue  # a year and a month at least: '2019' alone or '12:30' is not a date
        parsed = int(_to_datetime(sample, fmt).notna().sum())
        if parsed > best_parsed:
            best, best_parsed = fmt, parsed
    if best is None or best_parsed < DATETIME_SHARE * len(sample):
        return None
    return _datetime_parts(uniques, codes, best)


def _to_datetime(values: Any, fmt: str) -> pd.Series:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pandas warns about formats it cannot vectorise; the result is right
        return pd.Series(pd.to_datetime(pd.Series(np.asarray(values, dtype=object)), format=fmt, errors="coerce",
                                        utc=True))


def _datetime_parts(uniques: Any, codes: np.ndarray, fmt: str, parts: Iterable[str] | None = None
                    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Parse the distinct values with `fmt` and gather each part per row (float64, NaN where missing or unparsed).
    `parts`: the ones to build (scoring new data); by default those that vary."""
    stamps = _to_datetime(uniques, fmt)
    unparsed_values = stamps.isna().to_numpy()
    chosen = {}
    for part in (DATETIME_PARTS if parts is None else parts):
        per_value = np.append(getattr(stamps.dt, DATETIME_PARTS[part]).to_numpy(dtype=np.float64, na_value=np.nan),
                              np.nan)
        if parts is None:
            present = per_value[~np.isnan(per_value)]
            if not len(present) or present.min() == present.max():
                continue
        chosen[part] = per_value[np.where(codes < 0, len(per_value) - 1, codes)]  # code -1 (missing): NaN
    unparsed = int(np.bincount(codes[codes >= 0], minlength=len(unparsed_values))[unparsed_values].sum())
    return chosen, {"format": fmt, "parts": list(chosen), "unparsed": unparsed}


def datetime_features(frame: pd.DataFrame, spec: dict[str, dict[str, Any]]) -> dict[str, np.ndarray]:
    """The numeric parts schema.json's `features.datetime` describes, computed from a raw frame (to score new data)."""
    result = {}
    for column, item in spec.items():
        codes, uniques = pd.factorize(frame[column].astype(str).where(frame[column].notna()))
        parts, _ = _datetime_parts(uniques, codes, item["format"], item["parts"])
        result.update({f"{column}.{part}": values for part, values in parts.items()})
    return result


def check_requested_columns(columns: list[str], target: str | None, *, drop: Iterable[str] = (),
                            categorical: Iterable[str] = (), source: Path | str = "data") -> None:
    """Refuse --drop/--categorical names that are not columns (with a "did you mean"), the target, or both flags."""
    for flag, names in (("--drop", drop), ("--categorical", categorical)):
        for name in names:
            if name in columns:
                if name == target:
                    raise DataError(f"{source}: {flag} names the target column '{target}'; choose another target "
                                    "with --target, or leave it out of " + flag)
                continue
            with_comma = [c for c in columns if "," in str(c) and name in [p.strip() for p in str(c).split(",")]]
            if with_comma:  # `--drop "price, EUR"` split on its comma
                raise DataError(f"{source}: {flag}: no column named '{_clip(name)}', but '{_clip(with_comma[0])}' "
                                f"holds a comma; name it whole with {flag}-column \"{_clip(with_comma[0])}\"")
            close = difflib.get_close_matches(name, columns, n=1, cutoff=0.5)
            hint = f"did you mean '{close[0]}'? " if close else ""
            raise DataError(f"{source}: {flag}: no column named '{_clip(name)}'; {hint}columns are: "
                            f"{some(columns, 30, quote=False)}")
    both = sorted(set(drop) & set(categorical))
    if both:
        raise DataError(f"{source}: column(s) {some(both)} are in both --drop and --categorical; "
                        "keep each in one")


def choose_target(columns: list[str], requested: str | None, *, source: Path | str = "data") -> str:
    """`--target`, else a column named `target` or `label`, else the last column."""
    if requested is not None:
        if requested in columns:
            return requested
        close = difflib.get_close_matches(requested, columns, n=1, cutoff=0.5)
        hint = f"did you mean '{close[0]}'? " if close else ""
        raise DataError(f"{source}: target column '{_clip(requested)}' not found; {hint}columns are: "
                        f"{some(columns, 30, quote=False)}")
    for name in ("target", "label"):
        if name in columns:
            return name
    return columns[-1]
