"""The process around a run: which device and precision, one run per save folder, signals, determinism,
the progress bar.

    device = resolve_device("auto")                  # cuda if there is a GPU, else cpu
    with SaveDirLock(save_dir), Interrupt() as interrupt:
        ...                                          # the loop checks interrupt.signum at step boundaries

Nothing here knows about models or metrics; `train.run` uses these as context managers around its steps.
"""
from __future__ import annotations

import fcntl
import os
import platform
import signal
import sys
import threading
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from types import FrameType
from collections.abc import Callable, Sequence
from typing import IO, Any, Iterator

import torch

from pipeline.errors import ConfigError


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


@contextmanager
def determinism(enabled: bool, device: torch.device) -> Iterator[None]:
    """torch.use_deterministic_algorithms for the run, then the process-wide switch as it was found."""
    was = torch.are_deterministic_algorithms_enabled()
    if enabled:
        torch.use_deterministic_algorithms(True)
        if device.type == "cuda":
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(was)


class Interrupt:
    """SIGINT/SIGTERM set a flag; the loop saves at the next step boundary and exits 130/143.

    A second Ctrl-C means "now" and raises KeyboardInterrupt. Outside the main thread (where Python
    cannot install signal handlers, e.g. a run started on a notebook's worker thread) it stays inert.

    `received` is the signal this process got; `signum` is the one the run acts on. Alone they are the same.
    Under torchrun (`shared=True`) only the ranks' agreement sets `signum` (`train_one_epoch`, `fit`), so every
    rank stops at the same step. `received` is never overwritten: a signal that lands while an all-reduce is
    under way is shared at the next agreement instead of being lost."""

    def __init__(self, shared: bool = False) -> None:
        self.shared = shared
        self.received: int | None = None
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> "Interrupt":
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.received is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.received = signum
        if not self.shared:
            self.signum = signum

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    @property
    def name(self) -> str:
        return signal.Signals(self.signum or signal.SIGINT).name


class SaveDirLock:
    """One run per save dir: a second process gets a clear error instead of corrupting the first."""

    def __init__(self, save_dir: Path, *, made: Sequence[Path] = ()):
        self.path = Path(save_dir) / ".lock"
        self.handle: IO[str] | None = None
        self.created = False
        self.made = list(made)  # folders the run created, deepest first: removed again if it ends with nothing else

    def __enter__(self) -> "SaveDirLock":
        self.created = not self.path.exists()
        handle = open(self.path, "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise ConfigError(f"{self.path.parent}: already in use by a running training (pid {holder}); wait for "
                              "it or choose another --save-dir") from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        self.handle = handle
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        if self.handle is None:
            return
        try:
            if exc_type is not None and self.created:  # refused (or failed): the lock was this run's alone
                self.path.unlink()
                for folder in self.made:
                    folder.rmdir()  # only while empty (OSError otherwise: then it stays)
        except OSError:
            pass
        finally:
            self.handle.close()


def tolerant(log: Callable[[str], None]) -> Callable[[str], None]:
    """`log`, surviving a closed stdout (`| head -3`, a dead `tee`, a dropped ssh session): output is a
    convenience and training goes on; later output goes to /dev/null."""
    def write(message: str) -> None:
        try:
            log(message)
        except (BrokenPipeError, ConnectionResetError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            os.close(devnull)
    return write


def progress_enabled(setting: str) -> bool:
    if setting == "off":
        return False
    if setting == "bar":
        return True
    # a terminal, or a notebook kernel (papermill runs pass progress="off": its widget would freeze)
    return sys.stderr.isatty() or "ipykernel" in sys.modules


def progress_bar(enabled: bool, *, total: int, initial: int, epoch: int, epochs: int) -> Any:
    """A tqdm bar over the batches of one epoch, or None."""
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=f"epoch {epoch + 1}/{epochs}", leave=False, unit="batch")


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")




def versions() -> dict[str, str]:
    import numpy
    import pandas

    from pipeline import __version__

    return {"pipeline": __version__, "python": platform.python_version(), "torch": torch.__version__,
            "numpy": numpy.__version__, "pandas": pandas.__version__,
            "cuda": torch.version.cuda or "none", "platform": platform.platform()}
