"""Phase 3: follow a training run from its log files — a live terminal dashboard and alerts.

    python solutions/monitor_training.py --log-dir checkpoints/logs          # live, until the run ends
    python solutions/monitor_training.py --log-dir checkpoints/logs --once   # one snapshot

Only files under the log folder are read (`metrics.jsonl`, `system.jsonl`), incrementally and tolerantly:
a half-written last line is left for the next poll, a truncated or replaced file is read again from the
start, and every record is checked field by field (`clean_record`) before the view uses it, so a log holding
anything at all (a string step, a list where a loss belongs) never ends the monitor. If the logs vanish, the
run's `metrics.json` beside them says how it ended. `detect_alerts` is pure: it takes the parsed history and
returns what deserves attention.
"""
from __future__ import annotations

import math
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from pipeline import fileio, metrics, status as status_lib
from pipeline.errors import PipelineError

TERMINAL = status_lib.TERMINAL
MAX_REFRESH_S = 3600.0


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


@dataclass
class RunView:
    """Everything known about a run from its logs."""
    log_dir: Path
    run: dict[str, Any] | None = None          # the latest 'run' record (start or resume)
    status: str = "waiting"
    message: str = ""
    steps: list[dict[str, Any]] = field(default_factory=list)
    epochs: list[dict[str, Any]] = field(default_factory=list)
    system: list[dict[str, Any]] = field(default_factory=list)
    last_event_time: float | None = None
    skipped: int = 0  # records that could not be used (not an object, or missing their step / epoch number)

    def apply(self, records: list[Any]) -> None:
        for raw in records:
            record = clean_record(raw)
            if record is None:
                self.skipped += 1
                continue
            kind = record["type"]
            if "time" in record:
                self.last_event_time = max(self.last_event_time or 0.0, record["time"])
            if kind == "run":
                self.run, self.status, self.message = record, "running", ""
                start = record["start_step"]  # a resume replays steps after its checkpoint
                self.steps = [s for s in self.steps if s["step"] <= start]
                self.epochs = [e for e in self.epochs if e["step"] <= start]
            elif kind == "status":
                self.status, self.message = record["status"], record["message"]
            elif kind == "step":
                self.steps.append(record)
                del self.steps[:-5000]  # the view needs the recent ones; a long run has millions
            elif kind == "epoch":
                self.epochs.append(record)

    # ---- derived values
    @property
    def total_epochs(self) -> int | None:
        return self.run.get("epochs") if self.run else None

    @property
    def steps_per_epoch(self) -> int | None:
        return self.run.get("steps_per_epoch") if self.run else None

    @property
    def global_step(self) -> int:
        last = [r.get("step", 0) for r in (self.steps[-1:] + self.epochs[-1:])]
        return max(last) if last else int(self.run.get("start_step", 0)) if self.run else 0

    def seconds_per_step(self) -> float | None:
        timed = [s for s in self.steps[-50:] if s.get("time")]
        if len(timed) >= 2 and timed[-1]["step"] > timed[0]["step"]:
            per_step = (timed[-1]["time"] - timed[0]["time"]) / (timed[-1]["step"] - timed[0]["step"])
            return per_step if math.isfinite(per_step) and per_step >= 0 else None
        epoch_seconds = self.epochs[-1].get("epoch_seconds") if self.epochs else None
        if epoch_seconds is not None and math.isfinite(epoch_seconds) and epoch_seconds >= 0 and self.steps_per_epoch:
            return epoch_seconds / self.steps_per_epoch
        return None

    def eta_seconds(self) -> float | None:
        per_step = self.seconds_per_step()
        if per_step is None or not self.total_epochs or not self.steps_per_epoch:
            return None
        remaining = self.total_epochs * self.steps_per_epoch - self.global_step
        return max(0.0, remaining * per_step)

    @property
    def monitor_metric(self) -> str:
        return (self.run or {}).get("monitor_metric") or "val_loss"

    def best(self) -> tuple[int, str, float] | None:
        found = metrics.best_epoch(self.epochs, self.monitor_metric)
        return (found[0], self.monitor_metric, found[1]) if found else None


