"""Experiment tracking: one small interface, several sinks (JSONL logs, TensorBoard, MLflow).

Every sink has the same three methods, so the training loop never knows who is listening:

    log_dict(metrics, step, kind)   kind: "step" | "epoch" | "system"
    log_event(record)               run start/resume, final status
    close(status)                   status: completed | early_stopped | failed | interrupted

`Tracker` fans a call out to all sinks and keeps one failing sink from stopping training.
The MLflow sink does its network work on a background thread with short timeouts and bounded retries:
an unreachable server costs one warning, never a stall; buffered metrics are replayed when it returns.
"""
from __future__ import annotations

import os
import queue
import socket
import threading
import time
import warnings
from pathlib import Path
from typing import Any, Protocol

from pipeline import fileio

# MLflow run statuses for our run statuses
MLFLOW_STATUS = {"completed": "FINISHED", "early_stopped": "FINISHED", "failed": "FAILED",
                 "interrupted": "KILLED", "running": "RUNNING"}


class Sink(Protocol):
    def log_dict(self, metrics: dict[str, float], step: int, kind: str) -> None: ...
    def log_event(self, record: dict[str, Any]) -> None: ...
    def close(self, status: str) -> None: ...


class Tracker:
    """Fan-out to sinks. A sink that raises is reported once and dropped; training goes on."""

    def __init__(self, sinks: list[Sink]):
        self.sinks = list(sinks)

    def _each(self, method: str, *args: Any) -> None:
        for sink in list(self.sinks):
            try:
                getattr(sink, method)(*args)
            except Exception as exc:  # a broken sink must not end the run; local JSONL is the record
                warnings.warn(f"{type(sink).__name__} failed ({type(exc).__name__}: {exc}); disabled for this run",
                              stacklevel=2)
                self.sinks.remove(sink)

    def log_dict(self, metrics: dict[str, float], step: int, kind: str = "step") -> None:
        self._each("log_dict", metrics, step, kind)

    def log_event(self, record: dict[str, Any]) -> None:
        self._each("log_event", record)

    def close(self, status: str) -> None:
        self._each("close", status)


# ------------------------------------------------------------------------------------------------ JSONL
class JsonlSink:
    """`logs/metrics.jsonl` (step, epoch and event records) and `logs/system.jsonl` (resource samples).

    Step records are buffered and appended in whole lines at each epoch boundary or every `flush_every`
    records, so the monitor sees progress without a write per step.
    """

    def __init__(self, log_dir: Path, flush_every: int = 50):
        self.log_dir = Path(log_dir)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.metrics_path = self.log_dir / "metrics.jsonl"
        self.system_path = self.log_dir / "system.jsonl"
        self.flush_every = flush_every
        self._buffer: list[dict[str, Any]] = []

    def log_dict(self, metrics: dict[str, float], step: int, kind: str) -> None:
        record = {"type": kind, "time": time.time(), "step": step, **metrics}
        if kind == "system":
            fileio.append_jsonl(self.system_path, [record])
            return
        self._buffer.append(record)
        if kind != "step" or len(self._buffer) >= self.flush_every:
            self.flush()

    def log_event(self, record: dict[str, Any]) -> None:
        self._buffer.append({"time": time.time(), **record})
        self.flush()

    def flush(self) -> None:
        fileio.append_jsonl(self.metrics_path, self._buffer)
        self._buffer = []

    def close(self, status: str) -> None:
        self.flush()

    @staticmethod
    def truncate_after(log_dir: Path, step: int) -> None:
        """On resume: drop step/epoch records after `step` (they will be produced again), keep events.

        Rewritten atomically, so the file never holds a step twice."""
        path = Path(log_dir) / "metrics.jsonl"
        if not path.exists():
            return
        kept = [r for r in fileio.read_jsonl(path)
                if r.get("type") not in ("step", "epoch") or int(r.get("step", 0)) <= step]
        payload = "".join(fileio.dumps_strict(r) + "\n" for r in kept).encode("utf-8")
        fileio.atomic_write_bytes(path, payload)


