"""Phase 1: turn a CSV into processed, leakage-free train/val/test splits plus a `schema.json`.

    python solutions/prepare_dataset.py --data-path data/train.csv --output-dir processed_data

The steps are small functions that return values (`read_csv`, `infer_columns`, `choose_target`,
`infer_task`, `split_indices`, `Preprocessor.fit/transform`, `column_report`, `check_warnings`);
`prepare_dataset` orchestrates them and is the only one that writes. Every column's role and the reason for it
(the column report) and warnings with numbers (leaks, rare classes, a doubtful target) go into schema.json;
the rules are listed in data/README.md. Bad input raises `DataError` naming the file, column or row and the fix.
"""
from __future__ import annotations

import codecs
import csv
import difflib
import errno
import hashlib
import io
import json
import math
import os
import queue
import re
import shutil
import secrets
import threading
import warnings
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pandas.tseries.api import guess_datetime_format

from pipeline import __version__, fileio
from pipeline.errors import DataError

SCHEMA_VERSION = 1
PRODUCER = "pipeline.prepare_dataset"
SPLITS = ("train", "val", "test")
MAX_CATEGORIES = 50  # default --max-levels: one-hot columns per categorical feature; rarer ones encode as all zeros
CLASSIFICATION_MAX_INT_CLASSES = 20
FLOAT32_MAX = float(np.finfo(np.float32).max)  # the processed arrays are float32: larger values would become inf


def some(names: Iterable[Any], limit: int = 10, *, quote: bool = True) -> str:
    """A few names for a message, and how many more: "'a', 'b', 'c' and 497 more". Messages that listed every
    class or column ran to megabytes on one line for an ID-like target; each name is cut to 60 characters too."""
    names = list(names)
    shown = [_clip(str(n)) for n in names[:limit]]
    text = ", ".join(repr(n) if quote else n for n in shown)
    return text + (f" and {len(names) - limit:,} more" if len(names) > limit else "")


def _clip(text: str, width: int = 60) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


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


def _check_head(path: Path, encoding: str = "utf-8") -> bytes:
    """The first 4 KiB, refusing an empty or binary file before any parsing.

    UTF-16 and UTF-32 text is full of NUL bytes; with such an `encoding` they are expected, and without it a
    byte-order mark or NULs in every other byte say which encoding to pass instead of "binary"."""
    with open(path, "rb") as handle:
        head = handle.read(4096)
    if not head:
        raise DataError(f"{path}: the file is empty; point --data-path at a CSV with a header and rows")
    wide = codecs.lookup(encoding).name.startswith(("utf-16", "utf-32"))
    if b"\x00" in head and not wide:
        guess = _wide_encoding(head)
        if guess:
            raise DataError(f"{path}: the file is {guess} text, not {encoding}; pass --encoding {guess.lower()}")
        raise DataError(f"{path}: this looks like a binary file (NUL bytes), not a CSV text file; "
                        "export the data as CSV first")
    return head


def _wide_encoding(head: bytes) -> str | None:
    """'UTF-16' or 'UTF-32' when the bytes look like that (a byte-order mark, or ASCII text with NUL bytes between)."""
    if head.startswith((codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE)):
        return "UTF-32"
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "UTF-16"
    even, odd = head[0::2], head[1::2]
    if len(head) >= 8 and (even.count(0) > 0.9 * len(even) or odd.count(0) > 0.9 * len(odd)):
        return "UTF-16"
    return None


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
                except UnicodeError as exc:  # e.g. UTF-16 without a byte-order mark: no position to name
                    raise DataError(f"{path}: is not {encoding} text ({exc}); pass the file's encoding with "
                                    "--encoding, e.g. utf-8, latin-1 or utf-16-le") from None
            offset += size
    try:
        decoder.decode(b"", final=True)
    except UnicodeError:
        raise DataError(f"{path}: the file ends inside a multi-byte {encoding} character (truncated?); re-save "
                        "it as UTF-8, or pass its encoding, e.g. --encoding latin-1") from None
    return digest.hexdigest()


def _line_of_offset(path: Path, offset: int) -> int:
    with open(path, "rb") as handle:
        return handle.read(offset).count(b"\n") + 1


