"""The MLflow sink: one MLflow run per training run, fed from a background thread (`pipeline.tracking` has the
Sink interface and the other sinks).

Short timeouts and bounded retries: an unreachable server costs one warning, never a stall; values are held until
a checkpoint covers them (MLflow cannot delete a value, so none is sent that a resume could produce again) and
replayed when the server returns. A resume re-attaches to the run by its id, or, when the process was killed
before a checkpoint held that id, by the run key tag (`RUN_KEY_TAG`); a finish redone after a kill logs the
model only if its weights are not there yet.
"""
from __future__ import annotations

import getpass
import os
import queue
import re
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path
from typing import Any

from pipeline import fileio, rundir, status as status_lib
from pipeline.logs import flatten_sample, numbers

# MLflow run statuses for our run statuses
MLFLOW_STATUS = {status_lib.COMPLETED: "FINISHED", status_lib.EARLY_STOPPED: "FINISHED", status_lib.FAILED: "FAILED",
                 status_lib.INTERRUPTED: "KILLED", status_lib.RUNNING: "RUNNING"}

RUN_KEY_TAG = "pipeline.run_key"  # the engine's own id of a training run, set on its MLflow run


def configure_mlflow_http(timeout_s: int = 5, max_retries: int = 1) -> None:
    """Short timeouts and few retries, unless the user chose otherwise (MLflow's defaults block ~4 min)."""
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(timeout_s))
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", str(max_retries))
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")


def default_tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or "sqlite:///mlflow.db"