# ------------------------------------------------------------------------------------------ TensorBoard
class TensorBoardSink:
    """TensorBoard event files under `logs/`. Tags are grouped: train/*, epoch/*, system/*.

    `purge_step` makes TensorBoard discard events at or after that step left by an interrupted run."""

    def __init__(self, log_dir: Path, purge_step: int | None = None):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(log_dir), purge_step=purge_step, flush_secs=10)
        self._hparams: tuple[dict, dict] | None = None

    def log_dict(self, metrics: dict[str, float], step: int, kind: str) -> None:
        prefix = {"step": "train", "epoch": "epoch", "system": "system"}[kind]
        for name, value in metrics.items():
            if isinstance(value, (int, float)) and value is not None:
                self.writer.add_scalar(f"{prefix}/{name}", value, step)
        if kind == "epoch":
            self.writer.flush()

    def set_hparams(self, hparams: dict[str, Any], final_metrics: dict[str, float]) -> None:
        self._hparams = (hparams, final_metrics)

    def log_event(self, record: dict[str, Any]) -> None:
        pass

    def close(self, status: str) -> None:
        if self._hparams is not None:
            hparams, final = self._hparams
            clean = {k: (v if isinstance(v, (int, float, str, bool)) else str(v)) for k, v in hparams.items()
                     if v is not None}
            self.writer.add_hparams(clean, {f"hparam/{k}": v for k, v in final.items() if v is not None},
                                    run_name="hparams")
        self.writer.close()


# ----------------------------------------------------------------------------------------------- MLflow
def configure_mlflow_http(timeout_s: int = 5, max_retries: int = 1) -> None:
    """Short timeouts and few retries, unless the user chose otherwise (MLflow's defaults block ~4 min)."""
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(timeout_s))
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", str(max_retries))
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")


def default_tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or "sqlite:///mlflow.db"


