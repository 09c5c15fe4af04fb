"""Resource sampling: CPU, RAM, process RSS and, through NVML, every GPU's utilisation, memory,
temperature and power — on a background thread while training runs.

    sampler = SystemSampler(interval_s=2.0, sink=lambda sample: print(sample))
    sampler.start(); ...; sampler.stop()

NVML is optional. No GPU or no driver gives one note and CPU metrics only; a query a GPU does not support
(power on some boards, say) is dropped for that GPU alone, never the whole sample and never the run.
"""
from __future__ import annotations

import os
import threading
import time
import warnings
from collections.abc import Callable
from typing import Any

import psutil

GPU_QUERIES = ("util_percent", "mem_used_mb", "mem_total_mb", "temperature_c", "power_w")


class Nvml:
    """A thin, failure-tolerant view of NVML. `available` is False when there is nothing to read."""

    def __init__(self, module: Any | None = None):
        self.notes: list[str] = []
        self.available = False
        self.handles: list[Any] = []
        self.names: list[str] = []
        self._disabled: set[tuple[int, str]] = set()
        try:
            self.nvml = module if module is not None else __import__("pynvml")
            self.nvml.nvmlInit()
            count = self.nvml.nvmlDeviceGetCount()
            for index in range(count):
                handle = self.nvml.nvmlDeviceGetHandleByIndex(index)
                name = self.nvml.nvmlDeviceGetName(handle)
                self.handles.append(handle)
                self.names.append(name.decode() if isinstance(name, bytes) else str(name))
            self.available = count > 0
            if not self.available:
                self.notes.append("NVML found no GPU; sampling CPU and memory only")
        except Exception as exc:  # ImportError, NVMLError (no driver), anything odd: CPU-only sampling
            self.notes.append(f"GPU metrics unavailable ({type(exc).__name__}: {exc}); sampling CPU and memory only")

    def _query(self, index: int, handle: Any, what: str) -> float | None:
        if (index, what) in self._disabled:
            return None
        nvml = self.nvml
        try:
            if what == "util_percent":
                return float(nvml.nvmlDeviceGetUtilizationRates(handle).gpu)
            if what in ("mem_used_mb", "mem_total_mb"):
                info = nvml.nvmlDeviceGetMemoryInfo(handle)
                return (info.used if what == "mem_used_mb" else info.total) / 2**20
            if what == "temperature_c":
                return float(nvml.nvmlDeviceGetTemperature(handle, nvml.NVML_TEMPERATURE_GPU))
            if what == "power_w":
                return nvml.nvmlDeviceGetPowerUsage(handle) / 1000.0
        except Exception as exc:
            self._disabled.add((index, what))
            self.notes.append(f"GPU {index}: {what} unavailable ({type(exc).__name__}); other metrics continue")
        return None

    def sample(self) -> list[dict[str, Any]]:
        gpus = []
        for index, handle in enumerate(self.handles):
            entry: dict[str, Any] = {"index": index, "name": self.names[index]}
            for what in GPU_QUERIES:
                value = self._query(index, handle, what)
                if value is not None:
                    entry[what] = round(value, 2)
            gpus.append(entry)
        return gpus

    def close(self) -> None:
        if self.available:
            try:
                self.nvml.nvmlShutdown()
            except Exception:
                pass


def sample_once(process: psutil.Process, nvml: Nvml | None) -> dict[str, Any]:
    """One resource sample (CPU % since the previous call)."""
    memory = psutil.virtual_memory()
    with process.oneshot():
        rss = process.memory_info().rss
        process_cpu = process.cpu_percent(None)
    sample: dict[str, Any] = {
        "time": time.time(),
        "cpu_percent": psutil.cpu_percent(None),
        "process_cpu_percent": process_cpu,
        "ram_used_mb": round((memory.total - memory.available) / 2**20, 1),
        "ram_total_mb": round(memory.total / 2**20, 1),
        "ram_percent": memory.percent,
        "rss_mb": round(rss / 2**20, 1),
    }
    if nvml is not None and nvml.available:
        sample["gpus"] = nvml.sample()
    return sample


class SystemSampler:
    """Calls `sink(sample)` every `interval_s` seconds on a daemon thread until `stop()`.

    Keeps running totals for the run summary. An exception in the sink or a query is reported once and
    sampling goes on; training never sees it."""

    def __init__(self, interval_s: float, sink: Callable[[dict[str, Any]], None], *, nvml: Nvml | None = None,
                 use_nvml: bool = True, warn: Callable[[str], None] | None = None):
        self.interval_s = interval_s
        self.sink = sink
        self.nvml = nvml if nvml is not None else (Nvml() if use_nvml else None)
        self.warn = warn or (lambda message: warnings.warn(message, stacklevel=2))
        self.process = psutil.Process(os.getpid())
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="system-sampler", daemon=True)
        self._errors = 0
        self._notes_reported = 0
        self.count = 0
        self.summary: dict[str, Any] = {"samples": 0, "cpu_percent_mean": None, "rss_mb_max": None,
                                        "ram_percent_max": None, "gpus": {}}
        self._cpu_total = 0.0

    def start(self) -> "SystemSampler":
        psutil.cpu_percent(None)
        self.process.cpu_percent(None)
        self._thread.start()
        return self

    def _report_notes(self) -> None:
        if self.nvml is None:
            return
        for note in self.nvml.notes[self._notes_reported:]:
            self.warn(note)
        self._notes_reported = len(self.nvml.notes)

    def _update_summary(self, sample: dict[str, Any]) -> None:
        s = self.summary
        self.count += 1
        self._cpu_total += sample["cpu_percent"]
        s["samples"] = self.count
        s["cpu_percent_mean"] = round(self._cpu_total / self.count, 1)
        s["rss_mb_max"] = max(s["rss_mb_max"] or 0.0, sample["rss_mb"])
        s["ram_percent_max"] = max(s["ram_percent_max"] or 0.0, sample["ram_percent"])
        for gpu in sample.get("gpus", []):
            entry = s["gpus"].setdefault(str(gpu["index"]), {"name": gpu["name"]})
            for key in ("util_percent", "mem_used_mb", "temperature_c", "power_w"):
                if key in gpu:
                    entry[f"{key}_max"] = max(entry.get(f"{key}_max", 0.0), gpu[key])

    def sample_now(self) -> None:
        try:
            sample = sample_once(self.process, self.nvml)
            self._update_summary(sample)
            self.sink(sample)
        except Exception as exc:
            self._errors += 1
            if self._errors == 1:
                self.warn(f"resource sampling failed ({type(exc).__name__}: {exc}); training continues")
        self._report_notes()

    def _run(self) -> None:
        self._report_notes()
        while not self._stop.wait(self.interval_s):
            self.sample_now()
        self.sample_now()  # a last sample, so even a short run has one

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        if self.nvml is not None:
            self.nvml.close()