def _guess_delimiter(header: str, delimiter: str) -> None:
    if delimiter in header:
        return
    for other, name in ((",", "comma"), (";", "semicolon"), ("\t", "tab"), ("|", "pipe")):
        if other != delimiter and header.count(other) >= 1:
            shown = "\\t" if other == "\t" else other
            raise DataError(f"the header has no '{delimiter}' but {header.count(other)} {name}(s): the file looks "
                            f"{name}-separated; pass --delimiter '{shown}'")


def check_delimiter(delimiter: Any) -> str:
    """The field separator, refused unless it is one character the CSV parser can use."""
    if not isinstance(delimiter, str) or len(delimiter) != 1 or delimiter in "\r\n\"":
        raise DataError(f"--delimiter must be one character such as ',', ';', '|' or '\\t' (tab), not "
                        f"{_clip(repr(delimiter))}")
    return delimiter


def read_csv(path: Path | str, *, encoding: str = "utf-8", delimiter: str = ",", keep_dtype: str | None = None,
             chunk_rows: int = 250_000) -> CsvFile:
    """Read a CSV after checking encoding and delimiter; header names are stripped (details: `_read_csv`).

    A file that cannot be read (permissions, a folder, an I/O error) is a `DataError` naming it."""
    path = Path(path)
    check_delimiter(delimiter)
    try:
        return _read_csv(path, encoding=encoding, delimiter=delimiter, keep_dtype=keep_dtype, chunk_rows=chunk_rows)
    except OSError as exc:
        raise DataError(f"{path}: cannot be read ({exc.strerror or exc}); check --data-path and the file's "
                        "permissions") from None


def _read_csv(path: Path, *, encoding: str, delimiter: str, keep_dtype: str | None, chunk_rows: int) -> CsvFile:
    """Read a CSV after checking encoding and delimiter; header names are stripped.

    Measured on 1M rows x 34 columns (2 cores, both engines on both): pandas' C engine (which parses a big file
    on several threads) took 0.8-1.3 s, the pyarrow engine was no faster and peaked at 4.6x the file's size in
    memory. So: the C engine, with float columns parsed as float32 (the features end as float32 anyway; half the
    memory) except `keep_dtype` (the target). pandas decodes strictly, so a parse that succeeds has proven the
    encoding; when it fails, the bytes are scanned first so that an encoding problem is reported with its line.
    The sha256 is computed after the parse, in the background (`CsvFile.sha256` waits for it): it then overlaps
    the lighter work that follows instead of taking a core from the parser's threads.
    """
    if path.is_dir():
        raise DataError(f"{path}: is a folder, not a CSV file; check --data-path")
    if not path.is_file():
        raise DataError(f"{path}: no such file; check --data-path")
    check_encoding(encoding)
    head = _check_head(path, encoding)
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
        raise DataError(f"{path}: column name(s) {some(dict.fromkeys(duplicated))} appear more than once; rename them")
    return CsvFile(frame=frame, path=path, encoding=used_encoding, delimiter=delimiter,
                   digest=_in_background(_scan_file, path, encoding))


def check_encoding(encoding: Any) -> str:
    try:
        codecs.lookup(encoding)
    except (LookupError, TypeError):
        raise DataError(f"--encoding {_clip(repr(encoding))} is not an encoding Python knows; try utf-8, latin-1 "
                        "or utf-16") from None
    return encoding


def _read_chunks(path: Path, encoding: str, delimiter: str, keep_dtype: str | None, chunk_rows: int) -> pd.DataFrame:
    """Parse float columns straight to float32 (learned from the first rows: half the memory of float64).

    If a later row breaks that guess (text in a numeric column), parse again in chunks without it, so the
    column checks can name the offending rows."""
    try:
        sample = pd.read_csv(path, encoding=encoding, sep=delimiter, nrows=10_000)
        floats = {c: np.float32 for c in sample.columns if sample[c].dtype == np.float64 and str(c).strip() != keep_dtype}
        if len(sample) < 10_000:
            return _downcast(sample, keep_dtype)
        return _undo_overflow(pd.read_csv(path, encoding=encoding, sep=delimiter, dtype=floats), path, encoding,
                              delimiter, floats)
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
    """float64 columns become float32, except `keep` and those holding finite values float32 cannot (> 3.4e38):
    they stay float64 so that the checks can name those values instead of calling them infinite."""
    for column in frame.columns:
        if frame[column].dtype == np.float64 and str(column).strip() != keep:
            values = frame[column].to_numpy()
            if not np.any(np.isfinite(values) & (np.abs(values) > FLOAT32_MAX)):
                frame[column] = values.astype(np.float32)
    return frame


