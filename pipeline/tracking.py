"""Experiment tracking: one small interface, several sinks (JSONL logs, TensorBoard, MLflow, yours).

Every sink has the same three methods, so the training loop never knows who is listening:

    log_dict(metrics, step, kind)   kind: "step" | "epoch" | "system" | "test" | "best"
    log_event(record)               run metadata and status changes (a dict with a "type"); ignore what you don't use
    close(status)                   status: completed | early_stopped | failed | interrupted (pipeline.status)

What a sink receives, in order:
- `log_event({"type": "run", ...})` once at the start (and at each resume): pid, host, epochs, steps per
  epoch, start step, device, task, the monitored metric, `logs` (the folder) and `config` (every setting).
- `log_event({"type": "checkpoint", "step": N, "epoch": E})` after each last.pt: everything up to step N is
  final (a resume after a kill redoes only later steps).
- `log_dict(..., "step")` every --log-every batches (loss, lr, epoch); `log_dict(..., "epoch")` after each
  epoch (train_loss, val_* metrics, lr, timings); `log_dict(sample, step, "system")` for each resource sample
  (cpu_percent, ram_percent, rss_mb, ... and `gpus`: a list of per-GPU dicts; `flatten_sample` flattens it).
- at the end of a finished run: `log_dict(best, step, "best")` (`best_epoch`, `best_val_loss`, `best_val_<m>`:
  the epoch whose weights the run keeps), `log_dict(test_scores, step, "test")` (those weights on the test split),
  `log_event({"type": "model", "path": model.safetensors, "artifacts": [[path, folder], ...], ...})`;
  `log_event({"type": "baselines", "scores": {...}})` unless --no-baselines; then
  `log_event({"type": "artifact", "path": metrics.json})`, `log_event({"type": "status", ...})`, `close`.
Every value is plain JSON. A sink may ask the run to stop: raising `StopTraining(reason)` from `log_dict(...,
"epoch")` ends the run after that epoch as early-stopped, with `reason` as its message (how `pipeline.tune`
prunes a trial); everything else a sink raises only disables that sink. A sink may also offer the Protocol's optional fourth method, `info() -> dict`
(MLflow's run id, for instance); the run record shows what sinks say there. The run event carries `hparams`
too: the settings that identify the run (those a resume may change, such as `epochs`, left out).

`Tracker` fans a call out to all sinks and keeps one failing sink from stopping training; `open_tracker`
builds the sinks a run asks for. The MLflow sink (`pipeline.mlflow_sink`, re-exported here) does its network
work on a background thread with short timeouts and bounded retries: an unreachable server costs one warning,
never a stall; buffered metrics are replayed when it returns.
"""
from __future__ import annotations

import socket
import threading
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from pipeline import fileio, rundir, status as status_lib
from pipeline.logs import flatten_sample, numbers  # noqa: F401  (part of this module's interface)
from pipeline.mlflow_sink import (MLFLOW_STATUS, RUN_KEY_TAG, MlflowSink, artifact_root,  # noqa: F401
                                  configure_mlflow_http, default_tracking_uri, git_commit, source_tags)


class Sink(Protocol):
    def log_dict(self, metrics: dict[str, Any], step: int, kind: str) -> None: ...
    def log_event(self, record: dict[str, Any]) -> None: ...
    def close(self, status: str) -> None: ...

    def info(self) -> dict[str, Any]:
        """Optional: what the sink says about itself for the run record (MLflow: its run id). A sink that
        does not define it says nothing."""
        return {}


