"""torchrun that ends the way the project's commands end: one line on error, and the workers' exit code.

    python -m pipeline.launch --standalone --nproc_per_node=2 solutions/train_pipeline.py --data-dir ... \
        --save-dir checkpoints/ddp

It takes torchrun's own options (parsed by `torch.distributed.run`'s parser) and launches the workers the same
way; only the end differs. torchrun answers a worker's failure with a ChildFailedError traceback and exit 1
(after the worker's own one-line error), and a SIGTERM to itself with a SignalException traceback, also 1.
Here:
- a worker that exits with a code (2: bad input or settings, 4: the run failed) leaves its line the only one,
  and that code is the launcher's;
- a worker killed by a signal gets one line naming its rank and the signal, and exit 128 + the signal's number;
- a SIGTERM or Ctrl-C to the launcher stops the workers (each saves a checkpoint at the same step, as under
  torchrun) and exits 143 or 130.
The same command again continues the run. `torchrun` itself remains fine to use; this changes nothing else.
"""
from __future__ import annotations

import logging
import os
import signal
import sys


def exit_code_of(failure_code: int) -> int:
    """A worker's exit code as the launcher's: a negative one (-N: killed by signal N) becomes 128 + N."""
    return 128 - failure_code if failure_code < 0 else failure_code


def main(argv: list[str] | None = None) -> int:
    from torch.distributed import run as torchrun
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

    from pipeline.cli import LAUNCHER_ENV

    args = torchrun.parse_args(argv)
    os.environ[LAUNCHER_ENV] = "1"  # the workers inherit it: a survivor of a killed rank leaves the line to us
    # the agent's own log lines (rendezvous banners, "failed (exitcode: 2) ..." with the worker's command line)
    # repeat what the one line below, or the worker's own, already says
    logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL)
    try:
        torchrun.run(args)
    except ChildFailedError as exc:
        rank, failure = exc.get_first_failure()
        code = exit_code_of(failure.exitcode)
        if failure.exitcode < 0:  # killed: it printed nothing
            print(f"error: rank {rank} (pid {failure.pid}) was killed by {failure.signal_name()}; the other "
                  "processes were stopped. Run the same command again to continue from the last checkpoint",
                  file=sys.stderr)
        return code
    except SignalException as exc:
        return 128 + int(exc.sigval)
    except KeyboardInterrupt:
        return 128 + signal.SIGINT
    return 0


if __name__ == "__main__":
    sys.exit(main())
