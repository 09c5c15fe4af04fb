"""Phase 2: the training engine — one plain loop with exact checkpoint/resume and tracking.

    python solutions/train_pipeline.py --data-dir processed_data --epochs 50 --batch-size 32 \
        --learning-rate 0.001 --save-dir checkpoints

`TrainConfig` is built once at the boundary (flags, YAML, papermill parameters); only `run` reads it.
Everything needed to continue is in `TrainingState` + the model/optimizer/scheduler/scaler/RNG states, saved
whole in each checkpoint, so a run killed at any moment and started again ends exactly where an
uninterrupted run would (on CPU: every tensor identical).
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import fcntl
import math
import os
import platform
import signal
import sys
import time
import warnings
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from pipeline import __version__, checkpoint, data, fileio, metrics, model as model_lib, tracking
from pipeline.errors import CheckpointError, ConfigError
from pipeline.system import SystemSampler

STATUSES = ("running", "completed", "early_stopped", "failed", "interrupted")
EXIT_CODES = {"completed": 0, "early_stopped": 0, "failed": 1, "interrupted": 130}
SCHEDULERS = ("none", "cosine", "step", "plateau", "onecycle")
OPTIMIZERS = ("adam", "adamw", "sgd")


# ---------------------------------------------------------------------------------------------- config
@dataclass(frozen=True)
class TrainConfig:
    """Every hyperparameter and switch of a run. Field names are the flags (`--learning-rate`) and YAML keys."""
    data_dir: str
    save_dir: str
    epochs: int = 50
    batch_size: int = 32
    learning_rate: float = 1e-3
    device: str = "auto"              # auto | cpu | cuda
    seed: int = 42
    resume: str = "auto"              # auto | never | PATH
    hidden_sizes: tuple[int, ...] = (256, 128)
    dropout: float = 0.1
    norm: str = "none"                # none | batch | layer
    optimizer: str = "adamw"          # adam | adamw | sgd
    weight_decay: float = 0.0
    momentum: float = 0.9             # sgd only
    scheduler: str = "none"           # none | cosine | step | plateau | onecycle
    warmup_epochs: float = 0.0
    step_size: int = 10               # step scheduler: epochs between decays
    gamma: float = 0.5                # step/plateau decay factor
    early_stopping_patience: int = 10  # epochs without improvement; 0 turns it off
    early_stopping_metric: str = "val_loss"
    amp: str = "auto"                 # auto | off | bf16 | fp16
    grad_clip: float = 0.0            # max gradient norm; 0 turns it off
    grad_accum_steps: int = 1
    loss: str = "auto"                # auto | cross_entropy | mse | huber
    class_weights: str = "none"       # none | balanced
    checkpoint_every: int = 1         # epochs between checkpoints
    keep_checkpoints: int = 2         # periodic ckpt-epochNNNN.pt files kept (0 keeps all)
    tracking_uri: str | None = None   # default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db
    experiment_name: str = "pipeline"
    run_name: str | None = None
    mlflow: bool = True
    tensorboard: bool = True
    num_workers: int = 0              # DataLoader workers (loader=dataloader)
    loader: str = "memory"            # memory (indexed tensors) | dataloader (memory-mapped, for big data)
    compile: bool = False             # torch.compile the model
    deterministic: bool = False       # torch.use_deterministic_algorithms
    log_every: int = 10               # batches between step records
    system_interval: float = 2.0      # seconds between resource samples; 0 turns sampling off
    progress: str = "auto"            # auto (a bar on a terminal) | bar | off

    def to_dict(self) -> dict[str, Any]:
        values = dataclasses.asdict(self)
        values["hidden_sizes"] = list(self.hidden_sizes)
        return values


# Keys that do not change what is computed: they may differ when a run is resumed.
NOT_TRAINING_KEYS = {"epochs", "data_dir", "save_dir", "resume", "tracking_uri", "experiment_name", "run_name",
                     "mlflow", "tensorboard", "num_workers", "loader", "log_every", "system_interval", "progress",
                     "checkpoint_every", "keep_checkpoints"}


def make_config(values: dict[str, Any]) -> TrainConfig:
    """Build and validate a config from plain values (flags, YAML or notebook parameters)."""
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(values) - names)
    if unknown:
        close = {u: __import__("difflib").get_close_matches(u, names, n=1) for u in unknown}
        hints = ", ".join(f"{u}" + (f" (did you mean {c[0]}?)" if c else "") for u, c in close.items())
        raise ConfigError(f"unknown config key(s): {hints}")
    for required in ("data_dir", "save_dir"):
        if not values.get(required):
            raise ConfigError(f"{required} is required (--{required.replace('_', '-')})")
    values = dict(values)
    if isinstance(values.get("hidden_sizes"), str):
        values["hidden_sizes"] = parse_sizes(values["hidden_sizes"])
    if "hidden_sizes" in values:
        values["hidden_sizes"] = tuple(int(v) for v in values["hidden_sizes"])
    for key in ("data_dir", "save_dir"):
        values[key] = str(values[key])
    config = TrainConfig(**values)
    _validate(config)
    return config


def parse_sizes(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(part) for part in text.replace(" ", "").split(",") if part)
    except ValueError:
        raise ConfigError(f"--hidden-sizes must be comma-separated integers like 256,128, not {text!r}") from None
    return sizes


def _validate(c: TrainConfig) -> None:
    checks = [
        (c.epochs >= 1, f"--epochs must be >= 1, not {c.epochs}"),
        (c.batch_size >= 1, f"--batch-size must be >= 1, not {c.batch_size}"),
        (c.learning_rate > 0 and math.isfinite(c.learning_rate), f"--learning-rate must be > 0, not {c.learning_rate}"),
        (c.device in ("auto", "cpu", "cuda") or c.device.startswith("cuda:"), f"--device must be auto, cpu or cuda, not {c.device!r}"),
        (all(s > 0 for s in c.hidden_sizes), f"--hidden-sizes must be positive, not {c.hidden_sizes}"),
        (0 <= c.dropout < 1, f"--dropout must be in [0, 1), not {c.dropout}"),
        (c.norm in model_lib.NORMS, f"--norm must be one of {', '.join(model_lib.NORMS)}"),
        (c.optimizer in OPTIMIZERS, f"--optimizer must be one of {', '.join(OPTIMIZERS)}, not {c.optimizer!r}"),
        (c.scheduler in SCHEDULERS, f"--scheduler must be one of {', '.join(SCHEDULERS)}, not {c.scheduler!r}"),
        (c.amp in ("auto", "off", "bf16", "fp16"), f"--amp must be auto, off, bf16 or fp16, not {c.amp!r}"),
        (c.grad_accum_steps >= 1, "--grad-accum-steps must be >= 1"),
        (c.grad_clip >= 0, "--grad-clip must be >= 0"),
        (c.loss in ("auto", "cross_entropy", "mse", "huber"), "--loss must be auto, cross_entropy, mse or huber"),
        (c.class_weights in ("none", "balanced"), "--class-weights must be none or balanced"),
        (c.checkpoint_every >= 1, "--checkpoint-every must be >= 1"),
        (c.loader in ("memory", "dataloader"), "--loader must be memory or dataloader"),
        (c.progress in ("auto", "bar", "off"), "--progress must be auto, bar or off"),
        (c.log_every >= 1, "--log-every must be >= 1"),
        (c.early_stopping_patience >= 0, "--early-stopping-patience must be >= 0"),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)


# ----------------------------------------------------------------------------------------------- state
@dataclass
class TrainingState:
    """Where the run is. Saved whole in every checkpoint (plain values only) and restored whole."""
    epoch: int = 0                 # completed epochs; the loop runs `for epoch in range(state.epoch, epochs)`
    step_in_epoch: int = 0         # batches done in the current (unfinished) epoch
    global_step: int = 0           # batches done in the whole run
    best_value: float | None = None
    best_epoch: int | None = None
    bad_epochs: int = 0            # epochs since the best one (early stopping)
    epoch_loss_sum: float = 0.0    # partial sums of the unfinished epoch, so a mid-epoch resume is exact
    epoch_samples: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    resumed: list[dict[str, Any]] = field(default_factory=list)
    status: str = "running"
    started_at: str = ""
    mlflow_run_id: str | None = None
    run_name: str = ""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "TrainingState":
        return cls(**values)


@dataclass
class RunResult:
    status: str
    exit_code: int
    save_dir: Path
    metrics: dict[str, Any]


# ------------------------------------------------------------------------------------ building blocks
def resolve_device(requested: str) -> torch.device:
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("--device cuda was asked for but no CUDA GPU is available; use --device auto or cpu")
    return torch.device(requested)


def resolve_amp(requested: str, device: torch.device) -> torch.dtype | None:
    """auto: bf16 on GPUs that support it, else fp16 (with a GradScaler); off on CPU."""
    if requested == "off" or (requested == "auto" and device.type != "cuda"):
        return None
    if requested == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if requested == "fp16" and device.type != "cuda":
        raise ConfigError("--amp fp16 needs a CUDA GPU; use --amp bf16 or off on CPU")
    return torch.bfloat16 if requested == "bf16" else torch.float16


def build_optimizer(params: Any, name: str, lr: float, weight_decay: float, momentum: float) -> torch.optim.Optimizer:
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)


def lr_factor(step: int, *, kind: str, warmup_steps: int, total_steps: int, steps_per_epoch: int,
              step_size: int, gamma: float) -> float:
    """Multiplier of the base learning rate after `step` optimizer steps (a pure function of the config,
    so changing --epochs on resume simply recomputes the schedule)."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    if kind == "cosine":
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return 0.5 * (1 + math.cos(math.pi * progress))
    if kind == "onecycle":  # warm up to the peak (at least 30% of the run), then anneal to ~0
        peak = max(warmup_steps, int(0.3 * total_steps))
        if step < peak:
            return 0.04 + 0.96 * (step + 1) / max(1, peak)
        progress = min(1.0, (step - peak) / max(1, total_steps - peak))
        return 1e-4 + (1 - 1e-4) * 0.5 * (1 + math.cos(math.pi * progress))
    if kind == "step":
        return gamma ** ((step // max(1, steps_per_epoch)) // max(1, step_size))
    return 1.0


def build_scheduler(optimizer: torch.optim.Optimizer, c: TrainConfig, steps_per_epoch: int) -> Any:
    """Per-step LambdaLR for none/cosine/step/onecycle (with warmup); ReduceLROnPlateau per epoch."""
    if c.scheduler == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="min", factor=c.gamma,
                                                          patience=max(1, c.early_stopping_patience // 3))
    if c.scheduler == "none" and c.warmup_epochs <= 0:
        return None
    warmup = int(round(c.warmup_epochs * steps_per_epoch))
    total = c.epochs * steps_per_epoch
    kwargs = dict(kind=c.scheduler, warmup_steps=warmup, total_steps=total, steps_per_epoch=steps_per_epoch,
                  step_size=c.step_size, gamma=c.gamma)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, **kwargs))


def build_loss(task: str, name: str, class_weight: torch.Tensor | None) -> nn.Module:
    if task == "classification":
        if name not in ("auto", "cross_entropy"):
            raise ConfigError(f"--loss {name} is for regression; classification uses cross_entropy")
        return nn.CrossEntropyLoss(weight=class_weight)
    if name == "cross_entropy":
        raise ConfigError("--loss cross_entropy is for classification; regression uses mse or huber")
    return nn.HuberLoss() if name == "huber" else nn.MSELoss()


def rng_state(device: torch.device) -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    torch.set_rng_state(state["torch"].cpu())
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def epoch_permutation(seed: int, epoch: int, n: int) -> torch.Tensor:
    """The order of training rows in `epoch`: a pure function of (seed, epoch), so resume needs no state."""
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=generator)