class MlflowSink:
    """Logs to an MLflow run from a background thread.

    The loop only enqueues. The worker creates (or re-attaches to) the run once it knows the run's
    settings (the "run" event, or `params`), then sends metrics in batches: epoch metrics under their own
    names, step metrics as `step_<name>`, resource samples under the names MLflow's own system-metrics
    logging writes (`system/cpu_utilization_percentage`, ...: `system_name`; the System metrics tab), test scores as `test_<name>` (so runs sort and compare by them). On failure it warns once, keeps
    the metrics (bounded buffer) and retries with backoff; when the server answers again the buffer is
    replayed with the original steps and timestamps. At close it logs the artefacts and the model (a pyfunc model
    that takes raw CSV rows, with a raw-column signature, and the training dataset; registered under `register_as`
    when the model event asks).
    """

    MAX_BUFFER = 200_000
    PREFIX = {"step": "step_", "system": "system/", "test": "test_", "epoch": "", "best": ""}

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
        self._params = params  # None until known (the "run" event); logged once, on a run this sink created
        self._params_due = False
        self._params_kept: dict[str, str] = {}  # on a run found again by its key: the values it already has
        self._started = time.monotonic()
        self._tags = dict(tags or {})
        self._late_tags: dict[str, str] = {}  # known only at the end (the verdict): set before the run closes
        self._queue: "queue.Queue[tuple[str, Any]]" = queue.Queue()
        self._pending: list[Any] = []  # mlflow Metric entities not yet accepted by the server
        # Under the engine (it sends a "run" event), step and epoch values are held until a checkpoint covers
        # them: MLflow cannot delete a value, so none is sent that a resume could produce again.
        self._holding = False
        self._held: list[Any] = []
        self._resume: dict[str, Any] | None = None  # the run event's logs folder and start step, on a resume
        self._artifacts: list[tuple[str, str | None]] = []
        self._model: dict[str, Any] | None = None
        self._warned = False
        self.dropped = 0
        self.closed = False  # the server has the run's end (status, artefacts, model): its finish need not be redone
        self.connected = threading.Event()
        self._thread = threading.Thread(target=self._work, name="mlflow-sink", daemon=True)
        self._thread.start()

    # ---- called from the training loop: never blocks on the network
    def log_dict(self, metrics: dict[str, Any], step: int, kind: str) -> None:
        stamp = int(time.time() * 1000)
        values = system_names(flatten_sample(metrics)) if kind == "system" else numbers(metrics)
        prefix = self.PREFIX.get(kind, f"{kind}_")
        # resource samples are facts of their moment: a resume does not redo them, so they need no holding
        self._queue.put(("metrics", ({prefix + k: v for k, v in values.items()}, step, stamp, kind != "system")))

    def log_event(self, record: dict[str, Any]) -> None:
        kind = record.get("type")
        if kind == "run":
            self._queue.put(("params", {k: v for k, v in (record.get("config") or {}).items() if v is not None}))
            self._queue.put(("run", record))
        elif kind == "checkpoint":
            self._queue.put(("checkpoint", int(record.get("step", 0))))
        elif kind == "artifact":
            self._queue.put(("artifact", (str(record["path"]), record.get("folder"))))
        elif kind == "model":
            self._queue.put(("model", record))
        elif kind == "baselines":  # baseline_<model>_<metric>, beside test_<metric>
            named = {f"baseline_{model}_{k}": v for model, scores in (record.get("scores") or {}).items()
                     if isinstance(scores, dict) and model != "failed" for k, v in numbers(scores).items()}
            self._queue.put(("metrics", (named, 0, int(time.time() * 1000), True)))
        elif kind == "verdict":  # the network against the best baseline, as tags a runs table can show
            verdict = record.get("verdict") or {}
            self._queue.put(("tags", {"verdict.outcome": str(verdict.get("outcome")),
                                      "verdict.baseline": str(verdict.get("baseline")),
                                      "verdict.metric": str(verdict.get("metric"))}))

    def info(self) -> dict[str, Any]:
        if self.run_id is None:
            return {}
        return {"mlflow": {"tracking_uri": self.tracking_uri, "experiment_id": self.experiment_id,
                           "run_id": self.run_id, "closed": self.closed}}

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
            try:
                run = client.get_run(self.run_id)
            except Exception as exc:
                if getattr(exc, "error_code", None) != "RESOURCE_DOES_NOT_EXIST":
                    raise  # unreachable: retried later
                warnings.warn(f"MLflow: run {self.run_id} is not in {self.tracking_uri} (was it started with "
                              "another --tracking-uri?); starting a new run there with everything the local logs "
                              "hold", stacklevel=2)
                self.run_id = None
        if self.run_id is None and self._tags.get(RUN_KEY_TAG):
            # killed after the server made the run but before a checkpoint held its id: that run, not a second one
            experiment = client.get_experiment_by_name(self.experiment_name)
            found = [] if experiment is None else client.search_runs(
                [experiment.experiment_id], filter_string=f"tags.`{RUN_KEY_TAG}` = '{self._tags[RUN_KEY_TAG]}'",
                order_by=["attributes.start_time ASC"], max_results=1)
            if found:
                run, self.run_id = found[0], found[0].info.run_id
                self._params_due, self._params_kept = True, dict(run.data.params)  # those it lacks, if any
        if self.run_id is not None:
            self.experiment_id = run.info.experiment_id
            client.update_run(self.run_id, status="RUNNING")
        else:
            experiment = client.get_experiment_by_name(self.experiment_name)
            self.experiment_id = (experiment.experiment_id if experiment is not None
                                  else create_experiment(client, self.experiment_name, self.tracking_uri))
            run = client.create_run(self.experiment_id, run_name=self.run_name, tags={**source_tags(), **self._tags})
            self.run_id = run.info.run_id
            self._params_due = True  # a resumed run keeps the values it was created with
        if self._resume is not None:
            self._backfill(client, Path(self._resume["logs"]), int(self._resume["start_step"]))
        self.connected.set()

    def _backfill(self, client: Any, log_dir: Path, upto: int) -> int:
        """On a resume: send what the server lacks of the local log up to step `upto` (the killed process may
        have held or queued it, or this is a new run on another server). Returns how many values were sent."""
        from mlflow.entities import Metric

        wanted: dict[str, dict[int, tuple[float, int]]] = {}
        for record in fileio.read_jsonl(log_dir / rundir.METRICS_LOG):
            kind, step = record.get("type"), record.get("step")
            if kind not in ("step", "epoch") or not isinstance(step, int) or step > upto:
                continue
            values = numbers({k: v for k, v in record.items() if k not in ("type", "time", "step")})
            for name, value in values.items():
                stamp = int(float(record.get("time") or 0) * 1000)
                wanted.setdefault(self.PREFIX[kind] + name, {})[step] = (float(value), stamp)
        missing = []
        for key, by_step in wanted.items():
            have = {m.step for m in client.get_metric_history(self.run_id, key)}
            missing += [Metric(key, value, stamp, step) for step, (value, stamp) in sorted(by_step.items())
                        if step not in have]
        self._pending[:0] = missing
        self._resume = None
        return len(missing)

    def _log_params(self, client: Any) -> None:
        from mlflow.entities import Param

        params = [Param(k, str(v)[:6000]) for k, v in sorted((self._params or {}).items()) if k not in self._params_kept]
        for i in range(0, len(params), 100):
            client.log_batch(self.run_id, params=params[i:i + 100])
        self._params_due = False

    def _flush(self, client: Any) -> None:
        while self._pending:
            chunk = self._pending[:1000]
            client.log_batch(self.run_id, metrics=chunk, synchronous=True)
            del self._pending[:len(chunk)]

    def _accept(self, item: tuple[str, Any]) -> None:
        from mlflow.entities import Metric

        kind, payload = item
        if kind == "metrics":
            named, step, stamp, hold = payload
            entities = [Metric(k, float(v), stamp, step) for k, v in named.items()]
            (self._held if hold and self._holding else self._pending).extend(entities)
            if len(self._pending) > self.MAX_BUFFER:
                self.dropped += len(self._pending) - self.MAX_BUFFER
                del self._pending[: len(self._pending) - self.MAX_BUFFER]
        elif kind == "params":
            self._params = payload if self._params is None else self._params
        elif kind == "run":
            self._holding = True
            if payload.get("resumed") and payload.get("logs"):
                self._resume = {"logs": payload["logs"], "start_step": payload.get("start_step", 0)}
        elif kind == "checkpoint":  # everything up to this step is final now
            self._pending.extend(m for m in self._held if m.step <= payload)
            self._held = [m for m in self._held if m.step > payload]
        elif kind == "artifact":
            self._artifacts.append(payload)
        elif kind == "model":
            self._model = payload
        elif kind == "tags":
            self._late_tags.update(payload)
        elif kind == "close":
            self._closing = payload
            if payload == "FINISHED":  # a finished run is final whole (its last checkpoint came before the
                self._pending.extend(self._held)  # test scores); any other end drops what a resume redoes
            self._held = []

    def _ready(self) -> bool:
        """Create (or re-attach to) the run once its settings are known: the run event, or a second without
        one (a sink used on its own), or the close."""
        return self._params is not None or self._closing is not None or time.monotonic() - self._started > 1.0

    def _work(self) -> None:
        """Drain the queue; send at most every `flush_interval_s` (each send is a database transaction or an
        HTTP request: doing one per record would compete with the training loop for the interpreter)."""
        import logging

        from mlflow import MlflowClient

        # "Creating initial MLflow database tables..." on a new sqlite store: a lesson's reader takes it for an error
        store_log = logging.getLogger("mlflow.store.db.utils")
        if store_log.level == logging.NOTSET:
            store_log.setLevel(logging.WARNING)
        client = MlflowClient(tracking_uri=self.tracking_uri)
        backoff, next_send, deadline = 1.0, 0.0, None
        while True:
            ready = self._ready()
            waiting = ready and (self._pending or not self.connected.is_set())
            timeout = max(0.05, next_send - time.monotonic()) if waiting else None if ready else 0.25
            try:
                self._accept(self._queue.get(timeout=timeout))
                while True:
                    self._accept(self._queue.get_nowait())
            except queue.Empty:
                pass
            if self._closing is not None and deadline is None:
                deadline = time.monotonic() + self.close_timeout_s * 0.8
            if not self._ready() or (self._closing is None and time.monotonic() < next_send):
                continue
            try:
                if not self.connected.is_set():
                    self._connect(client)
                if self._params_due and self._params is not None:
                    self._log_params(client)
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
        for local, folder in list((self._model or {}).get("artifacts", [])) + self._artifacts:
            try:
                client.log_artifact(self.run_id, local, folder)
            except Exception as exc:
                self._warn(f"artifact {Path(local).name}", exc)
        if self._model is not None:
            try:
                self._log_model(client, self._model)
            except Exception as exc:  # the server answered: say what went wrong, not "unavailable"
                first = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
                warnings.warn(f"MLflow: the model was not logged as an MLflow model ({first}); its weights are in "
                              "the run's artefacts (model_weights/)", stacklevel=2)
        for key, value in self._late_tags.items():
            try:
                client.set_tag(self.run_id, key, value)
            except Exception as exc:
                self._warn(f"tag {key}", exc)
        try:
            client.set_terminated(self.run_id, status=status)
            self.closed = True
        except Exception as exc:
            self._warn("ending the run", exc)

    def _log_model(self, client: Any, event: dict[str, Any]) -> None:
        """The training dataset as a run input, and the model as an MLflow pyfunc model that takes the training
        CSV's raw columns (preprocessing inside; `pipeline.serving`), with a raw-column signature and example."""
        import mlflow
        import numpy as np
        from mlflow.data.dataset_source_registry import resolve_dataset_source
        from mlflow.entities import DatasetInput, InputTag

        from pipeline import data, serving

        weights = serving.weights_identity(event["path"])
        logged = client.search_logged_models(experiment_ids=[self.experiment_id],
                                             filter_string=f"source_run_id = '{self.run_id}'")
        if any(m.tags.get(serving.WEIGHTS_TAG) == weights for m in logged):
            return  # a finish redone after a kill that came once this model was logged (a longer run logs anew)

        X_train, y_train = data.load_processed(event["data_dir"], mmap=True).arrays["train"]
        with warnings.catch_warnings():  # MLflow cannot tell two local source types apart; either is right
            warnings.simplefilter("ignore", UserWarning)
            source = resolve_dataset_source(str(Path(event["data_dir"]).resolve()))
        dataset = mlflow.data.from_numpy(np.asarray(X_train), targets=np.asarray(y_train), source=source, name="train")
        client.log_inputs(self.run_id, datasets=[DatasetInput(dataset._to_mlflow_entity(),
                                                              [InputTag("mlflow.data.context", "training")])])
        # MLflow logs models through its process-wide "fluent" state; borrow it and put it back as it was, so
        # a notebook's own mlflow.set_tracking_uri / set_experiment are left alone (and cannot refuse our run)
        from mlflow.tracking import fluent

        uri, experiment = mlflow.get_tracking_uri(), fluent._active_experiment_id
        try:
            mlflow.set_tracking_uri(self.tracking_uri)
            fluent._active_experiment_id = None
            with mlflow.start_run(run_id=self.run_id):
                # MLflow gives a logged model the run's metrics at its `step`: at 0 those are the baselines'.
                # No metric has step -1, so none comes along; the network's own scores are attached below
                info = serving.log_model(event["path"], register_as=event.get("register_as"), step=-1)
        finally:
            mlflow.set_tracking_uri(uri)
            fluent._active_experiment_id = experiment
        self._attach_scores(client, info.model_id)

    def _attach_scores(self, client: Any, model_id: str) -> None:
        """The network's test scores (with their intervals) and the kept epoch's best_* values as the logged
        model's metrics (the Model metrics tab), as MLflow's own log_model links them: each latest value again,
        with the model's id."""
        from mlflow.entities import Metric

        attach = []
        for key in client.get_run(self.run_id).data.metrics:
            if key.startswith(("test_", "best_")):
                latest = max(client.get_metric_history(self.run_id, key), key=lambda m: (m.step, m.timestamp))
                attach.append(Metric(key, latest.value, latest.timestamp, latest.step, model_id=model_id))
        for i in range(0, len(attach), 1000):
            client.log_batch(self.run_id, metrics=attach[i:i + 1000])


