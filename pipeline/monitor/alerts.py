"""What deserves attention in a run, as a pure function of its parsed history (`detect_alerts`)."""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

from pipeline import metrics
from pipeline.monitor.following import RunView

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