def process_alive(pid: int, started_by: float | None = None) -> bool:
    """Is process `pid` running, and (with `started_by`, a time the run wrote) is it the run's own process?

    PIDs are reused: a process that started after the run had already written `started_by` is another
    program, so the run's own process is gone. A zombie (exited, not yet reaped) is gone too."""
    if isinstance(pid, bool) or not isinstance(pid, int) or pid <= 0:
        return False
    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return False
        # create_time is derived from the boot time (whole seconds) and clock ticks: allow two seconds of slack
        return started_by is None or process.create_time() <= started_by + 2.0
    except psutil.NoSuchProcess:
        return False
    except (psutil.AccessDenied, OSError):
        return True


class RunFollower:
    """Polls the log folder and keeps a RunView up to date; marks a run 'lost' when its process is gone."""

    def __init__(self, log_dir: Path):
        self.log_dir = Path(log_dir)
        self.view = RunView(self.log_dir)
        self.metrics_tail = JsonlTail(self.log_dir / "metrics.jsonl")
        self.system_tail = JsonlTail(self.log_dir / "system.jsonl")

    @property
    def problem(self) -> str | None:
        """Why metrics.jsonl could not be read at the last poll (it exists but is a folder or unreadable)."""
        return self.metrics_tail.problem

    def poll(self) -> RunView:
        records, reset = self.metrics_tail.poll()
        if reset:
            self.view = RunView(self.log_dir)
            self.system_tail = JsonlTail(self.log_dir / "system.jsonl")
        self.view.apply(records)
        samples, reset_system = self.system_tail.poll()
        if reset_system:
            self.view.system = []
        self.view.system = (self.view.system + [s for s in map(clean_record, samples) if s and "time" in s])[-2000:]
        if self.metrics_tail.problem and self.view.status in ("waiting", "running"):
            self.view.message = self.metrics_tail.problem
        gone = self.metrics_tail.seen and not self.metrics_tail.path.exists()
        if gone and self.view.status == "running":
            self.view.message = f"{self.metrics_tail.path} has disappeared; the run's metrics.json will say how it ends"
        if (gone or not self.log_dir.exists()) and self.view.status in ("waiting", "running"):
            self._status_from_metrics_json()  # the logs were deleted: metrics.json beside them may know
        run = self.view.run
        if self.view.status == "running" and run and run.get("host") == socket.gethostname():
            if not process_alive(run.get("pid", 0), run.get("time")):
                # one more read: the process may have written its final status just before exiting
                records, _ = self.metrics_tail.poll()
                self.view.apply(records)
                if self.view.status == "running":
                    self._status_from_metrics_json()
                if self.view.status == "running":
                    self.view.status = "lost"
                    self.view.message = f"process {run.get('pid')} is gone without a final status (killed or crashed)"
        return self.view

    def _status_from_metrics_json(self) -> None:
        """Take the final status from the run's metrics.json (beside logs/), which the trainer rewrites at the end,
        when it belongs to the run this view follows (same pid) or the view has seen no run at all."""
        summary = _read_json(self.log_dir.parent / "metrics.json")
        info = summary.get("run") if isinstance(summary, dict) else None
        if not isinstance(info, dict) or info.get("status") not in TERMINAL:
            return
        run = self.view.run
        if run is not None and "pid" in run and info.get("pid") != run["pid"]:
            return  # another run's summary (an older one, or a newer one in the same folder)
        if not self.view.epochs and isinstance(summary.get("epochs"), list):
            self.view.apply([{**e, "type": "epoch"} for e in summary["epochs"] if isinstance(e, dict)])
        if run is None:
            self.view.run = clean_record({"type": "run", "run_name": info.get("name"), "pid": info.get("pid"),
                                          "device": info.get("device"),
                                          "epochs": (summary.get("config") or {}).get("epochs")
                                          if isinstance(summary.get("config"), dict) else None})
        self.view.status = info["status"]
        self.view.message = (str(info.get("message") or "") + " (from metrics.json: the logs are gone)").strip()