def _undo_overflow(frame: pd.DataFrame, path: Path, encoding: str, delimiter: str, floats: dict) -> pd.DataFrame:
    """Columns parsed straight to float32 that hold an infinity: parse them again as float64 (rare; only those
    columns), so a value like 1e39 is reported as beyond float32's range rather than as infinite."""
    suspects = [c for c in floats if np.isinf(frame[c].to_numpy()).any()]
    if suspects:
        again = pd.read_csv(path, encoding=encoding, sep=delimiter, usecols=suspects, dtype=np.float64)
        for column in suspects:
            frame[column] = again[column]
    return frame


def _describe_parse_error(path: Path, encoding: str, delimiter: str, exc: Exception) -> str:
    """The parser says what went wrong but not where; find the first row with the wrong field count."""
    try:
        with open(path, encoding=encoding, newline="", errors="replace") as handle:
            reader = csv.reader(handle, delimiter=delimiter)
            width = len(next(reader, []))
            for row in reader:
                if row and len(row) != width:
                    return (f"line {reader.line_num} has {len(row)} fields but the header has {width}; fix that row "
                            "(quote fields that contain the delimiter)")
    except (UnicodeError, csv.Error) as error:  # UTF-16 without a byte-order mark refuses even errors="replace"
        return f"cannot be read as {encoding} text ({error}); pass the file's encoding with --encoding"
    first = (str(exc).splitlines() or [type(exc).__name__])[0]
    return f"cannot be parsed as CSV ({_clip(first, 200)}); check it opens in a spreadsheet"


# ------------------------------------------------------------------------------------- column inference
def _rows(mask: np.ndarray, limit: int = 3) -> str:
    """1-based data-row numbers (the header is not a row) of the first few True entries."""
    found = np.flatnonzero(mask)[:limit] + 1
    return ", ".join(str(int(r)) for r in found)


def check_numeric(frame: pd.DataFrame, column: str, *, source: Path | str, what: str = "column"
                  ) -> np.ndarray | None:
    """The column as a float array if it is numeric; raise if it is numeric with garbage; None if it is text."""
    series = frame[column]
    if pd.api.types.is_bool_dtype(series):
        return None
    if pd.api.types.is_numeric_dtype(series):
        return _finite_values(series, column, source, what=what)[0]
    codes, uniques = pd.factorize(series)
    _refuse_numbers_with_garbage(series, codes, uniques, column, source)
    return None


def _finite_values(series: pd.Series, column: str, source: Path | str, *, what: str = "column"
                   ) -> tuple[np.ndarray, float, float]:
    """A numeric column's values as floats (NaN = missing) and their range (NaN, NaN if all are missing),
    refusing infinities and finite values beyond float32's range (the processed data's type), with their rows.
    `what`: "column" or "target", for the message."""
    values = _numeric_values(series)
    if not values.size:
        return values, math.nan, math.nan
    low, high = float(np.fmin.reduce(values)), float(np.fmax.reduce(values))  # NaN-skipping, no temporaries
    if math.isinf(low) or math.isinf(high):
        infinite = np.isinf(values)
        raise DataError(f"{source}: {what} '{column}' has {int(infinite.sum())} infinite value(s) (rows "
                        f"{_rows(infinite)}); replace them with real numbers or leave the cells empty")
    if max(-low, high) > FLOAT32_MAX:
        _refuse_beyond_float32(values, column, source, what)
    return values, low, high


