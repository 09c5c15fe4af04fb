"""Phase 1: turn a CSV into processed, leakage-free train/val/test splits plus a `schema.json`.

    python solutions/prepare_dataset.py --data-path data/train.csv --output-dir processed_data

The steps are small functions that return values (`read_csv`, `infer_columns`, `choose_target`,
`infer_task`, `split_indices`, `Preprocessor.fit/transform`); `prepare_dataset` orchestrates them and is
the only one that writes. Bad input raises `DataError` naming the file, column or row and the fix.
"""
from __future__ import annotations

import codecs
import csv
import difflib
import hashlib
import json
import math
import os
import queue
import shutil
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline import __version__, fileio
from pipeline.errors import DataError

SCHEMA_VERSION = 1
PRODUCER = "pipeline.prepare_dataset"
SPLITS = ("train", "val", "test")
MAX_CATEGORIES = 50  # one-hot columns per categorical feature; rarer categories encode as all zeros
CLASSIFICATION_MAX_INT_CLASSES = 20


# ----------------------------------------------------------------------------------------------- reading
@dataclass(frozen=True)
class CsvFile:
    frame: pd.DataFrame
    path: Path
    encoding: str
    delimiter: str
    digest: Future = field(repr=False, compare=False)  # the file's sha256, computed in the background

    @property
    def sha256(self) -> str:
        return self.digest.result()


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


def _check_head(path: Path) -> bytes:
    """The first 4 KiB, refusing an empty or binary file before any parsing."""
    with open(path, "rb") as handle:
        head = handle.read(4096)
    if not head:
        raise DataError(f"{path}: the file is empty; point --data-path at a CSV with a header and rows")
    if b"\x00" in head:
        raise DataError(f"{path}: this looks like a binary file (NUL bytes), not a CSV text file; "
                        "export the data as CSV first")
    return head


def _effective_encoding(encoding: str, head: bytes) -> str:
    """UTF-8 with a byte-order mark reads as utf-8-sig, so the BOM does not end up in the first column name."""
    is_utf8 = encoding.lower().replace("_", "-") in ("utf-8", "utf8")
    return "utf-8-sig" if is_utf8 and head.startswith(codecs.BOM_UTF8) else encoding


def _scan_file(path: Path, encoding: str) -> str:
    """One pass over the bytes: their sha256, and proof that the text decodes (strictly), or a DataError naming
    the first bad line (pandas' own message for undecodable bytes names no line).

    Pure-ASCII stretches are valid UTF-8 by definition, and `bytes.isascii` checks them ~6x faster than decoding;
    one reused buffer means no new memory per chunk."""
    utf8 = codecs.lookup(encoding).name in ("utf-8", "utf-8-sig")
    decoder = codecs.getincrementaldecoder(encoding)(errors="strict")
    digest = hashlib.sha256()
    offset = 0
    buffer = bytearray(1 << 20)
    with open(path, "rb", buffering=0) as handle:
        while size := handle.readinto(buffer):
            chunk = buffer if size == len(buffer) else buffer[:size]
            digest.update(chunk)
            if not (utf8 and chunk.isascii() and not decoder.getstate()[0]):
                try:
                    decoder.decode(chunk)
                except UnicodeDecodeError as exc:
                    line = _line_of_offset(path, offset + exc.start)
                    raise DataError(
                        f"{path}: line {line} is not valid {encoding} (byte 0x{chunk[exc.start]:02x}); re-save the "
                        "file as UTF-8, or pass its encoding, e.g. --encoding latin-1") from None
            offset += size
    try:
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        raise DataError(f"{path}: the file ends inside a multi-byte {encoding} character (truncated?); re-save "
                        "it as UTF-8, or pass its encoding, e.g. --encoding latin-1") from None
    return digest.hexdigest()


def _line_of_offset(path: Path, offset: int) -> int:
    with open(path, "rb") as handle:
        return handle.read(offset).count(b"\n") + 1


def _guess_delimiter(header: str, delimiter: str) -> None:
    if delimiter in header:
        return
    for other, name in ((";", "semicolon"), ("\t", "tab"), ("|", "pipe")):
        if header.count(other) >= 1:
            shown = "\\t" if other == "\t" else other
            raise DataError(f"the header has no '{delimiter}' but {header.count(other)} {name}(s): the file looks "
                            f"{name}-separated; pass --delimiter '{shown}'")


