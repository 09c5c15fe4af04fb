"""Checkpoints: the complete training state, written atomically and verified on load.

A checkpoint is a `torch.save` dict of tensors and plain values only, so `torch.load(path,
weights_only=True)` opens it (no pickle of arbitrary objects). It carries a sha256 over its own contents:
a torn or bit-flipped file is detected and skipped for the previous valid one, never trusted.

    payload = load_checkpoint(Path("checkpoints/last.pt"))   # raises CheckpointError if damaged
"""
from __future__ import annotations

import hashlib
import io
import re
import warnings
from pathlib import Path
from typing import Any

import torch

from pipeline import fileio
from pipeline.errors import CheckpointError

FORMAT = "pipeline.checkpoint/1"
PERIODIC = re.compile(r"^ckpt-epoch(\d+)\.pt$")


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
    save_dir = Path(save_dir)
    periodic = sorted((p for p in save_dir.glob("ckpt-epoch*.pt") if PERIODIC.match(p.name)),
                      key=lambda p: int(PERIODIC.match(p.name).group(1)), reverse=True)
    last = save_dir / "last.pt"
    return ([last] if last.exists() else []) + periodic


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
    periodic = [p for p in candidates(save_dir) if p.name != "last.pt"]
    for old in periodic[keep:]:
        old.unlink(missing_ok=True)