def _refuse_beyond_float32(values: np.ndarray, column: str, source: Path | str, what: str) -> None:
    huge = np.abs(np.nan_to_num(values)) > FLOAT32_MAX
    example = float(values[np.flatnonzero(huge)[0]])
    raise DataError(f"{source}: {what} '{column}' has {int(huge.sum())} value(s) beyond float32's range (+-3.4e38; "
                    f"rows {_rows(huge)}, e.g. {example:.6g}), which training would see as infinite; rescale the "
                    "column (other units, or its logarithm) or blank those cells")


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
    if not garbage.any():
        return  # numbers held as text (e.g. after rows were dropped): the caller converts them
    where = f"rows {_rows(garbage)}"
    if int(garbage.sum()) == 1 and garbage[-1]:
        where = f"row {len(garbage)}, the last row: a totals or footer line? delete it"
    raise DataError(
        f"{source}: column '{column}' is numeric but has {int(garbage.sum())} non-numeric value(s) "
        f"({where}, e.g. {_clip(repr(series[garbage].iloc[0]), 40)}); fix or blank those cells")


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
    if not pd.api.types.is_bool_dtype(series):
        _refuse_numbers_with_garbage(series, codes, uniques, column, source)
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
        self.levels_seen_: dict[str, int] = {}  # distinct levels in the fitted rows; more than max_categories: capped
        for column in self.categorical:
            codes, names = table.categorical[column]
            counts = np.bincount(codes if rows is None else codes[rows], minlength=len(names))
            # most frequent first, ties broken by name so the encoding is reproducible
            ranked = sorted(((int(n), name) for n, name in zip(counts, names) if n > 0), key=lambda kv: (-kv[0], kv[1]))
            self.categories_[column] = [name for _, name in ranked[: self.max_categories]]
            self.levels_seen_[column] = len(ranked)
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
                "missing_category": MISSING, "max_levels": self.max_categories}

    @classmethod
    def from_dict(cls, params: dict[str, Any]) -> "Preprocessor":
        self = cls(list(params["numeric"]), list(params["categorical"]), params.get("max_levels", MAX_CATEGORIES))
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


# ------------------------------------------------------------------------------ the column report and warnings
CHECK_SAMPLE_ROWS = 5_000    # rows per side (train / held-out) the single-feature checks look at: cheap on any file
LEAK_ACCURACY, LEAK_BALANCED_ACCURACY, LEAK_R2 = 0.95, 0.90, 0.95  # "predicts the target almost perfectly"
MINORITY_SHARE = 0.10        # a class under this share of rows (and under half an even share) is flagged
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
    if len(other) >= 20:  # fewer held-out rows prove nothing
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


def rare_classes(labels: np.ndarray, n_classes: int) -> np.ndarray:
    """The class codes under MINORITY_SHARE of the rows and under half an even share: prepare warns about them,
    and training weights the classes (`--class-weights auto`) when there is one."""
    counts = np.bincount(labels, minlength=n_classes)
    if counts.sum() == 0:
        return np.zeros(0, dtype=np.int64)
    return np.flatnonzero(counts / counts.sum() < np.minimum(MINORITY_SHARE, 0.5 / n_classes))


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


def _check_fractions(test_split: float, val_split: float) -> None:
    if not (0 < test_split < 1) or not (0 <= val_split < 1) or test_split + val_split >= 1:
        raise DataError(f"--test-split {test_split} and --val-split {val_split} must each be in [0, 1) "
                        "and leave rows for training (e.g. 0.2 and 0.1)")


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


def _check_split_sizes(splits: dict[str, np.ndarray], n_rows: int, test_split: float, val_split: float,
                       *, source: Path) -> None:
    empty = [name for name in SPLITS if len(splits[name]) == 0 and not (name == "val" and val_split == 0)]
    if empty:
        raise DataError(f"{source}: {n_rows} usable row(s) are too few to fill the {'/'.join(empty)} split(s) "
                        f"(test {test_split}, val {val_split}); add rows or lower the split fractions")