def _read_json(path: Path) -> Any:
    """`fileio.read_json`, with unreadable files and too deeply nested JSON read as None."""
    try:
        return fileio.read_json(path)
    except (OSError, RecursionError):
        return None


# ---------------------------------------------------------------------------------------------- alerts
@dataclass(frozen=True)
class Alert:
    name: str
    severity: str  # "warning" | "critical"
    message: str


def detect_overfitting(epochs: list[dict[str, Any]], patience: int = 3, metric: str = "val_loss") -> str | None:
    """The project's one overfitting rule (`metrics.overfitting`), for the metric the run monitors."""
    return metrics.overfitting(epochs, metric, patience)


def detect_alerts(view: RunView, now: float | None = None, *, overfit_patience: int = 3, stall_factor: float = 20.0,
                  min_stall_s: float = 60.0, input_bound_fraction: float = 0.3, memory_percent: float = 90.0,
                  gpu_temperature_c: float = 85.0) -> list[Alert]:
    """Everything that deserves a person's attention now, most severe first."""
    now = time.time() if now is None else now
    alerts: list[Alert] = []
    # a null loss is a NaN the trainer could not write as JSON; records are checked, so values are floats or None
    losses = [s["loss"] for s in view.steps[-20:] if "loss" in s] + [e[k] for e in view.epochs[-3:]
                                                                     for k in ("train_loss", "val_loss") if k in e]
    if any(v is None or not math.isfinite(v) for v in losses) or \
            (view.status == "failed" and "non-finite" in view.message):
        alerts.append(Alert("non_finite_loss", "critical", "the loss is NaN/inf: lower the learning rate, add "
                            "--grad-clip, or check the data"))
    if view.status == "lost":
        alerts.append(Alert("lost", "critical", view.message))
    overfit = detect_overfitting(view.epochs, overfit_patience, view.monitor_metric)
    if overfit:
        alerts.append(Alert("overfitting", "warning", overfit + "; consider early stopping, more dropout or "
                            "weight decay"))
    if view.status == "running" and view.last_event_time:
        per_step = view.seconds_per_step() or 0.0
        limit = max(min_stall_s, stall_factor * per_step)
        silent = now - view.last_event_time
        if silent > limit:
            alerts.append(Alert("stalled", "warning", f"no new event for {silent:.0f}s (usual step time "
                                f"{per_step:.3g}s); the run may be stuck"))
    if view.epochs:
        last = view.epochs[-1]
        total = last.get("epoch_seconds") or 0.0
        waited = last.get("data_seconds") or 0.0
        on_gpu = str((view.run or {}).get("device", "")).startswith("cuda")
        if on_gpu and 0 < total < math.inf and 0 <= waited < math.inf and waited / total > input_bound_fraction:
            alerts.append(Alert("input_bound", "warning", f"{100 * waited / total:.0f}% of the last epoch waited for "
                                "data: the GPU is starved (use the in-memory loader, more --num-workers, bigger batches)"))
    if view.system:
        sample = view.system[-1]
        if (sample.get("ram_percent") or 0) > memory_percent:
            alerts.append(Alert("memory_pressure", "warning", f"system RAM at {sample['ram_percent']:.0f}%"))
        for gpu in sample.get("gpus", []):
            used, total = gpu.get("mem_used_mb"), gpu.get("mem_total_mb")
            if used and total and math.isfinite(used / total) and 100 * used / total > memory_percent:
                alerts.append(Alert("memory_pressure", "warning", f"GPU {gpu['index']} memory at {100 * used / total:.0f}%"))
            if (gpu.get("temperature_c") or 0) > gpu_temperature_c:
                alerts.append(Alert("temperature", "warning", f"GPU {gpu['index']} at {gpu['temperature_c']:.0f} °C"))
            util = [g.get("util_percent") for s2 in view.system[-10:] for g in s2.get("gpus", [])
                    if g["index"] == gpu["index"]]
            util = [u for u in util if u is not None and math.isfinite(u)]
            if view.status == "running" and len(util) >= 5 and sum(util) / len(util) < 30:
                alerts.append(Alert("input_bound", "warning", f"GPU {gpu['index']} averaged {sum(util) / len(util):.0f}% "
                                    "utilisation over the last samples: likely waiting on input or the CPU"))
    return sorted(alerts, key=lambda a: a.severity != "critical")


