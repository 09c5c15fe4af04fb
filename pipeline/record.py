"""`metrics.json`: the run record, rewritten atomically after every epoch and at the end — and read back.

    record = RunRecord(save_dir, config=..., schema=..., state=state, device="cpu", amp="off", ...)
    record.write()                                   # status "running", with pid and host
    metrics = read_record(save_dir)                  # what a finished (or running) run wrote, or None

Strict JSON (no NaN/Infinity). The format is the one README.md documents ("What a training run writes"): run,
config, data, progress, epochs, best, test, baselines, uncertainty, verdict, system. Built from the training state
each time, so it always says what the last checkpoint says.
"""
from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pipeline import fileio, runtime, tracking
from pipeline.checkpoint import TrainingState
from pipeline.rundir import RunDir

SCHEMA_VERSION = 1


class RunRecord:
    """Builds and atomically rewrites `metrics.json` from the training state and the run's fixed facts."""

    def __init__(self, save_dir: Path, *, config: dict[str, Any], schema: dict[str, Any], n_features: int,
                 state: TrainingState, device: str, amp: str, monitor_metric: str,
                 tracking_info: Callable[[], dict[str, Any]], system_summary: Callable[[], dict[str, Any]],
                 world_size: int = 1, enabled: bool = True):
        self.path = RunDir(save_dir).metrics
        self.config, self.schema, self.n_features, self.state = config, schema, n_features, state
        self.device, self.amp, self.monitor_metric = device, amp, monitor_metric
        self.tracking_info, self.system_summary = tracking_info, system_summary
        self.test: dict[str, Any] | None = None
        self.baselines: dict[str, Any] | None = None
        self.uncertainty: dict[str, Any] | None = None   # how the test intervals were computed
        self.verdict: dict[str, Any] | None = None       # the network against the best baseline
        self.ended_at: str | None = None
        self.message = ""
        self.versions = runtime.versions()
        self.git_commit = tracking.source_tags().get("mlflow.source.git.commit")  # the code that trained
        self.world_size = world_size
        self.enabled = enabled  # under torchrun only rank 0 writes

    def build(self) -> dict[str, Any]:
        s, schema = self.state, self.schema
        best = None
        if s.best_epoch is not None:
            best = {"epoch": s.best_epoch, "metric": self.monitor_metric, "value": s.best_value,
                    "values": best_values(s.history, s.best_epoch)}
        system = dict(self.system_summary())
        if s.history:
            data_s = sum(h.get("data_seconds", 0.0) for h in s.history)
            total_s = sum(h.get("epoch_seconds", 0.0) for h in s.history)
            system["data_wait_fraction"] = round(data_s / total_s, 4) if total_s else None
        return {
            "schema_version": SCHEMA_VERSION,
            "run": {"name": s.run_name, "key": s.run_key, "status": s.status, "started_at": s.started_at, "ended_at": self.ended_at,
                    "message": self.message, "device": self.device, "amp": self.amp,
                    "pid": os.getpid(), "host": tracking.host_name(), "resumed": s.resumed,
                    "world_size": self.world_size,
                    "effective_batch_size": self.config["batch_size"] * self.world_size,
                    "mlflow": self.tracking_info().get("mlflow"), "versions": self.versions,
                    "git_commit": self.git_commit},
            "config": self.config,
            "data": {"task": schema["task"], "target": schema["target"], "classes": schema["classes"],
                     "n_features": self.n_features, "features": schema["features"]["processed"],
                     "original_features": schema["features"]["original"], "rows": schema["rows"],
                     "class_counts": schema.get("class_counts"), "source": schema["source"]["path"],
                     "source_sha256": schema["source"]["sha256"], "data_sha256": schema["data_sha256"]},
            "progress": {"epoch": s.epoch, "global_step": s.global_step, "total_epochs": self.config["epochs"]},
            "epochs": s.history,
            "best": best,
            "test": self.test,
            "baselines": self.baselines,
            "uncertainty": self.uncertainty,
            "verdict": self.verdict,
            "system": system,
        }

    def write(self) -> None:
        if not self.enabled:
            return
        fileio.atomic_write_json(self.path, self.build(), durable=False)

    def finish(self, message: str = "") -> None:
        """The run has ended with `state.status`: stamp the end time and the closing message."""
        self.ended_at = runtime.now()
        self.message = message
        self.write()


def best_values(history: list[dict[str, Any]], best_epoch: int | None) -> dict[str, Any]:
    """The best epoch's validation scores under `best_` names ({"best_epoch": 3, "best_val_loss": ...,
    "best_val_<m>": ...}): what the engine keeps and exports, so a search for the best run finds it. {} before
    the first epoch that counted."""
    if best_epoch is None:
        return {}
    entry = next((h for h in history if h.get("epoch") == best_epoch), {})
    return {"best_epoch": best_epoch, **{f"best_{k}": v for k, v in entry.items()
                                         if k.startswith("val_") and isinstance(v, (int, float))
                                         and not isinstance(v, bool)}}


def read_record(save_dir: Path) -> dict[str, Any] | None:
    """The `metrics.json` a run wrote in `save_dir`, or None when there is none (yet)."""
    return fileio.read_json(RunDir(save_dir).metrics)