def read_csv(path: Path | str, *, encoding: str = "utf-8", delimiter: str = ",", keep_dtype: str | None = None,
             chunk_rows: int = 250_000) -> CsvFile:
    """Read a CSV after checking encoding and delimiter; header names are stripped.

    Measured on 1M rows x 34 columns (2 cores, both engines on both): pandas' C engine (which parses a big file
    on several threads) took 0.8-1.3 s, the pyarrow engine was no faster and peaked at 4.6x the file's size in
    memory. So: the C engine, with float columns parsed as float32 (the features end as float32 anyway; half the
    memory) except `keep_dtype` (the target). pandas decodes strictly, so a parse that succeeds has proven the
    encoding; when it fails, the bytes are scanned first so that an encoding problem is reported with its line.
    The sha256 is computed after the parse, in the background (`CsvFile.sha256` waits for it): it then overlaps
    the lighter work that follows instead of taking a core from the parser's threads.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file; check --data-path")
    try:
        codecs.lookup(encoding)
    except LookupError:
        raise DataError(f"--encoding {encoding!r} is not an encoding Python knows; try utf-8 or latin-1") from None
    head = _check_head(path)
    used_encoding = _effective_encoding(encoding, head)
    header = head.decode(used_encoding, errors="replace").lstrip("\ufeff").splitlines()[0] if head.strip() else ""
    try:
        _guess_delimiter(header, delimiter)
        frame = _read_chunks(path, used_encoding, delimiter, keep_dtype, chunk_rows)
    except DataError as exc:
        _scan_file(path, encoding)  # an encoding problem explains a parse problem: it raises first
        raise DataError(f"{path}: {exc}") from None
    frame.columns = [str(c).strip() for c in frame.columns]
    if frame.empty:
        raise DataError(f"{path}: the file has a header but no data rows; add rows below the header")
    duplicated = frame.columns[frame.columns.duplicated()].tolist()
    if duplicated:
        raise DataError(f"{path}: column name(s) {duplicated} appear more than once; rename them")
    return CsvFile(frame=frame, path=path, encoding=used_encoding, delimiter=delimiter,
                   digest=_in_background(_scan_file, path, encoding))


def _read_chunks(path: Path, encoding: str, delimiter: str, keep_dtype: str | None, chunk_rows: int) -> pd.DataFrame:
    """Parse float columns straight to float32 (learned from the first rows: half the memory of float64).

    If a later row breaks that guess (text in a numeric column), parse again in chunks without it, so the
    column checks can name the offending rows."""
    try:
        sample = pd.read_csv(path, encoding=encoding, sep=delimiter, nrows=10_000)
        floats = {c: np.float32 for c in sample.columns if sample[c].dtype == np.float64 and str(c).strip() != keep_dtype}
        if len(sample) < 10_000:
            return _downcast(sample, keep_dtype)
        return pd.read_csv(path, encoding=encoding, sep=delimiter, dtype=floats)
    except pd.errors.EmptyDataError:
        raise DataError("the file has no header line; add a header row naming the columns") from None
    except (pd.errors.ParserError, ValueError, UnicodeDecodeError):
        pass  # fall through to the careful path, which reports what is wrong and where
    try:
        reader = pd.read_csv(path, encoding=encoding, sep=delimiter, chunksize=chunk_rows, skipinitialspace=False)
        chunks = [_downcast(chunk, keep_dtype) for chunk in reader]
    except pd.errors.EmptyDataError:
        raise DataError("the file has no header line; add a header row naming the columns") from None
    except (pd.errors.ParserError, ValueError, UnicodeDecodeError) as exc:
        raise DataError(_describe_parse_error(path, encoding, delimiter, exc)) from None
    if len(chunks) == 1:
        return chunks[0]
    return pd.concat(chunks, ignore_index=True)


def _downcast(frame: pd.DataFrame, keep: str | None) -> pd.DataFrame:
    for column in frame.columns:
        if frame[column].dtype == np.float64 and str(column).strip() != keep:
            frame[column] = frame[column].astype(np.float32)
    return frame


def _describe_parse_error(path: Path, encoding: str, delimiter: str, exc: Exception) -> str:
    """The parser says what went wrong but not where; find the first row with the wrong field count."""
    with open(path, encoding=encoding, newline="", errors="replace") as handle:
        reader = csv.reader(handle, delimiter=delimiter)
        width = len(next(reader, []))
        for row in reader:
            if row and len(row) != width:
                return (f"line {reader.line_num} has {len(row)} fields but the header has {width}; fix that row "
                        "(quote fields that contain the delimiter)")
    return f"cannot be parsed as CSV ({str(exc).splitlines()[0]}); check it opens in a spreadsheet"


# ------------------------------------------------------------------------------------- column inference
@dataclass(frozen=True)
class ColumnPlan:
    numeric: list[str]
    categorical: list[str]
    dropped: list[dict[str, str]]  # [{"name", "reason"}]
    columns: Columns | None = field(default=None, repr=False, compare=False)  # the kept ones, converted


def _rows(mask: np.ndarray, limit: int = 3) -> str:
    """1-based data-row numbers (the header is not a row) of the first few True entries."""
    found = np.flatnonzero(mask)[:limit] + 1
    return ", ".join(str(int(r)) for r in found)


def check_numeric(frame: pd.DataFrame, column: str, *, source: Path | str) -> np.ndarray | None:
    """The column as a float array if it is numeric; raise if it is numeric with garbage; None if it is text."""
    series = frame[column]
    if pd.api.types.is_bool_dtype(series):
        return None
    if pd.api.types.is_numeric_dtype(series):
        return _finite_values(series, column, source)[0]
    codes, uniques = pd.factorize(series)
    _refuse_numbers_with_garbage(series, codes, uniques, column, source)
    return None


def _finite_values(series: pd.Series, column: str, source: Path | str) -> tuple[np.ndarray, float, float]:
    """A numeric column's values as floats (NaN = missing) and their range (NaN, NaN if all are missing),
    refusing infinities with their rows."""
    values = _numeric_values(series)
    if not values.size:
        return values, math.nan, math.nan
    low, high = float(np.fmin.reduce(values)), float(np.fmax.reduce(values))  # NaN-skipping, no temporaries
    if math.isinf(low) or math.isinf(high):
        infinite = np.isinf(values)
        raise DataError(f"{source}: column '{column}' has {int(infinite.sum())} infinite value(s) (rows "
                        f"{_rows(infinite)}); replace them with real numbers or leave the cells empty")
    return values, low, high


def _refuse_numbers_with_garbage(series: pd.Series, codes: np.ndarray, uniques: Any, column: str,
                                 source: Path | str) -> None:
    """A text column whose values are mostly numbers is a numeric column with bad cells: name them.

    Judged on the distinct values (factorize codes), not row by row: fast on big files."""
    parsed = pd.to_numeric(pd.Series(np.asarray(uniques, dtype=object)), errors="coerce").to_numpy()
    numeric_unique = ~np.isnan(parsed.astype(np.float64))
    if not numeric_unique.any():
        return  # no value is a number: plainly text
    present = codes >= 0
    numeric_rows = present & numeric_unique[np.maximum(codes, 0)]
    n_present = int(present.sum())
    if n_present == 0 or numeric_rows.sum() < 0.5 * n_present:
        return  # genuinely text
    garbage = present & ~numeric_rows
    raise DataError(
        f"{source}: column '{column}' is numeric but has {int(garbage.sum())} non-numeric value(s) "
        f"(rows {_rows(garbage)}, e.g. {series[garbage].iloc[0]!r}); fix or blank those cells")


def infer_columns(frame: pd.DataFrame, target: str, *, source: Path | str = "data") -> ColumnPlan:
    """Classify every feature column as numeric, categorical, or dropped (with the reason printed later).

    Columns are inspected on worker threads; the plan carries the kept ones converted (`ColumnPlan.columns`),
    so nothing is parsed or factorized twice."""
    features = [column for column in frame.columns if column != target]
    series = [frame[column] for column in features]  # taken here: the threads only read NumPy/Arrow data
    verdicts = _thread_map(lambda item: _inspect_column(item[0], item[1], source), list(zip(series, features)))
    numeric: dict[str, np.ndarray] = {}
    categorical: dict[str, tuple[np.ndarray, list[str]]] = {}
    dropped = []
    for column, (kind, detail) in zip(features, verdicts):
        if kind == "numeric":
            numeric[column] = detail
        elif kind == "categorical":
            categorical[column] = detail
        else:
            dropped.append({"name": column, "reason": detail})
    if not numeric and not categorical:
        raise DataError(f"{source}: no usable feature columns besides the target '{target}' "
                        f"(dropped: {', '.join(d['name'] + ' - ' + d['reason'] for d in dropped) or 'none'})")
    return ColumnPlan(numeric=list(numeric), categorical=list(categorical), dropped=dropped,
                      columns=Columns(numeric=numeric, categorical=categorical, n_rows=len(frame)))


def _inspect_column(series: pd.Series, column: str, source: Path | str) -> tuple[str, Any]:
    """("numeric", values) | ("categorical", (codes, names)) | ("dropped", reason)."""
    n_rows = len(series)
    if pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series):
        values, low, high = _finite_values(series, column, source)
        if math.isnan(low):
            return "dropped", "all values missing"
        if low == high:
            return "dropped", "constant (one distinct value)"
        if n_rows >= 20 and _is_id_like(values):
            return "dropped", "ID-like (a different value in every row)"
        return "numeric", values
    codes, uniques = pd.factorize(series)
    if not len(uniques):
        return "dropped", "all values missing"
    if not pd.api.types.is_bool_dtype(series):
        _refuse_numbers_with_garbage(series, codes, uniques, column, source)
    if len(uniques) == 1:
        return "dropped", "constant (one distinct value)"
    if n_rows >= 20 and len(uniques) == n_rows:
        return "dropped", "ID-like (a different value in every row)"
    return "categorical", _named_codes(codes, uniques)


def _is_id_like(values: np.ndarray) -> bool:
    """Whole numbers, none missing, all different: a row number or key, not a measurement."""
    head = values[:1000]
    if np.isnan(head).any() or np.mod(head, 1).any():  # cheap early exit for most columns
        return False
    if np.isnan(values).any() or np.mod(values, 1).any():
        return False
    return len(np.unique(values)) == len(values)


def choose_target(columns: list[str], requested: str | None, *, source: Path | str = "data") -> str:
    """`--target`, else a column named `target` or `label`, else the last column."""
    if requested is not None:
        if requested in columns:
            return requested
        close = difflib.get_close_matches(requested, columns, n=1, cutoff=0.5)
        hint = f"did you mean '{close[0]}'? " if close else ""
        raise DataError(f"{source}: target column '{requested}' not found; {hint}columns are: {', '.join(columns)}")
    for name in ("target", "label"):
        if name in columns:
            return name
    return columns[-1]


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
    is_integer = bool(np.all(np.mod(as_float, 1) == 0))
    if is_integer and values.nunique() <= CLASSIFICATION_MAX_INT_CLASSES:
        return "classification"
    return "regression"


# ----------------------------------------------------------------------------------------------- splits
def split_indices(labels: np.ndarray | None, groups: np.ndarray, *, test_split: float, val_split: float,
                  seed: int) -> dict[str, np.ndarray]:
    """Seeded, disjoint split of rows; stratified by `labels` when given; rows sharing a group stay together.

    `groups` gives each row a group id (identical rows share one), so exact duplicates never straddle splits.
    Allocation per class uses largest remainders, so tiny classes still land in train first.
    """
    rng = np.random.default_rng(seed)
    inverse = _group_ids(np.asarray(groups))  # None: every row is its own group
    if inverse is None:
        group_label = labels if labels is not None else np.zeros(len(groups), dtype=np.int64)
    else:  # where the running maximum id rises, a group appears for the first time
        first_row = np.flatnonzero(np.diff(np.maximum.accumulate(inverse), prepend=-1) > 0)
        group_label = labels[first_row] if labels is not None else np.zeros(len(first_row), dtype=np.int64)
    assignment = np.empty(len(group_label), dtype=np.int8)  # 0 train, 1 val, 2 test
    small_ints = (group_label.dtype.kind in "iu" and len(group_label) and group_label.min() >= 0
                  and group_label.max() < 1 << 16)
    # class codes 0..k-1: counting them beats np.unique's hash table on a million rows
    for label in (np.flatnonzero(np.bincount(group_label)) if small_ints else np.unique(group_label)):
        members = rng.permutation(np.flatnonzero(group_label == label))
        n = len(members)
        n_test = int(math.floor(n * test_split + 0.5)) if n >= 3 else 0
        n_val = int(math.floor(n * val_split + 0.5)) if n - n_test >= 2 else 0
        n_test = min(n_test, n - 1)
        n_val = min(n_val, n - 1 - n_test)
        assignment[members[:n_test]] = 2
        assignment[members[n_test:n_test + n_val]] = 1
        assignment[members[n_test + n_val:]] = 0
    row_assignment = assignment if inverse is None else assignment[inverse]
    return {name: np.flatnonzero(row_assignment == code) for code, name in enumerate(SPLITS)}


def row_groups(table: Columns, labels: np.ndarray) -> np.ndarray:
    """A 64-bit key per row over every feature column and the label: identical rows get identical keys.

    A polynomial hash (key * M + value, wrapping at 2**64) over each column's bits or category codes: three
    cheap passes per column, no copy of the frame. Rows differing in one column can never share a key (M is odd,
    so the difference cannot vanish modulo 2**64); for other distinct rows it is vanishingly unlikely, and would
    only keep the two in the same split. Identical rows always share theirs, which is what disjoint splits need."""
    key = np.zeros(table.n_rows, dtype=np.uint64)
    columns = [np.asarray(c) for c in (*table.numeric.values(), *(c for c, _ in table.categorical.values()), labels)]

    def fill(start: int) -> None:  # 65,536 rows at a time: the slice of `key` stays in the CPU cache
        part = key[start:start + 65_536]
        for values in columns:
            part *= _HASH_MULTIPLIER
            part += _as_uint64(values[start:start + 65_536])

    _thread_map(fill, range(0, table.n_rows, 65_536))
    return key


_HASH_MULTIPLIER = np.uint64(0x9E3779B97F4A7C15)  # odd, so multiplying by it loses no information


def _as_uint64(values: np.ndarray) -> np.ndarray:
    """The values' bits as unsigned 64-bit integers (equal values, equal bits; NaN is one bit pattern)."""
    if values.dtype.itemsize == 8:
        return values.view(np.uint64)
    unsigned = {1: np.uint8, 2: np.uint16, 4: np.uint32}[values.dtype.itemsize]
    return values.view(unsigned).astype(np.uint64)


