"""CSV reading: encoding detection, chunked parsing on threads, numeric-column checks with row numbers."""
from __future__ import annotations

import codecs
import csv
import hashlib
import math
from collections.abc import Iterable
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.data.store import FLOAT32_MAX
from pipeline.data.table import _in_background, _numeric_values
from pipeline.errors import DataError


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
                                 source: Path | str, hint: str = "") -> None:
    """A text column whose values are mostly numbers is a numeric column with bad cells: name them (`hint`: what
    else the user may do, appended to the message).

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
        f"({where}, e.g. {_clip(repr(series[garbage].iloc[0]), 40)}); fix or blank those cells{hint}")


def _read_header(path: Path | str, encoding: str, delimiter: str) -> list[str]:
    """Column names from the first line (to know the target before parsing); [] if unreadable."""
    try:
        with open(path, encoding=_effective_encoding(encoding, _check_head(Path(path), encoding)), newline="",
                  errors="replace") as handle:
            return [c.strip() for c in next(csv.reader(handle, delimiter=delimiter), [])]
    except (OSError, LookupError, ValueError, csv.Error, DataError):  # ValueError: UnicodeError too
        return []