# --------------------------------------------------------------------------------------------- display
def smooth(values: list[float], alpha: float = 0.3) -> list[float]:
    """Exponential moving average (the 'smoothing' slider of TensorBoard)."""
    out: list[float] = []
    for value in values:
        out.append(value if not out else alpha * value + (1 - alpha) * out[-1])
    return out


def ascii_chart(series: dict[str, list[float]], width: int = 60, height: int = 10) -> list[str]:
    """Several series in one text chart; each series gets its own mark. Returns the lines."""
    marks = "*o+x#"
    clean = {name: [v for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
             for name, values in series.items()}
    clean = {k: v for k, v in clean.items() if v}
    if not clean:
        return ["(no data yet)"]
    low = min(min(v) for v in clean.values())
    high = max(max(v) for v in clean.values())
    # halves: high - low itself can overflow to inf for values near the float limits
    span, half_low = (high / 2 - low / 2) or 1.0, low / 2
    grid = [[" "] * width for _ in range(height)]
    for mark, values in zip(marks, clean.values()):
        n = len(values)
        # one point per column when there are more values than columns, else spread the values out
        points = ([(c, values[c * n // width]) for c in range(width)] if n > width else
                  [(round(i * (width - 1) / max(1, n - 1)), v) for i, v in enumerate(values)])
        for column, value in points:
            row = height - 1 - int(round((value / 2 - half_low) / span * (height - 1)))
            grid[row][column] = mark
    lines = [f"{high:>9.4g} |" + "".join(grid[0])]
    lines += ["          |" + "".join(row) for row in grid[1:-1]]
    lines.append(f"{low:>9.4g} |" + "".join(grid[-1]))
    lines.append("           " + "  ".join(f"{m} {name}" for m, name in zip(marks, clean)))
    return lines


def _duration(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds) or not 0 <= seconds < 1e9:
        return "?"
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h{rest // 60:02d}m{rest % 60:02d}s" if hours else f"{rest // 60}m{rest % 60:02d}s"


def _shown(value: float | None, spec: str) -> str:
    """A number formatted with `spec`, or '?' when there is none (a field missing from the log)."""
    return "?" if value is None else format(value, spec)


def snapshot_lines(view: RunView, alerts: list[Alert], width: int = 60) -> list[str]:
    """The dashboard as plain text lines (used for --once, pipes, and inside the rich layout)."""
    world = (view.run or {}).get("world_size")
    lines = [f"run: {(view.run or {}).get('run_name', '?')}   status: {view.status.upper()}"
             + (f"   device: {view.run.get('device')}" if view.run else "")
             + (f"   processes: {world} (torchrun)" if isinstance(world, int) and world > 1 else "")]
    if view.message:
        lines.append(f"  {view.message}")
    if view.run is None:
        lines.append(f"waiting for a run to write {view.log_dir / 'metrics.jsonl'} ...")
        return lines
    epoch = view.epochs[-1]["epoch"] if view.epochs else 0
    total = view.total_epochs or 0
    spe = view.steps_per_epoch or 1
    done = min(1.0, max(0.0, view.global_step / max(1, total * spe)))  # a log can claim any step
    bar = "#" * int(30 * done) + "-" * (30 - int(30 * done))
    lines.append(f"progress: [{bar}] {100 * done:5.1f}%  epoch {epoch}/{total}  step {view.global_step}/{total * spe}"
                 + (f"  ETA {_duration(view.eta_seconds())}" if view.status == "running" else ""))
    if view.epochs:
        last = view.epochs[-1]
        shown = [f"{k} {last[k]:.4g}" for k in ("train_loss", "val_loss", "val_accuracy", "val_f1_macro", "val_rmse",
                                                 "val_r2", "lr") if isinstance(last.get(k), (int, float))]
        lines.append("latest: " + "  ".join(shown))
        lines.append(f"speed: {_shown(last.get('samples_per_second'), ',.0f')} samples/s, "
                     f"{_shown(last.get('epoch_seconds'), '.2f')}s/epoch "
                     f"(data wait {_shown(last.get('data_seconds'), '.2f')}s)")
    best = view.best()
    if best:
        lines.append(f"best: {best[1]} {best[2]:.4g} at epoch {best[0]}")
    lines.append("")
    lines.append("loss per epoch:")
    lines += ascii_chart({"train_loss": [e.get("train_loss") for e in view.epochs],
                          "val_loss": [e.get("val_loss") for e in view.epochs]}, width=width, height=8)
    if view.system:
        s = view.system[-1]
        lines.append("")
        lines.append(f"system: CPU {_shown(s.get('cpu_percent'), '.0f')}% (process "
                     f"{_shown(s.get('process_cpu_percent'), '.0f')}%)  RAM {_shown(s.get('ram_percent'), '.0f')}%  "
                     f"RSS {_shown(s.get('rss_mb'), ',.0f')} MB")
        for gpu in s.get("gpus", []):
            parts = [f"GPU {gpu['index']} {gpu.get('name', '')}"]
            if "util_percent" in gpu:
                parts.append(f"util {_shown(gpu['util_percent'], '.0f')}%")
            if "mem_used_mb" in gpu:
                parts.append(f"mem {_shown(gpu['mem_used_mb'], ',.0f')}/{_shown(gpu.get('mem_total_mb'), ',.0f')} MB")
            if "temperature_c" in gpu:
                parts.append(f"{_shown(gpu['temperature_c'], '.0f')} °C")
            if "power_w" in gpu:
                parts.append(f"{_shown(gpu['power_w'], '.0f')} W")
            lines.append("  " + "  ".join(parts))
    if view.skipped:
        lines.append(f"(skipped {view.skipped:,} log record(s) that were not usable: not an object, or without "
                     "their step or epoch number)")
    lines.append("")
    lines += [f"ALERT [{a.severity}] {a.name}: {a.message}" for a in alerts] or ["alerts: none"]
    return lines


def render_rich(view: RunView, alerts: list[Alert]) -> Any:
    from rich.console import Group
    from rich.panel import Panel
    from rich.text import Text

    colour = {"running": "cyan", "completed": "green", "early_stopped": "green", "failed": "red",
              "interrupted": "yellow", "lost": "red", "waiting": "white"}.get(view.status, "white")
    body = Text("\n".join(snapshot_lines(view, [], width=70)))
    parts: list[Any] = [Panel(body, title=f"[bold {colour}]{view.status.upper()}[/]", border_style=colour)]
    if alerts:
        alert_text = Text()
        for a in alerts:
            alert_text.append(f"{a.name}: ", style="bold red" if a.severity == "critical" else "bold yellow")
            alert_text.append(a.message + "\n")
        parts.append(Panel(alert_text, title="alerts", border_style="red"))
    return Group(*parts)


def follow(log_dir: Path, *, refresh: float = 2.0, once: bool = False, console: Any = None,
           max_wait_s: float | None = None) -> int:
    """Show the run until it ends (or once). Returns an exit code reflecting the run's status."""
    from rich.console import Console
    from rich.live import Live

    if not (isinstance(refresh, (int, float)) and 0 < refresh <= MAX_REFRESH_S):
        raise PipelineError(f"--refresh must be a number of seconds in (0, {MAX_REFRESH_S:.0f}], not {refresh!r}")
    console = console or Console()
    follower = RunFollower(log_dir)
    view = follower.poll()
    if follower.problem:
        raise PipelineError(f"{follower.problem}; pass the run's logs folder (SAVE_DIR/logs)")
    if once:
        for line in snapshot_lines(view, detect_alerts(view)):
            console.print(line, markup=False, highlight=False, soft_wrap=True)
        return status_lib.monitor_exit_code(view.status)
    started = time.monotonic()
    if not console.is_terminal:  # piped: a plain line per change, no screen redraws
        last_key = None
        while True:
            view = follower.poll()
            key = (view.status, len(view.epochs), view.global_step // 50)
            if key != last_key:
                alerts = detect_alerts(view)
                latest = snapshot_lines(view, alerts)
                console.print(" | ".join(l for l in latest[:4] if l), markup=False, highlight=False, soft_wrap=True)
                for alert in alerts:
                    console.print(f"ALERT {alert.name}: {alert.message}", markup=False, highlight=False, soft_wrap=True)
                last_key = key
            if view.status in TERMINAL or (max_wait_s and time.monotonic() - started > max_wait_s):
                break
            time.sleep(refresh)
    else:
        with Live(render_rich(view, detect_alerts(view)), console=console, refresh_per_second=4,
                  screen=False) as live:
            while view.status not in TERMINAL:
                if max_wait_s and time.monotonic() - started > max_wait_s:
                    break
                time.sleep(refresh)
                view = follower.poll()
                live.update(render_rich(view, detect_alerts(view)))
    for line in snapshot_lines(view, detect_alerts(view))[:3]:
        console.print(line, markup=False, highlight=False, soft_wrap=True)
    return status_lib.monitor_exit_code(view.status)


# ------------------------------------------------------------------------------------ notebook dashboard
def notebook_dashboard(log_dir: Path, *, refresh: float = 2.0, timeout_s: float = 600.0) -> RunView:
    """A live ipywidgets + matplotlib dashboard in a notebook cell; returns when the run ends."""
    import ipywidgets as widgets
    import matplotlib.pyplot as plt
    from IPython.display import display

    follower = RunFollower(Path(log_dir))
    header = widgets.HTML()
    progress = widgets.FloatProgress(min=0.0, max=1.0, description="progress")
    plot = widgets.Output()
    alerts_box = widgets.HTML()
    display(widgets.VBox([header, progress, plot, alerts_box]))
    started = time.monotonic()
    while True:
        view = follower.poll()
        total = (view.total_epochs or 1) * (view.steps_per_epoch or 1)
        progress.value = min(1.0, view.global_step / total)
        import html

        header.value = (f"<b>{html.escape(view.status.upper())}</b> — epoch "
                        f"{view.epochs[-1]['epoch'] if view.epochs else 0}/{view.total_epochs or '?'}, "
                        f"ETA {_duration(view.eta_seconds())}")
        alerts_box.value = "<br>".join(f"⚠ <b>{html.escape(a.name)}</b>: {html.escape(a.message)}"
                                       for a in detect_alerts(view)) or "no alerts"
        with plot:
            plot.clear_output(wait=True)
            figure = plot_run(view)
            plt.show()
            plt.close(figure)
        if view.status in TERMINAL or time.monotonic() - started > timeout_s:
            return view
        time.sleep(refresh)


def plot_run(view: RunView) -> Any:
    """Loss curves, the validation metric and CPU/RSS over time, as one matplotlib figure."""
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 3, figsize=(13, 3.2))
    epochs = [e["epoch"] for e in view.epochs]
    axes[0].plot(epochs, [e.get("train_loss") for e in view.epochs], label="train")
    if any("val_loss" in e for e in view.epochs):
        axes[0].plot(epochs, [e.get("val_loss") for e in view.epochs], label="validation")
    axes[0].set(title="loss", xlabel="epoch")
    axes[0].legend()
    metric = next((k for k in ("val_accuracy", "val_r2") if view.epochs and k in view.epochs[-1]), None)
    if metric:
        axes[1].plot(epochs, [e.get(metric) for e in view.epochs], color="tab:green")
        axes[1].set(title=metric, xlabel="epoch")
    if view.system:
        t0 = view.system[0]["time"]
        times = [s["time"] - t0 for s in view.system]
        axes[2].plot(times, [s.get("cpu_percent") for s in view.system], label="CPU %")
        ax2 = axes[2].twinx()
        ax2.plot(times, [s.get("rss_mb") for s in view.system], color="tab:red", label="RSS MB")
        axes[2].set(title="resources", xlabel="seconds")
    figure.tight_layout()
    return figure