def _group_ids(groups: np.ndarray) -> np.ndarray | None:
    """A group id per row, numbered in order of first appearance (so the split does not depend on how the
    group keys happen to sort); None when every row is distinct, the usual case, which a hash-table uniqueness
    check proves in ~40 ms per million rows, faster than numbering them (factorize) or sorting them."""
    if pd.Index(groups).is_unique:
        return None
    return pd.factorize(groups, use_na_sentinel=False)[0]


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


class Preprocessor:
    """Impute, scale and one-hot encode, scikit-learn style: `fit` on train sets attributes ending in `_`,
    `transform` is pure and returns a float32, C-contiguous (rows, features) array.

    Both accept a DataFrame or, faster when called repeatedly on a big table, its `Columns`.
    """

    def __init__(self, numeric: list[str], categorical: list[str], max_categories: int = MAX_CATEGORIES):
        self.numeric = list(numeric)
        self.categorical = list(categorical)
        self.max_categories = max_categories

    def fit(self, frame: pd.DataFrame | Columns, rows: np.ndarray | None = None) -> "Preprocessor":
        """Learn imputation, scaling and categories from `frame` (only `rows` of it, when given)."""
        table = Columns.of(frame, self.numeric, self.categorical)
        stats = _thread_map(lambda column: _numeric_stats(table.numeric[column], rows), self.numeric)
        self.medians_ = {column: median for column, (median, _, _) in zip(self.numeric, stats)}
        self.means_ = {column: mean for column, (_, mean, _) in zip(self.numeric, stats)}
        self.stds_ = {column: std for column, (_, _, std) in zip(self.numeric, stats)}
        self.categories_: dict[str, list[str]] = {}
        for column in self.categorical:
            codes, names = table.categorical[column]
            counts = np.bincount(codes if rows is None else codes[rows], minlength=len(names))
            # most frequent first, ties broken by name so the encoding is reproducible
            ranked = sorted(((int(n), name) for n, name in zip(counts, names) if n > 0), key=lambda kv: (-kv[0], kv[1]))
            self.categories_[column] = [name for _, name in ranked[: self.max_categories]]
        return self

    @property
    def feature_names_(self) -> list[str]:
        names = list(self.numeric)
        for column in self.categorical:
            names += [f"{column}={value}" for value in self.categories_[column]]
        return names

    def transform(self, frame: pd.DataFrame | Columns, rows: np.ndarray | None = None, *,
                  out: np.ndarray | None = None) -> np.ndarray:
        """Features of `frame` (only `rows`, in that order, when given) as float32 (rows, features), C order.

        `out`, when given, receives them (its old contents are overwritten) and is returned."""
        table = Columns.of(frame, self.numeric, self.categorical)
        rows = None if rows is None else np.asarray(rows)
        n = table.n_rows if rows is None else len(rows)
        if n and rows is not None and (rows.min() < 0 or rows.max() >= table.n_rows):
            raise IndexError(f"rows must lie in [0, {table.n_rows}): the table has {table.n_rows} rows")
        width = len(self.feature_names_)
        if out is None:
            out = np.zeros((n, width), dtype=np.float32)  # (rows, processed features)
        else:
            if out.shape != (n, width) or out.dtype != np.float32 or not out.flags["C_CONTIGUOUS"]:
                raise ValueError(f"out must be a C-contiguous float32 array of shape {(n, width)}")
            out[:, len(self.numeric):] = 0
        # Numeric features, a block of rows at a time: each column is gathered into one contiguous row of `block`
        # (features x rows), the block is imputed and scaled in three whole-block operations, then transposed into
        # `out` in one copy. Writing columns of a row-major array directly is strided and ~3x slower. Blocks of up
        # to 32,768 rows give each NumPy call enough work that threads transforming chunks run in parallel instead
        # of queueing for the GIL. The block's rows are padded by 16 floats: with a power-of-two row length, the
        # values the transposing copy reads for one output row all map to the same L1 cache set and evict each
        # other (measured: the copy took 6x longer).
        k, step = len(self.numeric), 32768
        values = [table.numeric[c] for c in self.numeric]
        wide = [v.dtype != np.float32 for v in values]  # float64 (integer) columns: centred in float64 first
        means = np.array([0.0 if w else self.means_[c] for c, w in zip(self.numeric, wide)], dtype=np.float32)
        stds = np.array([self.stds_[c] for c in self.numeric], dtype=np.float32)
        fills = (np.array([self.medians_[c] for c in self.numeric], dtype=np.float32)  # a missing value's result
                 - np.array([self.means_[c] for c in self.numeric], dtype=np.float32)) / stds
        block = np.empty((k, min(step, n) + 16), dtype=np.float32)
        for start in range(0, n if k else 0, step):
            stop = min(n, start + step)
            take = rows[start:stop] if rows is not None else np.arange(start, stop)
            part = block[:, : stop - start]
            for j, column in enumerate(self.numeric):
                if wide[j]:
                    gathered = values[j][take]
                    np.subtract(np.where(np.isnan(gathered), self.medians_[column], gathered), self.means_[column],
                                out=part[j], casting="unsafe")
                else:  # rows were checked above; "wrap" skips a per-element bounds check (~35% faster)
                    np.take(values[j], take, out=part[j], mode="wrap")
            part -= means[:, None]
            part /= stds[:, None]
            np.copyto(part, np.broadcast_to(fills[:, None], part.shape), where=np.isnan(part))
            out[start:stop, :k] = part.T
        # Categorical features: one 1.0 per row and feature, scattered through the flat buffer (a 1-D scatter is
        # ~1.5x faster than out[rows, columns] = 1).
        offset, row_starts, flat = k, np.arange(n, dtype=np.int64) * width, out.reshape(-1)
        for column in self.categorical:
            codes, names = table.categorical[column]
            position = {name: i for i, name in enumerate(self.categories_[column])}
            lookup = np.array([position.get(name, -1) for name in names], dtype=np.int64)
            index = lookup[codes if rows is None else codes[rows]]  # position per row; -1 unseen or rare: all zero
            targets = row_starts + index
            targets += offset
            flat[targets if lookup.min(initial=0) >= 0 else targets[index >= 0]] = 1.0
            offset += len(self.categories_[column])
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"numeric": {c: {"median": self.medians_[c], "mean": self.means_[c], "std": self.stds_[c]}
                            for c in self.numeric},
                "categorical": {c: {"categories": self.categories_[c]} for c in self.categorical},
                "missing_category": MISSING}

    @classmethod
    def from_dict(cls, params: dict[str, Any]) -> "Preprocessor":
        self = cls(list(params["numeric"]), list(params["categorical"]))
        self.medians_ = {c: v["median"] for c, v in params["numeric"].items()}
        self.means_ = {c: v["mean"] for c, v in params["numeric"].items()}
        self.stds_ = {c: v["std"] for c, v in params["numeric"].items()}
        self.categories_ = {c: list(v["categories"]) for c, v in params["categorical"].items()}
        return self


