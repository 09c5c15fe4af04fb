"""Following a run from its log folder: `RunView` (everything known about the run) and `RunFollower`, which
polls the logs and, when they vanish, takes the final status from the run's metrics.json."""
from __future__ import annotations

import math
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from pipeline import fileio, metrics, status as status_lib
from pipeline.logs import JsonlTail, clean_record
from pipeline.rundir import METRICS_LOG, SYSTEM_LOG, RunDir

TERMINAL = status_lib.TERMINAL

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
        self.metrics_tail = JsonlTail(self.log_dir / METRICS_LOG)
        self.system_tail = JsonlTail(self.log_dir / SYSTEM_LOG)

    @property
    def problem(self) -> str | None:
        """Why metrics.jsonl could not be read at the last poll (it exists but is a folder or unreadable)."""
        return self.metrics_tail.problem

    def poll(self) -> RunView:
        records, reset = self.metrics_tail.poll()
        if reset:
            self.view = RunView(self.log_dir)
            self.system_tail = JsonlTail(self.log_dir / SYSTEM_LOG)
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
        summary = _read_json(RunDir.from_logs(self.log_dir).metrics)
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