def artifact_root(tracking_uri: str) -> str | None:
    """Artefacts beside a sqlite store (`mlflow.db` -> `mlartifacts/`), not in an `mlruns/` folder wherever the
    process happened to run; None (MLflow's choice) for a server, which stores them itself."""
    if not tracking_uri.startswith("sqlite:///"):
        return None
    database = Path(tracking_uri[len("sqlite:///"):]).expanduser()
    return (database.resolve().parent / "mlartifacts").as_uri()


EXPERIMENT_KIND_TAG, EXPERIMENT_KIND = "mlflow.experimentKind", "custom_model_development"

# A resource sample's names (pipeline.system, flattened) as MLflow's system-metrics monitor names them, so our
# runs' charts line up with other MLflow runs'; None: constants (the totals), which MLflow does not chart.
SYSTEM_NAMES = {"cpu_percent": "cpu_utilization_percentage", "ram_used_mb": "system_memory_usage_megabytes",
                "ram_percent": "system_memory_usage_percentage", "ram_total_mb": None,
                "process_cpu_percent": "process_cpu_utilization_percentage", "rss_mb": "process_memory_rss_megabytes"}
GPU_NAMES = {"util_percent": "utilization_percentage", "mem_used_mb": "memory_usage_megabytes", "mem_total_mb": None,
             "power_w": "power_usage_watts", "temperature_c": "temperature_celsius"}