def _numeric_stats(values: np.ndarray, rows: np.ndarray | None) -> tuple[float, float, float]:
    """(median, mean, std) of a column after imputing its median, in float64, without building the imputed copy:
    the missing cells all equal the median, so they enter the mean and variance as one term."""
    part = values.copy() if rows is None else values[rows]  # a scratch copy: the median reorders it
    missing = np.isnan(part)
    present = part[~missing] if missing.any() else part
    n, n_present = len(part), len(present)
    if n_present == 0:
        return 0.0, 0.0, 1.0
    median = _median(present)
    n_missing = n - n_present
    present_mean = float(np.mean(present, dtype=np.float64))
    mean = (present_mean * n_present + median * n_missing) / n
    squares = _sum_of_squares(present, present_mean) + n_present * (present_mean - mean) ** 2
    std = math.sqrt((squares + n_missing * (median - mean) ** 2) / n)
    return median, mean, std if std > 0 else 1.0  # a constant-in-train column scales to 0, not NaN


def _sum_of_squares(values: np.ndarray, centre: float, step: int = 65_536) -> float:
    """Sum of (value - centre)**2 in float64, a cache-sized slice at a time: ~4x faster than np.var, whose
    float64 copy of the whole column is the expensive part."""
    total = 0.0
    for start in range(0, len(values), step):
        deviations = values[start:start + step].astype(np.float64)
        deviations -= centre
        np.square(deviations, out=deviations)
        total += float(deviations.sum())
    return total


