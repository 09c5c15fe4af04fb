"""A run as the report's sections read it: metrics.json plus the resource samples and events beside it."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline import fileio
from pipeline.errors import DataError
from pipeline.logs import clean_record
from pipeline.report.checks import _LARGEST, normalise
from pipeline.rundir import RunDir

@dataclass
class RunData:
    """A run as the sections read it. `metrics` is checked on construction (`normalise`); what was left out is
    in `problems`, and the system samples and events are checked as the monitor checks log records."""
    path: Path
    metrics: dict[str, Any]
    system: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.metrics, found = normalise(self.metrics)
        self.problems = list(self.problems) + found
        self.system = [r for r in map(clean_record, self.system) if r and "time" in r and
                       abs(r["time"]) < _LARGEST]
        self.events = [r for r in map(clean_record, self.events) if r]

    @property
    def name(self) -> str:
        return str(self.metrics["run"].get("name") or self.path.parent.name)

    @property
    def epochs(self) -> list[dict[str, Any]]:
        return self.metrics.get("epochs") or []

    @property
    def task(self) -> str:
        return self.metrics["data"]["task"]


def load_metrics(path: Path | str) -> dict[str, Any]:
    """Read and sanity-check a metrics.json written by train_pipeline.py (its values are checked by `RunData`)."""
    path = Path(path)
    if path.is_dir():
        raise DataError(f"{path}: is a folder; pass the metrics.json inside a training --save-dir")
    if not path.is_file():
        raise DataError(f"{path}: no such metrics file; pass the metrics.json in a training --save-dir")
    try:
        metrics = json.loads(path.read_bytes().decode("utf-8"))
    except OSError as exc:
        raise DataError(f"{path}: cannot be read ({exc.strerror or exc}); check the file's permissions") from None
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise DataError(f"{path}: not valid JSON ({str(exc)[:200]}); was it written by train_pipeline.py?") from None
    if not isinstance(metrics, dict) or metrics.get("schema_version") != 1 or "run" not in metrics:
        raise DataError(f"{path}: not a metrics.json (schema_version 1) written by train_pipeline.py")
    return metrics


def load_run(path: Path | str) -> RunData:
    """metrics.json plus, when present beside it, the resource samples and events under logs/."""
    path = Path(path)
    run = RunDir(path.parent)
    return RunData(path=path, metrics=load_metrics(path), system=_read_log(run.system_log),
                   events=[r for r in _read_log(run.metrics_log) if r.get("type") in ("run", "status")])


def _read_log(path: Path) -> list[dict[str, Any]]:
    """A JSONL log's records; an unreadable or damaged log is no log (the report still renders)."""
    try:
        return list(fileio.read_jsonl(path))
    except (OSError, RecursionError):
        return []