def system_names(flat: dict[str, float]) -> dict[str, float]:
    """`{"cpu_percent": 12, "gpu0_util_percent": 93, "gpu0_mem_used_mb": 4e3, "gpu0_mem_total_mb": 8e3}` ->
    `{"cpu_utilization_percentage": 12, "gpu_0_utilization_percentage": 93, "gpu_0_memory_usage_megabytes": 4e3,
    "gpu_0_memory_usage_percentage": 50.0}`; a name neither table knows is kept as it is."""
    named: dict[str, float] = {}
    for key, value in flat.items():
        gpu = re.fullmatch(r"gpu(\d+)_(.+)", key)
        if gpu is not None and gpu.group(2) in GPU_NAMES:
            index, what = gpu.groups()
            if GPU_NAMES[what] is not None:
                named[f"gpu_{index}_{GPU_NAMES[what]}"] = value
            total = flat.get(f"gpu{index}_mem_total_mb")
            if what == "mem_used_mb" and total:
                named[f"gpu_{index}_memory_usage_percentage"] = round(100 * value / total, 2)
        elif SYSTEM_NAMES.get(key, key) is not None:
            named[SYSTEM_NAMES.get(key, key)] = value
    return named


def create_experiment(client: Any, name: str, tracking_uri: str) -> str:
    """A new experiment with its artefacts beside a sqlite store, and the kind MLflow's UI reads to open it on
    training runs (without it, MLflow 3's UI opens an experiment on its GenAI traces overview)."""
    return client.create_experiment(name, artifact_location=artifact_root(tracking_uri),
                                    tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND})