def _median(values: np.ndarray) -> float:
    """Exact median of `values` (no NaN; the caller's scratch copy, reordered in place), averaged in float64.

    On big columns a sorted random sample brackets the middle ranks, one pass counts the values below the
    bracket and keeps those inside it (a few hundredths of the column), and only those are partitioned:
    about 3x faster than partitioning the whole column. If the bracket misses (it should not), it falls back."""
    n = len(values)
    ranks = [n // 2] if n % 2 else [n // 2 - 1, n // 2]
    if n >= 65_536:
        sample = np.sort(values[np.random.default_rng(n).integers(0, n, 8192)])
        low, high = sample[4096 - 256], sample[4096 + 256]  # the middle rank +- 11 standard deviations
        below = int(np.count_nonzero(values < low))
        inside = values[(values >= low) & (values <= high)]
        if below <= ranks[0] and ranks[-1] < below + len(inside):
            values, ranks = inside, [r - below for r in ranks]
    values.partition(ranks)
    return sum(float(values[r]) for r in ranks) / len(ranks)


def _thread_map(function: Callable[[Any], Any], items: Iterable[Any]) -> list[Any]:
    """`map` on `worker_count()` threads (in order); plain `map` when there is one CPU or one item."""
    items = list(items)
    workers = min(worker_count(), len(items))
    if workers <= 1:
        return [function(item) for item in items]
    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(function, items))