class StopTraining(Exception):
    """Raised by a sink's `log_dict(..., "epoch")`: end the run after this epoch, early-stopped, for `reason`."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class Tracker:
    """Fan-out to sinks. A sink that raises is reported once and dropped; training goes on (a sink that raises
    StopTraining is kept, and the request is kept in `stop_requested` for the loop to act on)."""

    def __init__(self, sinks: list[Sink]):
        self.sinks = list(sinks)
        self.stop_requested: str | None = None
        self._lock = threading.Lock()  # the resource sampler logs from its own thread

    def _each(self, method: str, *args: Any) -> None:
        with self._lock:
            sinks = list(self.sinks)
        for sink in sinks:
            try:
                getattr(sink, method)(*args)
            except StopTraining as request:
                self.stop_requested = self.stop_requested or request.reason
            except Exception as exc:  # a broken sink must not end the run; local JSONL is the record
                warnings.warn(f"{type(sink).__name__} failed ({type(exc).__name__}: {exc}); disabled for this run",
                              stacklevel=3)
                with self._lock:
                    if sink in self.sinks:
                        self.sinks.remove(sink)

    def log_dict(self, metrics: dict[str, Any], step: int, kind: str = "step") -> None:
        self._each("log_dict", metrics, step, kind)

    def log_event(self, record: dict[str, Any]) -> None:
        self._each("log_event", record)

    def close(self, status: str) -> None:
        self._each("close", status)

    def info(self) -> dict[str, Any]:
        """What the sinks say about themselves (e.g. {"mlflow": {"run_id": ...}}), for the run record."""
        found: dict[str, Any] = {}
        for sink in list(self.sinks):
            describe = getattr(sink, "info", None)
            if callable(describe):
                try:
                    found.update(describe() or {})
                except Exception:  # a description is a courtesy, never a reason to stop
                    pass
        return found


def open_tracker(log_dir: Path, *, resume_step: int | None, tensorboard: bool, mlflow: bool,
                 tracking_uri: str | None, experiment_name: str, run_name: str, mlflow_run_id: str | None,
                 tags: dict[str, str], extra: Sequence[Sink] = ()) -> Tracker:
    """The JSONL logs always; TensorBoard and MLflow when asked; then the caller's own sinks.

    `resume_step`: the step a resumed run continues from (its later records are dropped and re-made)."""
    if resume_step is not None:
        JsonlSink.truncate_after(log_dir, resume_step)
    sinks: list[Sink] = [JsonlSink(log_dir)]
    if tensorboard:
        sinks.append(TensorBoardSink(log_dir, purge_step=resume_step + 1 if resume_step is not None else None))
    if mlflow:
        sinks.append(MlflowSink(tracking_uri or default_tracking_uri(), experiment_name, run_name,
                                run_id=mlflow_run_id, tags=tags))
    return Tracker(sinks + list(extra))


# ------------------------------------------------------------------------------------------------ JSONL
class JsonlSink:
    """`logs/metrics.jsonl` (step, epoch, test records and the run/status events) and `logs/system.jsonl`
    (resource samples, as sampled: GPUs as a list).

    Step records are buffered and appended in whole lines at each epoch boundary or every `flush_every`
    records, so the monitor sees progress without a write per step. Events other than run and status
    (model, artifact) are for sinks that store files, and are not written here.
    """

    EVENTS = ("run", "status")

    def __init__(self, log_dir: Path, flush_every: int = 50):
        self.log_dir = Path(log_dir)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.metrics_path = self.log_dir / rundir.METRICS_LOG
        self.system_path = self.log_dir / rundir.SYSTEM_LOG
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
        if record.get("type") not in self.EVENTS:
            return
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
        path = Path(log_dir) / rundir.METRICS_LOG
        if not path.exists():
            return
        kept = [r for r in fileio.read_jsonl(path)
                if r.get("type") not in ("step", "epoch") or int(r.get("step", 0)) <= step]
        payload = "".join(fileio.dumps_strict(r) + "\n" for r in kept).encode("utf-8")
        fileio.atomic_write_bytes(path, payload)


# ------------------------------------------------------------------------------------------ TensorBoard
class TensorBoardSink:
    """TensorBoard event files under `logs/`, in the Keras layout: TensorBoard overlays *runs* in one chart, never
    two tags of one run, so train and validation of a metric are two run folders with the same tag.

        logs/             batch_loss, batch_learning_rate       x = global step (every --log-every batches)
                          system/cpu_percent, system/process_cpu_percent, system/ram_used_mb,
                          system/ram_percent, system/rss_mb, system/gpu<i>_<util_percent|mem_used_mb|...>
                          and, for a finished run, its settings and scores on the HParams tab
        logs/train/       epoch_loss, epoch_learning_rate, epoch_seconds, epoch_samples_per_second,
                          epoch_data_seconds, epoch_compute_seconds                       x = epoch (1, 2, ...)
        logs/validation/  epoch_loss, epoch_<metric> (epoch_accuracy, epoch_f1_macro, ...)  x = epoch
        logs/test/        epoch_<metric>: one point, at the epoch whose weights the run keeps (best_epoch)

    So the `epoch_loss` chart has a train and a validation line (and `epoch_accuracy` a test dot on the kept
    epoch). Left out: the epoch number as a value, constants (`ram_total_mb`, a GPU's `mem_total_mb`), the
    `best_*` record (the validation line at best_epoch) and the test intervals (metrics.json and MLflow have them).

    Each folder holds one x-axis, because TensorBoard's purge is per folder: a resumed run (`purge_step`: the
    first global step it redoes) writes a restart marker in each folder at the first step it will write again,
    the global step in `logs/`, the epoch in `train/` and `validation/` (from the run event's `start_epoch`),
    and everything in `test/`, so every point is there once. Hparams keep their types (booleans as booleans,
    numbers as numbers, the rest as text) and are written with the run's own writer (no extra run folder)."""

    RUNS = ("train", "validation", "test")
    CONSTANT = ("_total_mb",)  # system values that never change during a run
    NAMES = {"train_loss": "loss", "lr": "learning_rate"}  # Keras's names

    def __init__(self, log_dir: Path, purge_step: int | None = None):
        from torch.utils.tensorboard import SummaryWriter

        self.log_dir = Path(log_dir)
        self.resumed = purge_step is not None
        self.writer = SummaryWriter(log_dir=str(log_dir), purge_step=purge_step, flush_secs=10)
        self._runs: dict[str, Any] = {}   # train / validation / test writers, made when first needed
        self._start_epoch = 0             # epochs already final when this process started
        self._last_epoch = 0
        self._best_epoch: int | None = None
        self._hparams: dict[str, Any] = {}

    def _run(self, name: str) -> Any:
        """The writer of `logs/<name>/`; on a resume it first purges what the folder holds past the final part."""
        if name not in self._runs:
            from torch.utils.tensorboard import SummaryWriter

            purge = None
            if self.resumed:
                purge = 0 if name == "test" else self._start_epoch + 1  # test scores are always made again
            self._runs[name] = SummaryWriter(log_dir=str(self.log_dir / name), purge_step=purge, flush_secs=10)
        return self._runs[name]

    def _epoch_scalar(self, run: str, name: str, value: float, epoch: int) -> None:
        tag = name if name.startswith("epoch_") else f"epoch_{name}"
        self._run(run).add_scalar(tag, value, epoch)

    def log_dict(self, metrics: dict[str, Any], step: int, kind: str) -> None:
        if kind == "system":
            for name, value in flatten_sample(metrics).items():
                if not name.endswith(self.CONSTANT):
                    self.writer.add_scalar(f"system/{name}", value, step)
            return
        values = numbers(metrics)
        if kind == "step":
            for name, value in values.items():
                if name != "epoch":  # the x-axis is the global step; the epoch number is no metric
                    self.writer.add_scalar(f"batch_{self.NAMES.get(name, name)}", value, step)
        elif kind == "epoch":
            epoch = int(values.pop("epoch", self._last_epoch + 1))
            self._last_epoch = epoch
            for name, value in values.items():
                if name.startswith("val_"):
                    self._epoch_scalar("validation", name[len("val_"):], value, epoch)
                else:
                    self._epoch_scalar("train", self.NAMES.get(name, name), value, epoch)
            for run in ("train", "validation"):
                if run in self._runs:
                    self._runs[run].flush()
        elif kind == "best":
            self._best_epoch = int(values["best_epoch"]) if "best_epoch" in values else None
        elif kind == "test":
            at = self._best_epoch or self._last_epoch or self._start_epoch
            for name, value in values.items():
                if not name.endswith(("_ci_low", "_ci_high")):
                    self._epoch_scalar("test", name.removeprefix("test_"), value, at)
            self._run("test").flush()

    def log_event(self, record: dict[str, Any]) -> None:
        if record.get("type") == "run":  # the engine sends the settings without those a resume may change
            self._hparams = dict(record.get("hparams") or record.get("config") or {})
            self._start_epoch = int(record.get("start_epoch") or 0)
            if self.resumed and (self.log_dir / "test").is_dir():
                self._run("test")  # drop the scores of the run being continued now, not only at its end

    def close(self, status: str) -> None:
        if status in status_lib.FINISHED and self._hparams:
            for summary in hparams_summaries(self._hparams):
                self.writer.file_writer.add_summary(summary)
        for writer in [self.writer, *self._runs.values()]:
            writer.close()


def hparams_summaries(hparams: dict[str, Any]) -> list[Any]:
    """The HParams tab's session start (the settings, typed) and end summaries for one finished run, to be written
    by the run's own writer as PyTorch Lightning does (`SummaryWriter.add_hparams` makes a run folder of its own).

    Built from TensorBoard's own protos, not torch's `summary.hparams`: that one stores booleans as 1.0 (a bool
    is an int in Python). No experiment summary: TensorBoard uses the first one it finds for every run it shows,
    while without one it derives the columns from all runs' settings and the scalars of their folders (what
    Keras's hparams callback relies on too). Numbers are doubles in the protocol (the HParams table prints
    5 significant digits: 64.000); integers stay exact, lists and mappings become their JSON text."""
    from tensorboard.compat.proto.summary_pb2 import Summary
    from tensorboard.compat.proto.tensor_pb2 import TensorProto
    from tensorboard.compat.proto.tensor_shape_pb2 import TensorShapeProto
    from tensorboard.compat.proto.types_pb2 import DT_FLOAT
    from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2

    start = plugin_data_pb2.SessionStartInfo(start_time_secs=time.time())
    for name, value in hparams.items():
        if value is None:
            continue
        if isinstance(value, bool):  # before int: True is an int too
            start.hparams[name].bool_value = value
        elif isinstance(value, (int, float)):
            start.hparams[name].number_value = value
        else:
            start.hparams[name].string_value = value if isinstance(value, str) else fileio.dumps_strict(value)
    end = plugin_data_pb2.SessionEndInfo(status=api_pb2.STATUS_SUCCESS, end_time_secs=time.time())
    empty = TensorProto(dtype=DT_FLOAT, tensor_shape=TensorShapeProto(dim=[TensorShapeProto.Dim(size=0)]))
    pieces = ((metadata.SESSION_START_INFO_TAG, plugin_data_pb2.HParamsPluginData(session_start_info=start)),
              (metadata.SESSION_END_INFO_TAG, plugin_data_pb2.HParamsPluginData(session_end_info=end)))
    return [Summary(value=[Summary.Value(tag=tag, tensor=empty, metadata=metadata.create_summary_metadata(data))])
            for tag, data in pieces]


def host_name() -> str:
    return socket.gethostname()
