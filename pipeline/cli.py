"""What every script in solutions/ shares: turning the project's errors into one line and exit code 2.

A full disk, a read-only folder or a missing permission is the machine's state, not a bug: it too becomes one
line naming the file and what to do (what was written before is intact: every file is replaced atomically).
"""
from __future__ import annotations

import errno
import os
import sys
from collections.abc import Callable

from pipeline import rundir
from pipeline.errors import PipelineError

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def guarded(body: Callable[[], int]) -> int:
    """Run `body`; bad input becomes `error: ...` on stderr and exit 2 (no traceback). Bugs still raise."""
    try:
        return body()
    except PipelineError as exc:
        if os.environ.get("RANK", "0") == "0":  # under torchrun every rank refuses; one says why
            print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except OSError as exc:
        advice = ENVIRONMENT.get(exc.errno)
        if advice is None:
            raise  # not the machine's state: a bug keeps its traceback
        if os.environ.get("RANK", "0") == "0":
            print(f"error: {written_name(exc.filename)}: {exc.strerror}; {advice}", file=sys.stderr)
        return EXIT_USAGE
    except RuntimeError as exc:
        if not lost_peer(exc):
            raise
        if not os.environ.get(LAUNCHER_ENV):  # under pipeline.launch the launcher names the process that died
            print(f"error: rank {os.environ.get('RANK', '?')}: another process of this torchrun job stopped "
                  f"({str(exc).splitlines()[0][-120:]}); run the same command again to continue from the last "
                  "checkpoint", file=sys.stderr)
        return EXIT_FAILED


LAUNCHER_ENV = "PIPELINE_LAUNCHER"  # set by `python -m pipeline.launch` for its workers


def lost_peer(exc: RuntimeError) -> bool:
    """A collective that failed because another process of the job is gone (killed, crashed): not a bug here."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    distributed = sys.modules.get("torch.distributed")
    if distributed is not None and isinstance(exc, getattr(distributed, "DistNetworkError", ())):
        return True
    text = str(exc)
    return any(sign in text for sign in ("Connection reset by peer", "Connection closed by peer", "Broken pipe",
                                         "NCCL communicator was aborted", "remote process exited"))


KEPT = "what was saved before is intact; run the same command again"
ENVIRONMENT = {
    errno.ENOSPC: f"the disk is full: free some space ({KEPT})",
    errno.EDQUOT: f"the disk quota is used up: free some space ({KEPT})",
    errno.EFBIG: f"a file grew beyond this process's size limit (ulimit -f) ({KEPT})",
    errno.EROFS: "choose a folder on a writable disk",
    errno.EACCES: "permission denied: choose a folder you can write to, or fix its permissions",
    errno.EPERM: "not permitted: choose a folder you can write to, or fix its permissions",
}


def written_name(filename: object) -> str:
    """The file a write was for: `.last.pt.3f2a9c0d1b2e.tmp` (an atomic write's temporary file) is last.pt."""
    if filename is None:
        return "(a file)"
    path = os.fspath(filename) if isinstance(filename, (str, os.PathLike)) else str(filename)
    head, name = os.path.split(path)
    target = rundir.target_of_temporary(name)
    return os.path.join(head, target) if target else path