# --------------------------------------------------------------------------------------------- targets
def encode_target(values: pd.Series, task: str, *, source: Path | str, target: str
                  ) -> tuple[np.ndarray, list[str] | None]:
    if task == "regression":
        numeric = pd.to_numeric(values, errors="coerce")
        bad = numeric.isna().to_numpy()
        if bad.any():
            raise DataError(f"{source}: target '{target}' has {int(bad.sum())} non-numeric value(s) (rows "
                            f"{_rows(bad)}) but the task is regression; fix them or use --task classification")
        return numeric.to_numpy(dtype=np.float32), None
    codes, uniques = pd.factorize(values)
    names = [_label_text(u) for u in uniques]
    classes = sorted(set(names), key=_class_sort_key)
    position = {name: i for i, name in enumerate(classes)}
    return np.array([position[name] for name in names], dtype=np.int64)[codes], classes


def _label_text(value: Any) -> str:
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    return str(value)


def _class_sort_key(name: str) -> tuple[int, float, str]:
    try:
        return (0, float(name), name)
    except ValueError:
        return (1, 0.0, name)


# ------------------------------------------------------------------------------------------ orchestration
@dataclass
class PrepareResult:
    output_dir: Path
    schema: dict[str, Any]
    notes: list[str] = field(default_factory=list)


def prepare_dataset(data_path: Path | str, output_dir: Path | str, *, test_split: float = 0.2,
                    val_split: float = 0.1, target: str | None = None, task: str = "auto", seed: int = 42,
                    encoding: str = "utf-8", delimiter: str = ",", notes: list[str] | None = None
                    ) -> PrepareResult:
    """Read, validate, split and preprocess a CSV; write `output_dir` complete or not at all."""
    notes = [] if notes is None else notes
    output_dir = Path(output_dir)
    _check_fractions(test_split, val_split)
    _check_replaceable(output_dir)
    header = _read_header(data_path, encoding, delimiter)
    target = choose_target(header, target, source=data_path) if header else target
    csv_file = read_csv(data_path, encoding=encoding, delimiter=delimiter, keep_dtype=target)
    source = csv_file.path
    frame = csv_file.frame
    target = choose_target(list(frame.columns), target, source=source)
    notes.append(f"target: '{target}'" + ("" if target == frame.columns[-1] else " (by name)"))

    missing_target = frame[target].isna().to_numpy()
    if missing_target.all():
        raise DataError(f"{source}: target column '{target}' is empty in every row; choose another with --target")
    if missing_target.any():
        notes.append(f"dropped {int(missing_target.sum())} row(s) with a missing target (rows {_rows(missing_target)})")
        frame = frame.loc[~missing_target].reset_index(drop=True)

    resolved_task = infer_task(frame[target], task)
    notes.append(f"task: {resolved_task}" + (" (auto; override with --task)" if task == "auto" else ""))
    if resolved_task == "regression" and pd.api.types.is_numeric_dtype(frame[target]):
        check_numeric(frame, target, source=source)
    labels = frame[target]  # encoded on a thread of its own while the feature columns are inspected
    encoded = _in_background(lambda: encode_target(labels, resolved_task, source=source, target=target))
    plan = infer_columns(frame, target, source=source)
    for item in plan.dropped:
        notes.append(f"dropped column '{item['name']}': {item['reason']}")

    y_all, classes = encoded.result()
    if classes is not None:
        _check_classes(y_all, classes, source=source, target=target)
    table = plan.columns
    splits = split_indices(y_all if classes is not None else None, row_groups(table, y_all),
                           test_split=test_split, val_split=val_split, seed=seed)
    _check_split_sizes(splits, len(frame), test_split, val_split, source=source)

    preprocessor = Preprocessor(plan.numeric, plan.categorical).fit(table, splits["train"])

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
                     "processed": preprocessor.feature_names_},
        "preprocessing": preprocessor.to_dict(),
        "splits": {"test_split": test_split, "val_split": val_split, "seed": seed,
                   "stratified": classes is not None, "duplicates_grouped": True},
        "rows": {name: int(len(idx)) for name, idx in splits.items()},
        "class_counts": ({name: np.bincount(y_all[idx], minlength=len(classes)).tolist() for name, idx in splits.items()}
                         if classes is not None else None),
        "files": {name: {"X": f"{name}_X.npy", "y": f"{name}_y.npy"} for name in SPLITS},
    }
    schema["data_sha256"] = _fingerprint(schema)
    _write_output(output_dir, schema, lambda staging: _save_splits(staging, preprocessor, table, splits, y_all))
    return PrepareResult(output_dir=output_dir, schema=schema, notes=notes)