def config_differences(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    keys = sorted((set(saved) | set(current)) - NOT_TRAINING_KEYS)
    return [f"{k}: checkpoint {saved.get(k)!r}, now {current.get(k)!r}" for k in keys if saved.get(k) != current.get(k)]


class _Batches:
    """Mini-batches of the training split in the epoch's permutation order.

    memory: X and y live in tensors (on the GPU when they fit) and a batch is one index_select.
    dataloader: X stays memory-mapped on disk; workers gather whole batches (same order, same results).
    """

    def __init__(self, X: np.ndarray, y: np.ndarray, *, device: torch.device, loader: str, num_workers: int,
                 batch_size: int, y_dtype: torch.dtype):
        self.device, self.loader, self.batch_size = device, loader, batch_size
        self.num_workers = num_workers
        self.n = X.shape[0]
        self.X_np, self.y_np = X, y
        self.y_dtype = y_dtype
        self.on_device = False
        if loader == "memory":
            X_t = torch.from_numpy(np.ascontiguousarray(X))  # (rows, features) float32, zero-copy
            y_t = torch.from_numpy(np.ascontiguousarray(y)).to(y_dtype)
            if device.type == "cuda":
                free, _ = torch.cuda.mem_get_info(device)
                if X_t.nbytes + y_t.nbytes < 0.5 * free:  # keep the whole table on the GPU
                    X_t, y_t, self.on_device = X_t.to(device), y_t.to(device), True
                else:
                    X_t, y_t = X_t.pin_memory(), y_t.pin_memory()
            self.X, self.y = X_t, y_t

    def __len__(self) -> int:
        return math.ceil(self.n / self.batch_size)

    def iterate(self, permutation: torch.Tensor, start_batch: int):
        """Yield (batch_index, xb, yb) from `start_batch` on, already on the device."""
        non_blocking = self.device.type == "cuda"
        if self.loader == "memory":
            perm = permutation.to(self.X.device)
            for b in range(start_batch, len(self)):
                idx = perm[b * self.batch_size:(b + 1) * self.batch_size]
                xb, yb = self.X.index_select(0, idx), self.y.index_select(0, idx)
                if not self.on_device:
                    xb = xb.to(self.device, non_blocking=non_blocking)
                    yb = yb.to(self.device, non_blocking=non_blocking)
                yield b, xb, yb
            return
        batches = [permutation[b * self.batch_size:(b + 1) * self.batch_size].numpy()
                   for b in range(start_batch, len(self))]
        dataset = _GatherDataset(self.X_np, self.y_np, self.y_dtype)
        loader = torch.utils.data.DataLoader(dataset, sampler=batches, batch_size=None,
                                             num_workers=self.num_workers, pin_memory=non_blocking,
                                             persistent_workers=False,
                                             # its own generator: starting workers must not consume the global
                                             # RNG that dropout draws from, or resume/equivalence breaks
                                             generator=torch.Generator().manual_seed(0))
        for b, (xb, yb) in enumerate(loader, start=start_batch):
            yield b, xb.to(self.device, non_blocking=non_blocking), yb.to(self.device, non_blocking=non_blocking)


class _GatherDataset(torch.utils.data.Dataset):
    """`dataset[indices]` returns a whole batch; used with a batch-index sampler and batch_size=None."""

    def __init__(self, X: np.ndarray, y: np.ndarray, y_dtype: torch.dtype):
        self.X, self.y, self.y_dtype = X, y, y_dtype

    def __len__(self) -> int:
        return self.X.shape[0]

    def __getitem__(self, indices: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        return (torch.from_numpy(np.ascontiguousarray(self.X[indices])),
                torch.from_numpy(np.ascontiguousarray(self.y[indices])).to(self.y_dtype))


@torch.inference_mode()
def predict_arrays(model: nn.Module, X: np.ndarray, *, device: torch.device, amp: torch.dtype | None,
                   batch_size: int = 4096) -> np.ndarray:
    """Raw model outputs (rows, n_outputs) as float32 NumPy, in chunks."""
    model.eval()
    outputs = []
    for start in range(0, X.shape[0], batch_size):
        xb = torch.from_numpy(np.require(X[start:start + batch_size], requirements=['C', 'W'])).to(device)
        with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
            outputs.append(model(xb).float().cpu())
    return torch.cat(outputs).numpy() if outputs else np.zeros((0, 1), dtype=np.float32)


def evaluate(model: nn.Module, X: np.ndarray, y: np.ndarray, *, task: str, loss_fn: nn.Module,
             device: torch.device, amp: torch.dtype | None, target_scale: tuple[float, float],
             detailed: bool = False, classes: list[str] | None = None) -> dict[str, Any]:
    """Loss + task metrics of `model` on one split (metrics in the target's own units)."""
    if X.shape[0] == 0:
        return {}
    out = torch.from_numpy(predict_arrays(model, X, device=device, amp=amp))
    loss_fn = copy.deepcopy(loss_fn).cpu()  # a CPU copy: the training loss (and its class weights) stays put
    if task == "classification":
        target = torch.from_numpy(np.asarray(y)).long()
        loss = float(loss_fn(out, target))
        probabilities = torch.softmax(out, dim=1).numpy()
        result = {"loss": loss, **metrics.classification_metrics(np.asarray(y), probabilities, detailed=detailed,
                                                                 classes=classes)}
        if detailed:
            result["roc_curves"] = _roc_curves(np.asarray(y), probabilities, classes or [])
        return result
    mean, std = target_scale
    scaled = (torch.from_numpy(np.asarray(y, dtype=np.float32)) - mean) / std
    loss = float(loss_fn(out[:, 0], scaled))
    predicted = out[:, 0].numpy() * std + mean
    result = {"loss": loss, **metrics.regression_metrics(np.asarray(y), predicted)}
    if detailed:
        keep = np.linspace(0, len(y) - 1, num=min(len(y), 2000)).astype(int)
        result["predictions"] = {"y_true": np.asarray(y)[keep].tolist(), "y_pred": predicted[keep].tolist()}
    return result


def _roc_curves(y: np.ndarray, probabilities: np.ndarray, classes: list[str]) -> dict[str, Any]:
    from sklearn.metrics import roc_curve

    curves = {}
    for i, name in enumerate(classes):
        positives = (y == i)
        if positives.all() or not positives.any():
            continue
        fpr, tpr, _ = roc_curve(positives, probabilities[:, i])
        keep = np.unique(np.linspace(0, len(fpr) - 1, num=min(len(fpr), 200)).astype(int))
        curves[name] = {"fpr": fpr[keep].round(5).tolist(), "tpr": tpr[keep].round(5).tolist()}
    return curves


# -------------------------------------------------------------------------------------------- the run
class _Interrupt:
    """SIGINT/SIGTERM set a flag; the loop saves at the next step boundary and exits 130/143."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> "_Interrupt":
        if threading_is_main():
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C means "now"
        self.signum = signum

    def __exit__(self, *exc: Any) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    @property
    def exit_code(self) -> int:
        return 128 + (self.signum or signal.SIGINT)


def threading_is_main() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


class _SaveDirLock:
    """One run per save dir: a second process gets a clear error instead of corrupting the first."""

    def __init__(self, save_dir: Path):
        self.path = save_dir / ".lock"
        self.handle: Any = None

    def __enter__(self) -> "_SaveDirLock":
        self.handle = open(self.path, "a+")
        try:
            fcntl.flock(self.handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.handle.seek(0)
            holder = self.handle.read().strip() or "another process"
            self.handle.close()
            raise ConfigError(f"{self.path.parent}: already in use by a running training (pid {holder}); wait for "
                              "it or choose another --save-dir") from None
        self.handle.seek(0)
        self.handle.truncate()
        self.handle.write(str(os.getpid()))
        self.handle.flush()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.handle.close()


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _versions() -> dict[str, str]:
    import pandas

    return {"pipeline": __version__, "python": platform.python_version(), "torch": torch.__version__,
            "numpy": np.__version__, "pandas": pandas.__version__,
            "cuda": torch.version.cuda or "none", "platform": platform.platform()}


def clear_run_outputs(save_dir: Path) -> None:
    """--resume never: remove this pipeline's own files from an earlier run in `save_dir`."""
    for path in checkpoint.candidates(save_dir) + [save_dir / "best.pt", save_dir / "metrics.json",
                                                    save_dir / "model.safetensors"]:
        path.unlink(missing_ok=True)
    logs = save_dir / "logs"
    if logs.is_dir():
        for path in list(logs.glob("events.out.tfevents.*")) + [logs / "metrics.jsonl", logs / "system.jsonl"]:
            path.unlink(missing_ok=True)
        for sub in logs.glob("hparams"):
            import shutil

            shutil.rmtree(sub, ignore_errors=True)


def run(config: TrainConfig, *, log: Any = print) -> RunResult:
    """Train (or continue training) as `config` says; return the final status and its exit code."""
    dataset = data.load_processed(config.data_dir, mmap=config.loader == "dataloader")
    device = resolve_device(config.device)
    amp = resolve_amp(config.amp, device)
    save_dir = Path(config.save_dir)
    if save_dir.exists() and not save_dir.is_dir():
        raise ConfigError(f"{save_dir}: exists and is not a folder; choose another --save-dir")
    save_dir.mkdir(parents=True, exist_ok=True)
    was_deterministic = torch.are_deterministic_algorithms_enabled()
    try:
        with _SaveDirLock(save_dir):
            return _run_locked(config, dataset, device, amp, save_dir, log)
    finally:
        torch.use_deterministic_algorithms(was_deterministic)  # a process-wide switch: leave it as found


def _run_locked(config: TrainConfig, dataset: data.Dataset, device: torch.device, amp: torch.dtype | None,
                save_dir: Path, log: Any) -> RunResult:
    schema = dataset.schema
    task = dataset.task
    X_train, y_train = dataset.arrays["train"]
    X_val, y_val = dataset.arrays["val"]
    X_test, y_test = dataset.arrays["test"]
    resolved = {"device": str(device), "amp": str(amp).replace("torch.", "") if amp else "off"}
    config_dict = {**config.to_dict(), **{f"resolved_{k}": v for k, v in resolved.items()}}

    # --- resume or start: decided before anything is written
    payload = None
    if config.resume == "never":
        clear_run_outputs(save_dir)
    elif config.resume == "auto":
        found = checkpoint.latest_valid(save_dir)
        payload = found[1] if found else None
        resume_path = found[0] if found else None
        if found is None and ((save_dir / "metrics.json").exists() or (save_dir / "logs").is_dir()):
            # an earlier run stopped before its first checkpoint: nothing to continue, and its partial logs
            # must not mix with this run's
            log(f"{save_dir}: an earlier run left no checkpoint; starting afresh")
            clear_run_outputs(save_dir)
    else:
        resume_path = Path(config.resume)
        payload = checkpoint.load_checkpoint(resume_path)
    if payload is not None:
        differences = config_differences(payload["config"], config_dict)
        if differences:
            raise CheckpointError(f"{resume_path}: this run was started with different settings ("
                                  + "; ".join(differences) + "); use a new --save-dir or --resume never")
        if payload["data_fingerprint"] != schema["data_sha256"]:
            raise CheckpointError(f"{resume_path}: the checkpoint was trained on different data than "
                                  f"{config.data_dir} (data fingerprint differs); use a new --save-dir or --resume never")

    if config.deterministic:
        torch.use_deterministic_algorithms(True)
        if device.type == "cuda":
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.manual_seed(config.seed)  # identical initial weights for the same seed

    # --- model, optimizer, schedule
    y_dtype = torch.long if task == "classification" else torch.float32
    target_scale = (0.0, 1.0)
    if task == "regression":  # train on a standardised target; report metrics in its own units
        target_scale = (float(np.mean(y_train)), float(np.std(y_train)) or 1.0)
    net = model_lib.build_mlp(dataset.n_features, dataset.n_outputs, config.hidden_sizes, config.dropout,
                              config.norm).to(device)
    class_weight = None
    if task == "classification" and config.class_weights == "balanced":
        counts = np.bincount(y_train, minlength=dataset.n_outputs).astype(np.float64)
        class_weight = torch.tensor(len(y_train) / (dataset.n_outputs * np.maximum(counts, 1)), dtype=torch.float32)
    loss_fn = build_loss(task, config.loss, class_weight).to(device)
    optimizer = build_optimizer(net.parameters(), config.optimizer, config.learning_rate, config.weight_decay,
                                config.momentum)
    batches = _Batches(X_train, y_train, device=device, loader=config.loader, num_workers=config.num_workers,
                       batch_size=config.batch_size, y_dtype=y_dtype)
    steps_per_epoch = len(batches)
    optimizer_steps_per_epoch = math.ceil(steps_per_epoch / config.grad_accum_steps)
    scheduler = build_scheduler(optimizer, config, optimizer_steps_per_epoch)
    scaler = torch.amp.GradScaler("cuda") if amp == torch.float16 else None
    train_model = torch.compile(net) if config.compile else net

    state = TrainingState(started_at=_now(), run_name=config.run_name or save_dir.resolve().name)
    if payload is not None:
        net.load_state_dict(payload["model"])
        optimizer.load_state_dict(payload["optimizer"])
        if scheduler is not None and payload.get("scheduler") is not None:
            scheduler.load_state_dict(payload["scheduler"])
        if scaler is not None and payload.get("scaler") is not None:
            scaler.load_state_dict(payload["scaler"])
        set_rng_state(payload["rng"], device)
        state = TrainingState.from_dict(payload["state"])
        finished = state.status in ("completed", "early_stopped")
        if finished and state.epoch >= config.epochs:
            log(f"nothing to do: {save_dir} already holds a {state.status.replace('_', '-')} run of "
                f"{state.epoch} epoch(s); raise --epochs to continue it, or use --resume never to start over")
            existing = fileio.read_json(save_dir / "metrics.json") or {}
            return RunResult(state.status, 0, save_dir, existing)
        if finished:
            state.bad_epochs = 0  # continuing past an early stop: give the new epochs a fresh patience
        state.status = "running"
        state.resumed.append({"time": _now(), "checkpoint": str(resume_path), "epoch": state.epoch,
                              "step": state.global_step, "step_in_epoch": state.step_in_epoch})
        log(f"resuming from {resume_path} at epoch {state.epoch + 1}, step {state.global_step}")
        tracking.JsonlSink.truncate_after(save_dir / "logs", state.global_step)

    # --- tracking
    log_dir = save_dir / "logs"
    jsonl = tracking.JsonlSink(log_dir)
    sinks: list[Any] = [jsonl]
    tensorboard = None
    if config.tensorboard:
        tensorboard = tracking.TensorBoardSink(log_dir, purge_step=state.global_step + 1 if payload else None)
        sinks.append(tensorboard)
    mlflow_sink = None
    if config.mlflow:
        mlflow_sink = tracking.MlflowSink(
            config.tracking_uri or tracking.default_tracking_uri(), config.experiment_name, state.run_name,
            run_id=state.mlflow_run_id, params={k: v for k, v in config_dict.items() if v is not None},
            tags={"pipeline.save_dir": str(save_dir.resolve()), "pipeline.task": task})
        sinks.append(mlflow_sink)
    tracker = tracking.Tracker(sinks)

    sampler = None
    if config.system_interval > 0:
        def on_sample(sample: dict[str, Any]) -> None:
            flat = {k: v for k, v in sample.items() if isinstance(v, (int, float)) and k != "time"}
            for gpu in sample.get("gpus", []):
                flat.update({f"gpu{gpu['index']}_{k}": v for k, v in gpu.items() if k not in ("index", "name")})
            jsonl.log_dict({k: v for k, v in sample.items() if k != "time"}, state.global_step, "system")
            for sink in tracker.sinks:
                if sink is not jsonl:
                    sink.log_dict(flat, state.global_step, "system")

        sampler = SystemSampler(config.system_interval, on_sample, use_nvml=torch.cuda.is_available(),
                                warn=lambda m: warnings.warn(m, stacklevel=2)).start()

    monitor_metric = config.early_stopping_metric if X_val.shape[0] else "train_loss"
    record = _RunRecord(save_dir, config_dict, schema, dataset, state, resolved, mlflow_sink, sampler, monitor_metric)
    record.write()
    tracker.log_event({"type": "run", "status": "running", "pid": os.getpid(), "host": tracking.host_name(),
                       "run_name": state.run_name, "epochs": config.epochs, "steps_per_epoch": steps_per_epoch,
                       "start_epoch": state.epoch, "start_step": state.global_step, "device": str(device),
                       "task": task, "monitor_metric": monitor_metric, "resumed": bool(payload)})

    def save(kind: str) -> None:
        """kind: 'last' (every epoch / interrupt), 'best'. Periodic copies ride on 'last' at epoch ends."""
        state.mlflow_run_id = mlflow_sink.run_id if mlflow_sink else None
        content = {"model": net.state_dict(), "optimizer": optimizer.state_dict(),
                   "scheduler": scheduler.state_dict() if scheduler is not None else None,
                   "scaler": scaler.state_dict() if scaler is not None else None,
                   "rng": rng_state(device), "state": state.to_dict(), "config": config_dict,
                   "data_fingerprint": schema["data_sha256"],
                   "model_spec": _model_spec(config, dataset, target_scale)}
        if kind == "best":
            checkpoint.save_checkpoint(save_dir / "best.pt", content)
            return
        periodic = state.step_in_epoch == 0 and state.epoch % config.checkpoint_every == 0
        checkpoint.save_checkpoint(save_dir / "last.pt", content,
                                   copies=(save_dir / f"ckpt-epoch{state.epoch:04d}.pt",) if periodic else ())
        if periodic:
            checkpoint.prune_periodic(save_dir, config.keep_checkpoints)

    progress = _progress_enabled(config.progress)
    interrupt = _Interrupt()
    status, message = "running", ""
    try:
        with interrupt:
            status, message = _loop(config, state, train_model, net, optimizer, scheduler, scaler, loss_fn, batches,
                                    dataset, device, amp, target_scale, tracker, record, save, interrupt, progress,
                                    monitor_metric, log)
    except BaseException as exc:
        state.status = "failed" if not isinstance(exc, KeyboardInterrupt) else "interrupted"
        record.finish(state.status, message=f"{type(exc).__name__}: {exc}")
        tracker.log_event({"type": "status", "status": state.status, "message": str(exc)[:500]})
        _close(tracker, sampler, state.status)
        raise

    state.status = status
    if status in ("completed", "early_stopped"):
        best_net = _best_model(save_dir, net, device)  # a copy: `net` keeps the last weights for last.pt
        test = _final_evaluation(best_net, dataset, device, amp, loss_fn, target_scale)
        record.test = test
        _export_model(save_dir, best_net, config, dataset, target_scale)
        save("last")  # records the final status in the checkpoint
        if tensorboard is not None:
            headline = {k: v for k, v in (test or {}).items() if isinstance(v, (int, float))}
            tensorboard.set_hparams({k: v for k, v in config.to_dict().items() if k not in NOT_TRAINING_KEYS}, headline)
        if mlflow_sink is not None:
            _queue_mlflow_artifacts(mlflow_sink, save_dir, config, dataset, best_net, target_scale)
    record.finish(status, message=message)
    tracker.log_event({"type": "status", "status": status, "message": message})
    if mlflow_sink is not None:
        mlflow_sink.log_artifact(save_dir / "metrics.json")
    _close(tracker, sampler, status)
    if mlflow_sink is not None:
        record.write()  # now with the MLflow run id, if the server answered
        if mlflow_sink.run_id != state.mlflow_run_id and status != "failed":
            save("last")  # the server answered after the last save: let a resume re-attach to this run
    exit_code = interrupt.exit_code if status == "interrupted" else EXIT_CODES[status]
    log(f"{status.replace('_', '-')}: {message}" if message else status.replace("_", "-"))
    return RunResult(status, exit_code, save_dir, record.build())


def _close(tracker: tracking.Tracker, sampler: SystemSampler | None, status: str) -> None:
    if sampler is not None:
        sampler.stop()
    tracker.close(status)


def _progress_enabled(setting: str) -> bool:
    if setting == "off":
        return False
    if setting == "bar":
        return True
    # a terminal, or a notebook kernel (papermill runs pass progress="off": its widget would freeze)
    return sys.stderr.isatty() or "ipykernel" in sys.modules


def _loop(config: TrainConfig, state: TrainingState, train_model: nn.Module, net: nn.Module,
          optimizer: torch.optim.Optimizer, scheduler: Any, scaler: Any, loss_fn: nn.Module, batches: _Batches,
          dataset: data.Dataset, device: torch.device, amp: torch.dtype | None, target_scale: tuple[float, float],
          tracker: tracking.Tracker, record: "_RunRecord", save: Any, interrupt: _Interrupt, progress: bool,
          monitor_metric: str, log: Any) -> tuple[str, str]:
    """The training loop, top to bottom. Returns (status, message)."""
    task = dataset.task
    X_val, y_val = dataset.arrays["val"]
    accum = config.grad_accum_steps
    per_step_scheduler = scheduler is not None and not isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)
    regression = task == "regression"
    mean, std = target_scale
    n_train = batches.n
    # entering even a disabled autocast context costs microseconds per step; skip it when AMP is off
    autocast = ((lambda: torch.autocast(device.type, dtype=amp)) if amp is not None else contextlib.nullcontext)

    for epoch in range(state.epoch, config.epochs):
        train_model.train()
        permutation = epoch_permutation(config.seed, epoch, n_train)
        # partial sums restored from the checkpoint when resuming mid-epoch; float64 so replay is exact
        loss_sum = torch.tensor(state.epoch_loss_sum, dtype=torch.float64, device=device)
        samples = state.epoch_samples
        started = time.perf_counter()
        data_seconds = 0.0
        bar = _bar(progress, len(batches), state.step_in_epoch, epoch, config.epochs)
        fetch_start = time.perf_counter()
        for b, xb, yb in batches.iterate(permutation, state.step_in_epoch):
            data_seconds += time.perf_counter() - fetch_start
            if regression:
                yb = (yb - mean) / std
            with autocast():
                out = train_model(xb)                       # (batch, n_outputs)
                loss = loss_fn(out[:, 0] if regression else out, yb)
            scaled = loss / accum if accum > 1 else loss
            (scaler.scale(scaled) if scaler is not None else scaled).backward()
            loss_sum.add_(loss.detach(), alpha=xb.shape[0])  # float64 running sum: one op, no host sync
            samples += xb.shape[0]
            state.global_step += 1
            state.step_in_epoch = b + 1
            boundary = (b + 1) % accum == 0 or b + 1 == len(batches)
            if boundary:
                if config.grad_clip > 0:
                    if scaler is not None:
                        scaler.unscale_(optimizer)
                    nn.utils.clip_grad_norm_(net.parameters(), config.grad_clip)
                if scaler is not None:
                    scaler.step(optimizer)
                    scaler.update()
                else:
                    optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                if per_step_scheduler:
                    scheduler.step()
            if state.global_step % config.log_every == 0:
                value = loss.item()  # one host sync per log interval, not per step
                if not math.isfinite(value):
                    return _fail_non_finite(state, epoch, value)
                tracker.log_dict({"loss": value, "lr": optimizer.param_groups[0]["lr"], "epoch": epoch + 1},
                                 state.global_step, "step")
            if bar is not None:
                bar.update(1)
            if interrupt.signum is not None and boundary:
                state.epoch_loss_sum, state.epoch_samples = float(loss_sum), samples
                if b + 1 == len(batches):
                    break  # the epoch is complete: finish it normally, then stop below
                state.status = "interrupted"
                save("last")
                if bar is not None:
                    bar.close()
                name = signal.Signals(interrupt.signum).name
                return "interrupted", (f"{name} at epoch {epoch + 1}, step {state.global_step}; state saved to "
                                       "last.pt: run the same command again to continue")
            fetch_start = time.perf_counter()
        if bar is not None:
            bar.close()

        # --- end of epoch: validate, record, checkpoint
        epoch_seconds = time.perf_counter() - started
        train_loss = float(loss_sum) / max(1, samples)
        if not math.isfinite(train_loss):
            return _fail_non_finite(state, epoch, train_loss)
        entry: dict[str, Any] = {"epoch": epoch + 1, "step": state.global_step, "train_loss": train_loss}
        if X_val.shape[0]:
            val = evaluate(net, X_val, y_val, task=task, loss_fn=loss_fn, device=device, amp=amp,
                           target_scale=target_scale)
            entry.update({f"val_{k}": v for k, v in val.items()})
            if not math.isfinite(val["loss"]):
                return _fail_non_finite(state, epoch, val["loss"])
        entry.update({"lr": optimizer.param_groups[0]["lr"], "epoch_seconds": round(epoch_seconds, 4),
                      "samples_per_second": round(samples / max(epoch_seconds, 1e-9), 1),
                      "data_seconds": round(data_seconds, 4),
                      "compute_seconds": round(max(0.0, epoch_seconds - data_seconds), 4)})
        if monitor_metric not in entry:
            raise ConfigError(f"--early-stopping-metric {monitor_metric} is not produced for this task; "
                              f"choose one of: {', '.join(k for k in entry if k.startswith(('val_', 'train_')))}")
        current = entry[monitor_metric]
        if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            scheduler.step(-current if metrics.higher_is_better(monitor_metric) else current)  # mode="min"
        improved = metrics.is_better(monitor_metric, current, state.best_value)
        state.epoch, state.step_in_epoch = epoch + 1, 0
        state.epoch_loss_sum, state.epoch_samples = 0.0, 0
        if improved:
            state.best_value, state.best_epoch, state.bad_epochs = current, epoch + 1, 0
        else:
            state.bad_epochs += 1
        state.history.append(entry)
        tracker.log_dict({k: v for k, v in entry.items() if k not in ("step",)}, state.global_step, "epoch")
        if improved:
            save("best")
        stop_early = config.early_stopping_patience > 0 and state.bad_epochs >= config.early_stopping_patience
        # read the flag once: a signal arriving after this point is handled at the next step boundary
        interrupted = interrupt.signum is not None
        if stop_early:
            state.status = "early_stopped"
        elif interrupted:
            state.status = "interrupted"
        if (epoch + 1) % config.checkpoint_every == 0 or stop_early or epoch + 1 == config.epochs or interrupted:
            save("last")
        record.write()
        log(_epoch_line(entry, config.epochs, improved))
        if stop_early:
            return "early_stopped", (f"no improvement in {monitor_metric} for {state.bad_epochs} epochs; best was "
                                     f"epoch {state.best_epoch} ({state.best_value:.6g})")
        if interrupted:
            name = signal.Signals(interrupt.signum).name
            return "interrupted", (f"{name} after epoch {epoch + 1}; state saved to last.pt: run the same command "
                                   "again to continue")
    return "completed", f"{config.epochs} epochs; best {monitor_metric} {state.best_value:.6g} at epoch {state.best_epoch}"


def _fail_non_finite(state: TrainingState, epoch: int, value: float) -> tuple[str, str]:
    """Stop without touching the checkpoints: the last good state stays for a resume with other settings."""
    return "failed", (f"non-finite loss ({value}) in epoch {epoch + 1} at step {state.global_step}; the last good "
                      "checkpoint is kept. Lower --learning-rate, add --grad-clip, or check the data, then re-run "
                      "with --resume never or a new --save-dir")


def _bar(enabled: bool, total: int, initial: int, epoch: int, epochs: int) -> Any:
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=f"epoch {epoch + 1}/{epochs}", leave=False, unit="batch")