def check_output_dir(output_dir: Path, *, data_path: Path | None = None) -> None:
    """Refuse, before any work, an --output-dir that prepare cannot fill or may not replace.

    It may be missing (its parent folders are made), empty, or hold an earlier output of this command and
    nothing else: replacing it then loses nothing. A folder with anything else in it (notes, the source CSV,
    a training run) is refused with a few of those names; a file, a path under a file, and a place the
    process cannot write (permissions, a read-only mount) are refused too."""
    output_dir = Path(output_dir)
    ancestor = next((p for p in (output_dir, *output_dir.parents) if os.path.lexists(p)), Path("."))
    if ancestor != output_dir and not ancestor.is_dir():
        raise DataError(f"{output_dir}: cannot be made, because {ancestor} is a file; choose another --output-dir")
    if ancestor == output_dir and not output_dir.is_dir():
        raise DataError(f"{output_dir}: is a file, not a folder; choose another --output-dir (nothing was written)")
    parent = output_dir.parent if ancestor == output_dir else ancestor
    if not os.access(parent, os.W_OK | os.X_OK):
        raise DataError(f"{output_dir}: cannot write in {parent} ({_why_unwritable(parent)}); choose another "
                        "--output-dir")
    if ancestor != output_dir:
        return
    if os.path.ismount(output_dir):
        if not os.access(output_dir, os.W_OK):
            raise DataError(f"{output_dir}: is a mount point with {_why_unwritable(output_dir)}; choose another "
                            "--output-dir")
        raise DataError(f"{output_dir}: is a mount point, which prepare cannot replace (it builds the folder beside "
                        f"it and renames it in); pass a folder inside it, e.g. --output-dir {output_dir / 'processed'}")
    if not os.access(output_dir, os.W_OK | os.X_OK):  # a folder its owner made read-only is not ours to replace
        raise DataError(f"{output_dir}: is read-only ({_why_unwritable(output_dir)}); make it writable or choose "
                        "another --output-dir")
    try:
        entries = sorted(os.listdir(output_dir))
    except OSError as exc:
        raise DataError(f"{output_dir}: cannot be read ({exc.strerror}); choose another --output-dir") from None
    if not entries:
        return
    ours = _files_written(output_dir)
    if ours is None:
        raise DataError(f"{output_dir}: exists and is not an earlier output of prepare_dataset (it holds "
                        f"{some(entries, 5)}); choose another --output-dir (nothing was written)")
    foreign = [name + ("/" if (output_dir / name).is_dir() else "") for name in entries if name not in ours]
    if foreign:
        source = ""
        if data_path is not None and data_path.resolve().parent == output_dir.resolve():
            source = f" (the source CSV {data_path.name} among them)"
        raise DataError(f"{output_dir}: holds an earlier output of prepare_dataset but also {len(foreign)} file(s) it "
                        f"did not write{source}: {some(foreign, 5)}; nothing was changed: move them out, or choose "
                        "another --output-dir")


def _files_written(directory: Path) -> set[str] | None:
    """The names an earlier prepare wrote into `directory` (from its schema.json), or None if it wrote none."""
    try:
        schema = fileio.read_json(directory / "schema.json")
    except OSError:
        return None
    if not isinstance(schema, dict) or schema.get("producer") != PRODUCER:
        return None
    names = {"schema.json"} | {f"{split}_{part}.npy" for split in SPLITS for part in ("X", "y")}
    files = schema.get("files")
    for item in (files.values() if isinstance(files, dict) else []):
        for name in (item.values() if isinstance(item, dict) else []):
            if isinstance(name, str) and name == Path(name).name:
                names.add(name)
    return names


def _why_unwritable(path: Path) -> str:
    try:
        if os.statvfs(path).f_flag & os.ST_RDONLY:
            return "a read-only file system"
    except OSError:
        pass
    return "permission denied"


def _read_header(path: Path | str, encoding: str, delimiter: str) -> list[str]:
    """Column names from the first line (to know the target before parsing); [] if unreadable."""
    try:
        with open(path, encoding=_effective_encoding(encoding, _check_head(Path(path), encoding)), newline="",
                  errors="replace") as handle:
            return [c.strip() for c in next(csv.reader(handle, delimiter=delimiter), [])]
    except (OSError, LookupError, ValueError, csv.Error, DataError):  # ValueError: UnicodeError too
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
            # through a plain write(): np.save to a file reports a full disk without its errno
            encoded = io.BytesIO()
            np.save(encoded, labels[rows])
            with open(directory / f"{name}_y.npy", "wb", buffering=0) as handle:
                _write_all(handle, encoded.getbuffer())
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