def _check_fractions(test_split: float, val_split: float) -> None:
    if not (0 < test_split < 1) or not (0 <= val_split < 1) or test_split + val_split >= 1:
        raise DataError(f"--test-split {test_split} and --val-split {val_split} must each be in [0, 1) "
                        "and leave rows for training (e.g. 0.2 and 0.1)")


def _check_classes(y: np.ndarray, classes: list[str], *, source: Path, target: str) -> None:
    counts = np.bincount(y, minlength=len(classes))
    if len(classes) < 2:
        raise DataError(f"{source}: target '{target}' has only one class ({classes[0]!r}); classification needs "
                        "at least two, or use --task regression for a numeric target")
    single = [classes[i] for i in np.flatnonzero(counts == 1)]
    if single:
        raise DataError(f"{source}: class(es) {single} of target '{target}' have a single row, too few to "
                        "stratify train/val/test; add rows for them or remove those rows")


def _check_split_sizes(splits: dict[str, np.ndarray], n_rows: int, test_split: float, val_split: float,
                       *, source: Path) -> None:
    empty = [name for name in SPLITS if len(splits[name]) == 0 and not (name == "val" and val_split == 0)]
    if empty:
        raise DataError(f"{source}: {n_rows} usable row(s) are too few to fill the {'/'.join(empty)} split(s) "
                        f"(test {test_split}, val {val_split}); add rows or lower the split fractions")


def _check_replaceable(output_dir: Path) -> None:
    if not output_dir.exists():
        return
    schema = fileio.read_json(output_dir / "schema.json")
    if not output_dir.is_dir() or not isinstance(schema, dict) or schema.get("producer") != PRODUCER:
        raise DataError(f"{output_dir}: exists and is not an earlier output of prepare_dataset; choose another "
                        "--output-dir (nothing was written)")


def _read_header(path: Path | str, encoding: str, delimiter: str) -> list[str]:
    """Column names from the first line (to know the target before parsing); [] if unreadable."""
    try:
        with open(path, encoding=_effective_encoding(encoding, _check_head(Path(path))), newline="",
                  errors="replace") as handle:
            return [c.strip() for c in next(csv.reader(handle, delimiter=delimiter), [])]
    except (OSError, LookupError, csv.Error, DataError):
        return []