def _epoch_line(entry: dict[str, Any], epochs: int, improved: bool) -> str:
    parts = [f"epoch {entry['epoch']}/{epochs}", f"train_loss {entry['train_loss']:.4f}"]
    for key in ("val_loss", "val_accuracy", "val_f1_macro", "val_rmse", "val_r2"):
        if entry.get(key) is not None:
            parts.append(f"{key} {entry[key]:.4f}")
    parts.append(f"lr {entry['lr']:.2e}")
    parts.append(f"{entry['epoch_seconds']:.2f}s ({entry['samples_per_second']:,.0f} samples/s)")
    return "  ".join(parts) + ("  *best" if improved else "")


def _model_spec(config: TrainConfig, dataset: data.Dataset, target_scale: tuple[float, float]) -> dict[str, Any]:
    return {"n_features": dataset.n_features, "n_outputs": dataset.n_outputs, "hidden_sizes": list(config.hidden_sizes),
            "dropout": config.dropout, "norm": config.norm, "task": dataset.task,
            "target_mean": target_scale[0], "target_std": target_scale[1]}


def _best_model(save_dir: Path, net: nn.Module, device: torch.device) -> nn.Module:
    """A copy of `net` holding the best checkpoint's weights (or the current ones if there is none)."""
    best_net = copy.deepcopy(net)
    best = save_dir / "best.pt"
    if best.exists():
        best_net.load_state_dict(checkpoint.load_checkpoint(best, map_location=device)["model"])
    return best_net