class MlflowSink:
    """Logs to an MLflow run from a background thread.

    The loop only enqueues. The worker creates (or re-attaches to) the run, then sends metrics in
    batches. On failure it warns once, keeps the metrics (bounded buffer) and retries with backoff; when
    the server answers again the buffer is replayed with the original steps and timestamps.
    """

    MAX_BUFFER = 200_000

    def __init__(self, tracking_uri: str, experiment_name: str, run_name: str, *, run_id: str | None = None,
                 params: dict[str, Any] | None = None, tags: dict[str, str] | None = None,
                 close_timeout_s: float = 20.0, flush_interval_s: float = 2.0):
        configure_mlflow_http()
        self.tracking_uri = tracking_uri
        self.experiment_name = experiment_name
        self.run_name = run_name
        self.run_id = run_id
        self.experiment_id: str | None = None
        self.close_timeout_s = close_timeout_s
        self.flush_interval_s = flush_interval_s
        self._closing: str | None = None
        self._params = params or {}
        self._tags = tags or {}
        self._queue: "queue.Queue[tuple[str, Any]]" = queue.Queue()
        self._pending: list[Any] = []  # mlflow Metric entities not yet accepted by the server
        self._artifacts: list[tuple[str, str | None]] = []
        self._extra: list[Any] = []  # callables run with (client, run_id) at the end, best effort
        self._warned = False
        self.dropped = 0
        self.connected = threading.Event()
        self._thread = threading.Thread(target=self._work, name="mlflow-sink", daemon=True)
        self._thread.start()

    # ---- called from the training loop: never blocks on the network
    def log_dict(self, metrics: dict[str, float], step: int, kind: str) -> None:
        stamp = int(time.time() * 1000)
        named = {("step_" + k if kind == "step" else k): v for k, v in metrics.items()
                 if isinstance(v, (int, float)) and v is not None}
        self._queue.put(("metrics", (named, step, stamp)))

    def log_event(self, record: dict[str, Any]) -> None:
        pass

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        self._queue.put(("artifact", (str(path), artifact_path)))

    def at_close(self, action: Any) -> None:
        """Run `action(client, run_id)` on the worker before the run ends (e.g. log the model)."""
        self._queue.put(("call", action))

    def info(self) -> dict[str, str | None] | None:
        if self.run_id is None:
            return None
        return {"tracking_uri": self.tracking_uri, "experiment_id": self.experiment_id, "run_id": self.run_id}

    def close(self, status: str) -> None:
        self._queue.put(("close", MLFLOW_STATUS.get(status, "FINISHED")))
        self._thread.join(self.close_timeout_s)
        if self._thread.is_alive() or self._pending:
            warnings.warn(f"MLflow at {self.tracking_uri} did not take {len(self._pending)} metric value(s) in time; "
                          "the local logs (metrics.json, logs/) are complete", stacklevel=2)

    # ---- the worker thread
    def _warn(self, what: str, exc: Exception) -> None:
        if not self._warned:
            self._warned = True
            first = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
            warnings.warn(f"MLflow tracking at {self.tracking_uri} is unavailable ({what}: {first}); training "
                          "continues, metrics are kept and sent when it answers", stacklevel=2)

    def _connect(self, client: Any) -> None:
        if self.run_id is not None:
            run = client.get_run(self.run_id)
            self.experiment_id = run.info.experiment_id
            client.update_run(self.run_id, status="RUNNING")
        else:
            experiment = client.get_experiment_by_name(self.experiment_name)
            self.experiment_id = (experiment.experiment_id if experiment is not None
                                  else client.create_experiment(self.experiment_name))
            run = client.create_run(self.experiment_id, run_name=self.run_name, tags=self._tags)
            self.run_id = run.info.run_id
            from mlflow.entities import Param

            params = [Param(k, str(v)[:6000]) for k, v in sorted(self._params.items())]
            for i in range(0, len(params), 100):
                client.log_batch(self.run_id, params=params[i:i + 100])
        self.connected.set()

    def _flush(self, client: Any) -> None:
        while self._pending:
            chunk = self._pending[:1000]
            client.log_batch(self.run_id, metrics=chunk, synchronous=True)
            del self._pending[:len(chunk)]

    def _accept(self, item: tuple[str, Any]) -> None:
        from mlflow.entities import Metric

        kind, payload = item
        if kind == "metrics":
            named, step, stamp = payload
            self._pending.extend(Metric(k, float(v), stamp, step) for k, v in named.items())
            if len(self._pending) > self.MAX_BUFFER:
                self.dropped += len(self._pending) - self.MAX_BUFFER
                del self._pending[: len(self._pending) - self.MAX_BUFFER]
        elif kind == "artifact":
            self._artifacts.append(payload)
        elif kind == "call":
            self._extra.append(payload)
        elif kind == "close":
            self._closing = payload

    def _work(self) -> None:
        """Drain the queue; send at most every `flush_interval_s` (each send is a database transaction or an
        HTTP request: doing one per record would compete with the training loop for the interpreter)."""
        from mlflow import MlflowClient

        client = MlflowClient(tracking_uri=self.tracking_uri)
        backoff, next_send, deadline = 1.0, 0.0, None
        while True:
            waiting = self._pending or not self.connected.is_set()
            timeout = max(0.05, next_send - time.monotonic()) if waiting else None
            try:
                self._accept(self._queue.get(timeout=timeout))
                while True:
                    self._accept(self._queue.get_nowait())
            except queue.Empty:
                pass
            if self._closing is not None and deadline is None:
                deadline = time.monotonic() + self.close_timeout_s * 0.8
            if self._closing is None and time.monotonic() < next_send:
                continue
            try:
                if not self.connected.is_set():
                    self._connect(client)
                self._flush(client)
                backoff, next_send = 1.0, time.monotonic() + self.flush_interval_s
            except Exception as exc:
                self._warn("sending metrics", exc)
                next_send = time.monotonic() + backoff
                backoff = min(backoff * 2, 30.0)
                if self._closing is not None:
                    if time.monotonic() + backoff >= deadline:
                        return
                    time.sleep(backoff)
                continue
            if self._closing is not None:
                self._finish(client, self._closing)
                return

    def _finish(self, client: Any, status: str) -> None:
        for local, artifact_path in self._artifacts:
            try:
                client.log_artifact(self.run_id, local, artifact_path)
            except Exception as exc:
                self._warn(f"artifact {Path(local).name}", exc)
        for action in self._extra:
            try:
                action(client, self.run_id)
            except Exception as exc:
                self._warn("final logging", exc)
        try:
            client.set_terminated(self.run_id, status=status)
        except Exception as exc:
            self._warn("ending the run", exc)


def host_name() -> str:
    return socket.gethostname()