def _save_splits(directory: Path, preprocessor: Preprocessor, table: Columns, splits: dict[str, np.ndarray],
                 labels: np.ndarray, chunk_bytes: int = 8 << 20, write_bytes: int = 1 << 20) -> None:
    """Write each split's labels, and its features transformed chunk by chunk straight into `<split>_X.npy`.

    Worker threads transform chunks (NumPy releases the GIL) while this thread writes them in order, so memory
    holds a few chunks of ~`chunk_bytes`, never a whole split, and both cores stay busy on big files. Chunks
    are written in slices of ~`write_bytes`: on the benchmark machine, 8 MiB write() calls made the kernel
    spend up to 3x longer storing the same 348 MB (0.5-0.8 s vs 0.2 s) than 1-2 MiB ones, while chunks
    smaller than 8 MiB leave too little work between two threads' GIL hand-offs to run in parallel."""
    width = len(preprocessor.feature_names_)
    chunk_rows = max(1, chunk_bytes // (4 * max(width, 1)))
    slice_rows = max(1, write_bytes // (4 * max(width, 1)))
    spare: queue.SimpleQueue[np.ndarray] = queue.SimpleQueue()  # buffers written out, ready for reuse

    def transform(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        try:
            buffer = spare.get_nowait()
        except queue.Empty:
            buffer = np.empty((chunk_rows, width), dtype=np.float32)
        return buffer, preprocessor.transform(table, rows, out=buffer[: len(rows)])

    jobs = [(name, rows[start:start + chunk_rows]) for name, rows in splits.items()
            for start in range(0, len(rows), chunk_rows)]
    handles: dict[str, Any] = {}
    try:
        for name, rows in splits.items():
            np.save(directory / f"{name}_y.npy", labels[rows])
            handles[name] = open(directory / f"{name}_X.npy", "wb", buffering=0)
            np.lib.format.write_array_header_1_0(handles[name], {
                "descr": np.lib.format.dtype_to_descr(np.dtype(np.float32)), "fortran_order": False,
                "shape": (len(rows), width)})
        workers = worker_count()
        with ThreadPoolExecutor(workers) as pool:
            for (name, _), (buffer, features) in zip(jobs, _ordered_map(pool, transform, [r for _, r in jobs],
                                                                       ahead=workers + 1)):
                for start in range(0, len(features), slice_rows):
                    _write_all(handles[name], memoryview(features[start:start + slice_rows]).cast("B"))
                spare.put(buffer)
    finally:
        for handle in handles.values():
            handle.close()


def _write_all(handle: Any, data: memoryview) -> None:
    """Write every byte through an unbuffered file (one write() call, the GIL released; looped if short)."""
    while data:
        data = data[handle.write(data):]


def _ordered_map(pool: ThreadPoolExecutor, function: Callable[[Any], Any], items: list[Any], *,
                 ahead: int) -> Iterator[Any]:
    """`pool.map` with at most `ahead` results in flight (pool.map submits everything at once: all the memory)."""
    pending: deque[Future] = deque()
    for item in items:
        pending.append(pool.submit(function, item))
        if len(pending) > ahead:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()


def _write_output(output_dir: Path, schema: dict, write_files: Callable[[Path], None]) -> None:
    """Build the folder beside its final place, then rename it in: readers see all of it or none.

    `write_files(staging)` writes the split files into the staging folder."""
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = output_dir.with_name(f".{output_dir.name}.tmp-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        write_files(staging)
        fileio.atomic_write_json(staging / "schema.json", schema)
        fileio.fsync_dir(staging)
        if output_dir.exists():
            old = output_dir.with_name(f".{output_dir.name}.old-{os.getpid()}")
            os.replace(output_dir, old)
            os.replace(staging, output_dir)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(staging, output_dir)
        fileio.fsync_dir(output_dir.parent)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _fingerprint(schema: dict) -> str:
    """One hash for 'the same processed data': the source bytes and everything that shaped the splits
    (the transformation is deterministic, so the files follow from these)."""
    keyed = {k: schema[k] for k in ("source", "target", "task", "classes", "features", "preprocessing", "splits",
                                    "rows", "package_version")}
    keyed["source"] = {"sha256": schema["source"]["sha256"]}
    return hashlib.sha256(json.dumps(keyed, sort_keys=True).encode()).hexdigest()


# -------------------------------------------------------------------------------------------- loading
@dataclass(frozen=True)
class Dataset:
    """Processed splits as NumPy arrays (X float32 C-contiguous; y int64 classes or float32 targets)."""
    schema: dict[str, Any]
    arrays: dict[str, tuple[np.ndarray, np.ndarray]]

    @property
    def task(self) -> str:
        return self.schema["task"]

    @property
    def n_features(self) -> int:
        return len(self.schema["features"]["processed"])

    @property
    def n_outputs(self) -> int:
        return len(self.schema["classes"]) if self.task == "classification" else 1


def load_schema(data_dir: Path | str) -> dict[str, Any]:
    data_dir = Path(data_dir)
    path = data_dir / "schema.json"
    if not path.is_file():
        raise DataError(f"{data_dir}: no schema.json here; run solutions/prepare_dataset.py with "
                        f"--output-dir {data_dir} first")
    try:
        schema = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise DataError(f"{path}: not valid JSON ({exc}); re-run prepare_dataset.py") from None
    if schema.get("producer") != PRODUCER or schema.get("schema_version") != SCHEMA_VERSION:
        raise DataError(f"{path}: not a schema version {SCHEMA_VERSION} written by prepare_dataset.py; re-run it")
    return schema


def load_split(data_dir: Path | str, split: str, *, mmap: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """One split's (X, y): X float32 (rows, features) in C order, ready for `torch.from_numpy` (no copy)."""
    return load_processed(data_dir, mmap=mmap, splits=(split,)).arrays[split]


def load_processed(data_dir: Path | str, *, mmap: bool = False, splits: tuple[str, ...] = SPLITS) -> Dataset:
    """Load the processed splits; `mmap=True` maps them instead of reading (for data larger than memory)."""
    data_dir = Path(data_dir)
    schema = load_schema(data_dir)
    arrays = {}
    for name in splits:
        files = schema["files"][name]
        try:
            features = np.load(data_dir / files["X"], allow_pickle=False, mmap_mode="r" if mmap else None)
            labels = np.load(data_dir / files["y"], allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise DataError(f"{data_dir / files['X']}: cannot be read ({exc}); re-run prepare_dataset.py") from None
        if features.shape[0] != labels.shape[0] or features.shape[0] != schema["rows"][name]:
            raise DataError(f"{data_dir}: the {name} split's files disagree with schema.json on the row count; "
                            "re-run prepare_dataset.py")
        arrays[name] = (features, labels)
    return Dataset(schema=schema, arrays=arrays)


def load_raw_for_scoring(csv_path: Path | str, schema: dict[str, Any]) -> tuple[np.ndarray, pd.DataFrame]:
    """Apply a fitted schema's preprocessing to a new CSV (used by `predict`); the target may be absent."""
    csv_file = read_csv(csv_path, encoding="utf-8", delimiter=schema["source"].get("delimiter", ","))
    needed = schema["features"]["numeric"] + schema["features"]["categorical"]
    missing = [c for c in needed if c not in csv_file.frame.columns]
    if missing:
        raise DataError(f"{csv_path}: missing feature column(s) {missing} that the model was trained on")
    for column in schema["features"]["numeric"]:
        check_numeric(csv_file.frame, column, source=csv_path)
    preprocessor = Preprocessor.from_dict(schema["preprocessing"])
    return preprocessor.transform(csv_file.frame), csv_file.frame
