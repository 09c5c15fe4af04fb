"""Run statuses, in one table: what each means, and the exit codes of the trainer and of the monitor.

    python solutions/train_pipeline.py ...; echo $?          # the trainer's code for its own run
    python solutions/monitor_training.py --log-dir ...; echo $?   # the monitor's code for the run it watched

The two columns differ on purpose where the processes differ: the trainer interrupted by a signal exits
128 + the signal number (130 for SIGINT, 143 for SIGTERM), as shells expect of a process a signal stopped;
the monitor was not interrupted itself, so it reports an interrupted run with 3, and a run whose process
vanished without a final status (which only an observer can see) with 4.
"""
from __future__ import annotations

import signal
from dataclasses import dataclass


@dataclass(frozen=True)
class Status:
    name: str
    meaning: str
    trainer_exit: int | None   # None: the trainer never ends with this status
    monitor_exit: int | None   # None: the monitor is still following


RUNNING, COMPLETED, EARLY_STOPPED, FAILED, INTERRUPTED, LOST = (
    "running", "completed", "early_stopped", "failed", "interrupted", "lost")

STATUSES = {s.name: s for s in (
    Status(RUNNING, "training is under way (or its process died before it could say otherwise)", None, None),
    Status(COMPLETED, "every epoch ran", 0, 0),
    Status(EARLY_STOPPED, "the monitored metric stopped improving for --early-stopping-patience epochs", 0, 0),
    Status(FAILED, "training could not go on (e.g. a non-finite loss); the last good checkpoint is kept", 1, 1),
    Status(INTERRUPTED, "SIGINT or SIGTERM: the state was saved; the same command continues it", 130, 3),
    Status(LOST, "the process is gone without a final status (killed or crashed); seen by the monitor only",
           None, 4),
)}
FINISHED = (COMPLETED, EARLY_STOPPED)                 # a run that may be continued by raising --epochs
TERMINAL = (COMPLETED, EARLY_STOPPED, FAILED, INTERRUPTED, LOST)


def trainer_exit_code(status: str, signum: int | None = None) -> int:
    """The trainer's exit code: 128 + the signal for an interrupted run (SIGINT when unknown)."""
    if status == INTERRUPTED:
        return 128 + int(signum or signal.SIGINT)
    code = STATUSES[status].trainer_exit
    if code is None:
        raise ValueError(f"the trainer does not end with status {status!r}")
    return code


def monitor_exit_code(status: str) -> int:
    """The monitor's exit code for the run it watched (0 for a status it does not know)."""
    known = STATUSES.get(status)
    if known is None or known.monitor_exit is None:
        return 0
    return known.monitor_exit