def _final_evaluation(net: nn.Module, dataset: data.Dataset, device: torch.device, amp: torch.dtype | None,
                      loss_fn: nn.Module, target_scale: tuple[float, float]) -> dict[str, Any] | None:
    """Score the best weights on the test split: accuracy, balanced accuracy, macro F1, ROC-AUC, confusion
    matrix, per-class scores and ROC curves; RMSE/MAE/R² and a sample of predictions for regression."""
    X_test, y_test = dataset.arrays["test"]
    if X_test.shape[0] == 0:
        return None
    return evaluate(net, X_test, y_test, task=dataset.task, loss_fn=loss_fn, device=device, amp=amp,
                    target_scale=target_scale, detailed=True, classes=dataset.schema["classes"])


def _export_model(save_dir: Path, net: nn.Module, config: TrainConfig, dataset: data.Dataset,
                  target_scale: tuple[float, float]) -> None:
    """The best weights as safetensors, with the model spec and the data schema in its metadata."""
    import json

    from safetensors.torch import save as save_safetensors

    tensors = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    metadata = {"model_spec": json.dumps(_model_spec(config, dataset, target_scale)),
                "schema": json.dumps(dataset.schema), "format": "pipeline.model/1"}
    fileio.atomic_write_bytes(save_dir / "model.safetensors", save_safetensors(tensors, metadata=metadata))


