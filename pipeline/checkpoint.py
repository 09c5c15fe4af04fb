"""Checkpoints: the complete training state, written atomically and verified on load; and the resume decision.

A checkpoint is a `torch.save` dict of tensors and plain values only, so `torch.load(path,
weights_only=True)` opens it (no pickle of arbitrary objects). It carries a sha256 over its own contents:
a torn or bit-flipped file is detected and skipped for the previous valid one, never trusted.

    payload = load_checkpoint(Path("checkpoints/last.pt"))   # raises CheckpointError if damaged

What a checkpoint holds is written by `Checkpointer.save` and read back by `Checkpointer.restore`, side by
side below: the model, optimizer, scheduler and scaler states, the RNG states, the `TrainingState`, and the
run's identity (its resolved settings, the data fingerprint, the model spec). `find_resume` decides, before
anything is written, whether a run continues and from which file, and refuses one whose settings differ;
`make_room` then acts on that decision (the only function here that removes files from an earlier run).
"""
from __future__ import annotations

import dataclasses
import hashlib
import io
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from pipeline import config as config_lib, fileio, status as status_lib
from pipeline.errors import CheckpointError
from pipeline.rundir import RunDir
from pipeline.optim import StepParts

FORMAT = "pipeline.checkpoint/1"


def _digest(value: Any, digest: "hashlib._Hash", key: str = "") -> None:
    """Feed a nested structure into `digest` in a canonical order (dict keys sorted)."""
    if isinstance(value, torch.Tensor):
        tensor = value.detach().cpu().contiguous()
        digest.update(f"{key}:T{tensor.dtype}{tuple(tensor.shape)}".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    elif isinstance(value, dict):
        digest.update(f"{key}:D{len(value)}".encode())
        for k in sorted(value, key=str):
            _digest(value[k], digest, f"{key}/{k}")
    elif isinstance(value, (list, tuple)):
        digest.update(f"{key}:L{len(value)}".encode())
        for i, item in enumerate(value):
            _digest(item, digest, f"{key}/{i}")
    else:
        digest.update(f"{key}:{type(value).__name__}={value!r}".encode())


def checksum(payload: dict[str, Any]) -> str:
    digest = hashlib.sha256()
    _digest({k: v for k, v in payload.items() if k != "checksum"}, digest)
    return digest.hexdigest()


def save_checkpoint(path: Path, payload: dict[str, Any], *, copies: tuple[Path, ...] = ()) -> None:
    """Write `payload` (+ format tag and checksum) to `path`, and to each of `copies`, atomically and durably.

    Serialised and hashed once; the copies are separate files (not links), so damage to one spares the others."""
    payload = dict(payload, format=FORMAT)
    payload["checksum"] = checksum(payload)
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    for target in (path, *copies):
        fileio.atomic_write_bytes(Path(target), buffer.getvalue())


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load and verify a checkpoint with `weights_only=True`; CheckpointError if unreadable or altered."""
    path = Path(path)
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such checkpoint") from None
    except Exception as exc:  # torn zip, truncated file, garbage: all mean "not a valid checkpoint"
        raise CheckpointError(f"{path}: unreadable checkpoint ({type(exc).__name__}: "
                              f"{str(exc).splitlines()[0][:120] if str(exc) else ''})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a checkpoint written by this pipeline")
    if payload.get("checksum") != checksum(payload):
        raise CheckpointError(f"{path}: checksum mismatch (the file was altered or damaged)")
    return payload


def candidates(save_dir: Path) -> list[Path]:
    """Checkpoint files that could continue a run, newest first: last.pt, then periodic ones by epoch."""
    run = RunDir(save_dir)
    return ([run.last] if run.last.exists() else []) + run.periodic_checkpoints()


def latest_valid(save_dir: Path) -> tuple[Path, dict[str, Any]] | None:
    """The newest checkpoint that verifies. Damaged ones are skipped with a warning; if checkpoints exist
    but none verifies, that is an error (silently starting afresh would throw the run away)."""
    found = candidates(save_dir)
    if not found:
        return None
    problems = []
    for path in found:
        try:
            payload = load_checkpoint(path)
        except CheckpointError as exc:
            problems.append(str(exc))
            continue
        for problem in problems:
            warnings.warn(f"skipping {problem}; resuming from {path.name}", stacklevel=2)
        return path, payload
    raise CheckpointError(f"{save_dir}: {len(found)} checkpoint(s) found but none is valid "
                          f"({problems[0]}); restore a good one, or start afresh with --resume never")


def prune_periodic(save_dir: Path, keep: int) -> None:
    """Keep the newest `keep` periodic checkpoints (0 keeps all)."""
    if keep <= 0:
        return
    for old in RunDir(save_dir).periodic_checkpoints()[keep:]:
        old.unlink(missing_ok=True)


# ------------------------------------------------------------------------------------ the training state
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
    shard_partials: list[list[float]] = field(default_factory=list)  # under torchrun: each rank's partial sums
    history: list[dict[str, Any]] = field(default_factory=list)
    resumed: list[dict[str, Any]] = field(default_factory=list)
    status: str = status_lib.RUNNING
    started_at: str = ""
    mlflow_run_id: str | None = None
    run_name: str = ""
    run_key: str = ""              # this training run's own id, from its first step: finds its MLflow run even when
                                   # the process was killed before the server's answer reached a checkpoint

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "TrainingState":
        return cls(**values)


def rng_state(device: torch.device) -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    torch.set_rng_state(state["torch"].cpu())
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


class Checkpointer:
    """Writes `last.pt` (plus a periodic `ckpt-epochNNNN.pt` every `every` epochs, `keep` of them kept) and
    `best.pt` in `save_dir`, and restores what it wrote. `identity` is what a resume must match: the
    resolved settings (`config`), the data fingerprint and the model spec."""

    def __init__(self, save_dir: Path, parts: StepParts, *, device: torch.device, identity: dict[str, Any],
                 every: int, keep: int, enabled: bool = True):
        self.save_dir, self.parts, self.device = Path(save_dir), parts, device
        self.identity, self.every, self.keep = identity, every, keep
        self.enabled = enabled  # under torchrun only rank 0 writes

    def save(self, state: TrainingState, kind: str = "last") -> None:
        """kind: 'last' (epoch ends, interrupts, the end) or 'best'."""
        if not self.enabled:
            return
        p = self.parts
        content = {"model": p.net.state_dict(), "optimizer": p.optimizer.state_dict(),
                   "scheduler": p.scheduler.state_dict() if p.scheduler is not None else None,
                   "scaler": p.scaler.state_dict() if p.scaler is not None else None,
                   "rng": rng_state(self.device), "state": state.to_dict(), **self.identity}
        if kind == "best":
            save_checkpoint(RunDir(self.save_dir).best, content)
            return
        periodic = state.step_in_epoch == 0 and state.epoch > 0 and state.epoch % self.every == 0
        copies = (RunDir(self.save_dir).periodic(state.epoch),) if periodic else ()
        save_checkpoint(RunDir(self.save_dir).last, content, copies=copies)
        if periodic:
            prune_periodic(self.save_dir, self.keep)

    def restore(self, payload: dict[str, Any]) -> TrainingState:
        """Load every state `save` wrote into the parts; return the training state."""
        p = self.parts
        p.net.load_state_dict(payload["model"])
        p.optimizer.load_state_dict(payload["optimizer"])
        if p.scheduler is not None and payload.get("scheduler") is not None:
            p.scheduler.load_state_dict(payload["scheduler"])
        if p.scaler is not None and payload.get("scaler") is not None:
            p.scaler.load_state_dict(payload["scaler"])
        set_rng_state(payload["rng"], self.device)
        return TrainingState.from_dict(payload["state"])

    def best_weights(self) -> dict[str, torch.Tensor] | None:
        """The best epoch's model weights, or None when no epoch has been best yet."""
        best = RunDir(self.save_dir).best
        return load_checkpoint(best, map_location=self.device)["model"] if best.exists() else None


# ------------------------------------------------------------------------------------ the resume decision
@dataclass
class Resume:
    path: Path
    payload: dict[str, Any]

    @property
    def finished(self) -> bool:
        return self.payload["state"]["status"] in status_lib.FINISHED

    def nothing_to_do(self, epochs: int) -> bool:
        """A finished run asked for no more epochs than it was started with (or reached)."""
        state = self.payload["state"]
        planned = self.payload["config"].get("epochs", state["epoch"])
        return self.finished and epochs <= max(planned, state["epoch"])


def arrays_sha256(arrays: dict[str, tuple[Any, Any]]) -> str:
    """A hash of the processed splits' contents (schema.json's fingerprint covers only the schema: an edited
    train_X.npy must not pass for the data a checkpoint was trained on)."""
    digest = hashlib.sha256()
    for name in sorted(arrays):
        for part in arrays[name]:
            digest.update(f"{name}:{part.dtype}{part.shape}".encode())
            digest.update(memoryview(part).cast("B") if part.flags.c_contiguous else part.tobytes())
    return digest.hexdigest()


def find_resume(save_dir: Path, resume: str, *, config: dict[str, Any], data_fingerprint: str,
                arrays_fingerprint: str | None = None) -> Resume | None:
    """Which checkpoint the run continues from (None: a fresh start), decided before anything is written
    (`make_room` then acts on the decision).

    `resume`: auto (the newest valid checkpoint in `save_dir`, if any), never (a fresh start) or a checkpoint
    path. A checkpoint whose settings or data differ is refused, listing what differs."""
    save_dir = Path(save_dir)
    if resume == "never":
        return None
    if resume == "auto":
        found = latest_valid(save_dir)
        if found is None:
            return None
        path, payload = found
    else:
        path = Path(resume)
        payload = load_checkpoint(path)
    differences = config_lib.config_differences(payload["config"], config)
    if differences:
        raise CheckpointError(f"{path}: this run was started with different settings (" + "; ".join(differences)
                              + "); use a new --save-dir or --resume never")
    saved_arrays = payload.get("arrays_sha256")  # absent from checkpoints written before it was recorded
    if payload["data_fingerprint"] != data_fingerprint or (saved_arrays and arrays_fingerprint
                                                           and saved_arrays != arrays_fingerprint):
        raise CheckpointError(f"{path}: the checkpoint was trained on different data than "
                              f"{config.get('data_dir')} (data fingerprint differs); "
                              "use a new --save-dir or --resume never")
    return Resume(path, payload)


def make_room(save_dir: Path, resume: str, found: Resume | None, *, log: Callable[[str], None]) -> None:
    """Act on `find_resume`'s decision (call it holding the save-dir lock): remove the temporaries a killed
    run left half-written and, for a fresh start, this pipeline's earlier outputs: all of them under
    --resume never, or those of an earlier run that stopped before its first checkpoint (nothing to
    continue, and its partial logs must not mix with this run's)."""
    save_dir = Path(save_dir)
    remove_stale_temporaries(save_dir)
    if found is not None:
        return
    if resume == "never":
        clear_run_outputs(save_dir)
    elif resume == "auto" and RunDir(save_dir).has_earlier_run():
        log(f"{save_dir}: an earlier run left no checkpoint; starting afresh")
        clear_run_outputs(save_dir)


def remove_stale_temporaries(save_dir: Path) -> list[Path]:
    """Delete the temporary files a killed run left half-written (only ours, by name; call it holding the
    save-dir lock, so no live writer owns them). Returns what was removed."""
    removed = RunDir(save_dir).stale_temporaries()
    for path in removed:
        path.unlink(missing_ok=True)
    return removed


def clear_run_outputs(save_dir: Path) -> None:
    """--resume never: remove this pipeline's own files from an earlier run in `save_dir` (nothing else)."""
    import shutil

    for path in RunDir(save_dir).ours():
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
