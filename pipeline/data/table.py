"""The feature table as arrays (`Columns`), the thread helpers and the limits the other modules share."""
from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd


MAX_CATEGORIES = 50  # default --max-levels: one-hot columns per categorical feature; rarer ones encode as all zeros
CLASSIFICATION_MAX_INT_CLASSES = 20


def _in_background(function: Callable[..., Any], *args: Any) -> Future:
    """Run `function(*args)` on a daemon thread; its result (or exception) arrives in the returned Future."""
    future: Future = Future()

    def run() -> None:
        try:
            future.set_result(function(*args))
        except BaseException as exc:  # handed to whoever asks for the result
            future.set_exception(exc)

    threading.Thread(target=run, daemon=True).start()
    return future


def worker_count() -> int:
    """Threads for column and chunk work: pandas' own `mode.max_threads` if set, else the CPUs this process
    may use (affinity), at most 8. NumPy releases the GIL in the heavy loops, so threads really run in parallel."""
    try:
        configured = pd.get_option("mode.max_threads")  # pandas >= 3.1, which also parses CSVs on threads
    except KeyError:  # pandas' OptionError: an older pandas without the option
        configured = None
    if configured:
        return max(1, int(configured))
    available = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(8, available))


# -------------------------------------------------------------------------------------- preprocessing
MISSING = "(missing)"


@dataclass(frozen=True)
class Columns:
    """Feature columns converted once for fast row access: what `Preprocessor` reads.

    Numeric columns are float arrays (NaN = missing; float32 stays float32, integers become float64).
    Categorical ones are integer codes into their names, a missing value being the category "(missing)" —
    missingness often carries signal. Gathering rows of NumPy arrays is cheap; taking rows of pandas string
    columns and factorizing them again for every chunk was most of the transform's time on big files."""
    numeric: dict[str, np.ndarray]
    categorical: dict[str, tuple[np.ndarray, list[str]]]
    n_rows: int

    @classmethod
    def of(cls, frame: "pd.DataFrame | Columns", numeric: list[str], categorical: list[str]) -> "Columns":
        if isinstance(frame, Columns):
            return frame
        return cls(numeric={c: _numeric_values(frame[c]) for c in numeric},
                   categorical={c: _category_codes(frame[c]) for c in categorical}, n_rows=len(frame))


def _numeric_values(series: pd.Series) -> np.ndarray:
    values = series.to_numpy(dtype=np.float64 if series.dtype.kind in "iub" else None, na_value=np.nan)
    return values.astype(np.float64) if values.dtype == object else values


def _category_codes(series: pd.Series) -> tuple[np.ndarray, list[str]]:
    """(code per row, category names), missing values coded as the name "(missing)"."""
    return _named_codes(*pd.factorize(series, use_na_sentinel=True))


def _named_codes(codes: np.ndarray, uniques: Any) -> tuple[np.ndarray, list[str]]:
    names = [_label_text(u) for u in uniques]
    if (codes < 0).any():
        codes = np.where(codes < 0, len(names), codes)
        names.append(MISSING)
    return codes, names


def _thread_map(function: Callable[[Any], Any], items: Iterable[Any]) -> list[Any]:
    """`map` on `worker_count()` threads (in order); plain `map` when there is one CPU or one item."""
    items = list(items)
    workers = min(worker_count(), len(items))
    if workers <= 1:
        return [function(item) for item in items]
    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(function, items))


def _label_text(value: Any) -> str:
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    return str(value)