def _queue_mlflow_artifacts(sink: tracking.MlflowSink, save_dir: Path, config: TrainConfig, dataset: data.Dataset,
                            net: nn.Module, target_scale: tuple[float, float]) -> None:
    """Artefacts, the training dataset and the model (with a signature), sent by the sink's worker."""
    import yaml

    config_path = save_dir / "config.yaml"
    fileio.atomic_write_bytes(config_path, yaml.safe_dump(config.to_dict(), sort_keys=True).encode())
    sink.log_artifact(config_path)
    sink.log_artifact(save_dir / "model.safetensors", "model_weights")
    sink.log_artifact(Path(config.data_dir) / "schema.json", "model_weights")
    X_train, y_train = dataset.arrays["train"]
    cpu_model = model_lib.build_mlp(dataset.n_features, dataset.n_outputs, config.hidden_sizes, config.dropout,
                                    config.norm)
    cpu_model.load_state_dict({k: v.detach().cpu() for k, v in net.state_dict().items()})
    cpu_model.eval()
    sample = np.ascontiguousarray(X_train[:5])

    def log_dataset_and_model(client: Any, run_id: str) -> None:
        import mlflow
        from mlflow.entities import DatasetInput, InputTag
        from mlflow.models import infer_signature

        from mlflow.data.dataset_source_registry import resolve_dataset_source

        with warnings.catch_warnings():  # MLflow cannot tell two local source types apart; either is right
            warnings.simplefilter("ignore", UserWarning)
            source = resolve_dataset_source(str(Path(config.data_dir).resolve()))
        dataset_entity = mlflow.data.from_numpy(np.asarray(X_train), targets=np.asarray(y_train),
                                                source=source, name="train")
        client.log_inputs(run_id, datasets=[DatasetInput(dataset_entity._to_mlflow_entity(),
                                                         [InputTag("mlflow.data.context", "training")])])
        with torch.no_grad():
            signature = infer_signature(sample, cpu_model(torch.from_numpy(sample)).numpy())
        mlflow.set_tracking_uri(sink.tracking_uri)
        with mlflow.start_run(run_id=run_id):
            mlflow.pytorch.log_model(cpu_model, name="model", signature=signature, input_example=sample,
                                     pip_requirements=[f"torch=={torch.__version__.split('+')[0]}"])

    sink.at_close(log_dataset_and_model)


