"""JSONL logs read incrementally and tolerantly (`JsonlTail`), and each record checked field by field
(`clean_record`) before anything uses it. Shared by the monitor (live) and the report (after the run)."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from pipeline import fileio

# ------------------------------------------------------------------------------------ values for sinks
def flatten_sample(sample: dict[str, Any]) -> dict[str, float]:
    """A resource sample as flat numbers: `gpus: [{index: 0, util_percent: 93}]` -> `gpu0_util_percent: 93`."""
    flat = {k: v for k, v in sample.items() if isinstance(v, (int, float)) and not isinstance(v, bool)
            and k != "time"}
    for gpu in sample.get("gpus") or []:
        flat.update({f"gpu{gpu['index']}_{k}": v for k, v in gpu.items()
                     if k not in ("index", "name") and isinstance(v, (int, float))})
    return flat


def numbers(metrics: dict[str, Any]) -> dict[str, float]:
    """The numeric entries (what a metrics store can hold)."""
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


# ------------------------------------------------------------------------------------- checking records
def _number(value: Any) -> float | None:
    """A JSON number as a float (NaN/inf kept: a non-finite loss is news); None for anything else."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        return float(value)
    except OverflowError:  # an integer too large for a float
        return math.inf if value > 0 else -math.inf


def _whole(value: Any, low: int = 0) -> int | None:
    """A whole number >= `low` (3 or 3.0), else None."""
    number = _number(value)
    if number is None or not math.isfinite(number) or number != int(number) or number < low:
        return None
    return int(number)


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


# What each field of each record type must be; a field that is not is left out, a record without its
# essential field (a step's step, an epoch's epoch number) is skipped.
_RUN_FIELDS = {"pid": lambda v: _whole(v, 1), "epochs": _whole, "steps_per_epoch": lambda v: _whole(v, 1),
               "start_step": _whole, "start_epoch": _whole, "time": _number,
               "world_size": lambda v: _whole(v, 1)}
_ESSENTIAL = {"step": "step", "epoch": "epoch", "system": "time"}


def clean_record(record: Any) -> dict[str, Any] | None:
    """`record` with every field the monitor reads of the type it expects (others dropped), or None when the
    record cannot be used at all. Metrics are numbers (None where the trainer wrote null for a NaN)."""
    if not isinstance(record, dict):
        return None
    kind = record.get("type")
    out: dict[str, Any] = {"type": kind}
    time_value = _number(record.get("time"))
    if time_value is not None and math.isfinite(time_value):
        out["time"] = time_value
    if kind == "run":
        for key, value in record.items():
            if key in _RUN_FIELDS:
                checked = _RUN_FIELDS[key](value)
                if checked is not None:
                    out[key] = checked
            elif key not in ("type", "time") and (isinstance(value, str) or key == "config"):
                out[key] = value
        out.setdefault("start_step", 0)
        return out
    if kind == "status":
        out["status"] = _text(record.get("status")) or "unknown"
        out["message"] = str(record.get("message") or "") if not isinstance(record.get("message"), (dict, list)) else ""
        return out
    if kind in ("step", "epoch"):
        for key, value in record.items():
            if key in ("type", "time"):
                continue
            if key in ("step", "epoch"):
                checked = _whole(value, 1 if key == "epoch" else 0)
                if checked is not None:
                    out[key] = checked
            elif value is None or _number(value) is not None:
                out[key] = _number(value)
        if _ESSENTIAL[kind] not in out:
            return None
        out.setdefault("step", 0)
        return out
    if kind == "system" or (kind is None and "cpu_percent" in record):
        for key, value in record.items():
            if key == "gpus":
                out["gpus"] = [g for g in map(_clean_gpu, value if isinstance(value, list) else []) if g]
            elif key not in ("type", "time") and _number(value) is not None:
                out[key] = _number(value)
        return out if "time" in out else None
    return out if isinstance(kind, str) else None


def _clean_gpu(gpu: Any) -> dict[str, Any] | None:
    if not isinstance(gpu, dict) or _whole(gpu.get("index")) is None:
        return None
    out: dict[str, Any] = {"index": _whole(gpu["index"])}
    if isinstance(gpu.get("name"), str):
        out["name"] = gpu["name"]
    out.update({k: _number(v) for k, v in gpu.items() if k not in ("index", "name") and _number(v) is not None})
    return out


# --------------------------------------------------------------------------------------------- reading
class JsonlTail:
    """Reads the complete new lines of a growing JSONL file on every `poll()`."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.offset = 0
        self.inode: int | None = None
        self.seen = False           # the file existed at some poll
        self.problem: str | None = None  # why the last poll could not read it (it exists but is unreadable)

    def poll(self) -> tuple[list[dict[str, Any]], bool]:
        """(new records, reset) — reset is True when the file was replaced or truncated (start over)."""
        self.problem = None
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            return [], False
        except OSError as exc:
            self.problem = f"{self.path}: cannot be read ({exc.strerror or exc})"
            return [], False
        self.seen = True
        reset = False
        if self.inode is not None and (stat.st_ino != self.inode or stat.st_size < self.offset):
            self.offset, reset = 0, True
        self.inode = stat.st_ino
        try:
            with open(self.path, "rb") as handle:
                handle.seek(self.offset)
                chunk = handle.read()
        except FileNotFoundError:
            return [], reset
        except OSError as exc:
            what = "is a folder, not a file" if self.path.is_dir() else f"cannot be read ({exc.strerror or exc})"
            self.problem = f"{self.path}: {what}"
            return [], reset
        records, used = _parse_jsonl(chunk)
        self.offset += used
        return records, reset


def _parse_jsonl(chunk: bytes) -> tuple[list[dict[str, Any]], int]:
    """`fileio.parse_jsonl`, line by line when a line is nested too deeply for the JSON parser (RecursionError)."""
    try:
        return fileio.parse_jsonl(chunk)
    except RecursionError:
        pass
    end = chunk.rfind(b"\n")
    records = []
    for line in chunk[:end].split(b"\n"):
        try:
            records += fileio.parse_jsonl(line + b"\n")[0]
        except RecursionError:
            continue
    return records, end + 1