def source_tags() -> dict[str, str]:
    """MLflow's source tags for this process: the script (or "python" in a notebook), its git commit, and the
    user (the UI's "Created by", which MLflow's client API leaves empty)."""
    script = Path(sys.argv[0]).resolve() if sys.argv and sys.argv[0] else None
    if script is not None and not script.is_file():
        script = None
    folder = script.parent if script is not None else Path.cwd()
    root, commit = git_checkout(folder)
    tags = {"mlflow.source.type": "LOCAL", "mlflow.source.name": source_name(script, root)}
    if commit:
        tags["mlflow.source.git.commit"] = commit
    try:
        tags["mlflow.user"] = getpass.getuser()
    except (KeyError, OSError):  # no name for this uid (a bare container)
        pass
    return tags


def source_name(script: Path | None, root: Path | None) -> str:
    """What the run's Source column shows: a notebook's path (Jupyter names it in $JPY_SESSION_NAME; not the
    kernel's ipykernel_launcher.py), else the script relative to its repository, else its full path."""
    if "ipykernel" in sys.modules:
        return os.environ.get("JPY_SESSION_NAME") or "notebook"
    if script is None:
        return "python"
    return str(script.relative_to(root)) if root is not None and script.is_relative_to(root) else str(script)


def git_checkout(folder: Path) -> tuple[Path | None, str | None]:
    """(the top of the git work tree holding `folder`, the commit checked out there), in one `git` call (this
    runs at every run's start); (None, None) outside a work tree with a commit, or without git."""
    try:
        done = subprocess.run(["git", "-C", str(folder), "rev-parse", "--show-toplevel", "HEAD"],
                              capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None, None
    lines = done.stdout.splitlines()  # a root may hold spaces
    if done.returncode != 0 or len(lines) != 2:
        return None, None
    return Path(lines[0]).resolve(), lines[1]


def git_commit(folder: Path) -> str | None:
    """The commit checked out at `folder`, or None outside a git work tree (or without git)."""
    return git_checkout(folder)[1]