def _write_output(output_dir: Path, schema: dict, write_files: Callable[[Path], None]) -> Path | None:
    """Build the folder beside its final place, then rename it in: readers see all of it or none.

    `write_files(staging)` writes the split files into the staging folder. A full disk, a read-only file system
    or any other write error becomes a `DataError`; the staging folder goes and an earlier output stays as it
    was. The earlier output, once renamed aside, loses only the files prepare wrote into it (which
    `check_output_dir` made sure are all it holds); if anything else appeared there meanwhile, that folder is
    kept and its path returned."""
    try:
        output_dir.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale_staging(output_dir)
        staging = _new_sibling(output_dir, "tmp")
    except OSError as exc:
        raise DataError(f"{output_dir}: cannot be created ({exc.strerror or exc}); choose another --output-dir") from None
    try:
        write_files(staging)
        fileio.atomic_write_json(staging / "schema.json", schema)
        fileio.fsync_dir(staging)
        old = None
        if output_dir.exists():
            old = _new_sibling(output_dir, "old", make=False)
            os.replace(output_dir, old)
            try:
                os.replace(staging, output_dir)
            except BaseException:
                os.replace(old, output_dir)  # put the earlier output back
                raise
        else:
            os.replace(staging, output_dir)
        fileio.fsync_dir(output_dir.parent)
    except BaseException as exc:
        shutil.rmtree(staging, ignore_errors=True)
        if isinstance(exc, OSError):
            kept = " (the earlier output there is unchanged)" if output_dir.exists() else ""
            raise DataError(f"{output_dir}: could not be written ({_os_reason(exc)}); nothing was changed{kept}: "
                            "free some space or choose another --output-dir") from None
        raise
    return _remove_output(old) if old is not None else None


def _os_reason(exc: OSError) -> str:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return "no space left on the device"
    if exc.errno == errno.EFBIG:
        return "a file grew beyond the size limit"
    if exc.errno == errno.EROFS:
        return "a read-only file system"
    return exc.strerror or str(exc)


def _new_sibling(output_dir: Path, kind: str, *, make: bool = True) -> Path:
    """A new, unused name beside `output_dir`: '.NAME.tmp-PID-RANDOM' (made as a folder when `make`)."""
    for _ in range(100):
        path = output_dir.with_name(f".{output_dir.name}.{kind}-{os.getpid()}-{secrets.token_hex(4)}")
        if make:
            try:
                path.mkdir()
            except FileExistsError:
                continue
        elif os.path.lexists(path):
            continue
        return path
    raise FileExistsError(f"{output_dir.parent}: no free name for a {kind} folder")


def _remove_output(directory: Path) -> Path | None:
    """Delete an earlier output: only the files prepare writes, then the folder if that emptied it."""
    names = _files_written(directory) or set()
    for name in names:
        (directory / name).unlink(missing_ok=True)
    try:
        directory.rmdir()
    except OSError:
        return directory
    return None


def _remove_stale_staging(output_dir: Path) -> None:
    """Staging and set-aside folders a killed prepare left beside `output_dir` (their process is gone and they
    hold only files prepare writes): they can be as big as the data, so they go."""
    pattern = re.compile(rf"\.{re.escape(output_dir.name)}\.(?:tmp|old)-(\d+)-[0-9a-f]{{8}}")
    ours = {"schema.json"} | {f"{split}_{part}.npy" for split in SPLITS for part in ("X", "y")}
    for entry in output_dir.parent.iterdir():
        match = pattern.fullmatch(entry.name)
        if not match or int(match.group(1)) == os.getpid() or _pid_alive(int(match.group(1))):
            continue
        try:
            names = os.listdir(entry)
        except OSError:
            continue
        if all(name in ours or name.startswith(".schema.json.") for name in names):
            shutil.rmtree(entry, ignore_errors=True)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


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
    dates = schema["features"].get("datetime", {})
    derived = {f"{column}.{part}": column for column, item in dates.items() for part in item["parts"]}
    needed = [derived.get(c, c) for c in schema["features"]["numeric"] + schema["features"]["categorical"]]
    missing = list(dict.fromkeys(c for c in needed if c not in csv_file.frame.columns))
    if missing:
        raise DataError(f"{csv_path}: missing {len(missing)} feature column(s) the model was trained on "
                        f"({some(missing)}); score a CSV with the training file's columns")
    for column in schema["features"]["numeric"]:
        if column not in derived:
            check_numeric(csv_file.frame, column, source=csv_path)
    frame = csv_file.frame.assign(**datetime_features(csv_file.frame, dates)) if dates else csv_file.frame
    preprocessor = Preprocessor.from_dict(schema["preprocessing"])
    return preprocessor.transform(frame), csv_file.frame