class _RunRecord:
    """Builds and atomically rewrites `metrics.json` (strict JSON) from the training state."""

    def __init__(self, save_dir: Path, config_dict: dict[str, Any], schema: dict[str, Any], dataset: data.Dataset,
                 state: TrainingState, resolved: dict[str, str], mlflow_sink: Any, sampler: SystemSampler | None,
                 monitor_metric: str):
        self.path = save_dir / "metrics.json"
        self.monitor_metric = monitor_metric
        self.config = config_dict
        self.schema = schema
        self.dataset = dataset
        self.state = state
        self.resolved = resolved
        self.mlflow_sink = mlflow_sink
        self.sampler = sampler
        self.test: dict[str, Any] | None = None
        self.ended_at: str | None = None
        self.message = ""
        self.versions = _versions()

    def build(self) -> dict[str, Any]:
        s = self.state
        schema = self.schema
        best = None
        if s.best_epoch is not None:
            best = {"epoch": s.best_epoch, "metric": self.monitor_metric, "value": s.best_value}
        system = dict(self.sampler.summary) if self.sampler is not None else {}
        if s.history:
            data_s = sum(h.get("data_seconds", 0.0) for h in s.history)
            total_s = sum(h.get("epoch_seconds", 0.0) for h in s.history)
            system["data_wait_fraction"] = round(data_s / total_s, 4) if total_s else None
        return {
            "schema_version": 1,
            "run": {"name": s.run_name, "status": s.status, "started_at": s.started_at, "ended_at": self.ended_at,
                    "message": self.message, "device": self.resolved["device"], "amp": self.resolved["amp"],
                    "pid": os.getpid(), "host": tracking.host_name(), "resumed": s.resumed,
                    "mlflow": self.mlflow_sink.info() if self.mlflow_sink is not None else None,
                    "versions": self.versions},
            "config": self.config,
            "data": {"task": schema["task"], "target": schema["target"], "classes": schema["classes"],
                     "n_features": self.dataset.n_features, "features": schema["features"]["processed"],
                     "original_features": schema["features"]["original"], "rows": schema["rows"],
                     "class_counts": schema.get("class_counts"), "source": schema["source"]["path"],
                     "source_sha256": schema["source"]["sha256"], "data_sha256": schema["data_sha256"]},
            "progress": {"epoch": s.epoch, "global_step": s.global_step, "total_epochs": self.config["epochs"]},
            "epochs": s.history,
            "best": best,
            "test": self.test,
            "system": system,
        }

    def write(self) -> None:
        fileio.atomic_write_json(self.path, self.build(), durable=False)

    def finish(self, status: str, message: str = "") -> None:
        self.state.status = status
        self.ended_at = _now()
        self.message = message
        self.write()
