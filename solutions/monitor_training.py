"""A live terminal dashboard of a training run in another process.

    python solutions/monitor_training.py --log-dir checkpoints/logs            # follows until the run ends
    python solutions/monitor_training.py --log-dir checkpoints/logs --once     # one snapshot

Start it before, during or after the run. Exit code: 0 completed/early-stopped, 1 failed, 3 interrupted,
4 lost (the training process vanished without a final status).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from pipeline import cli, monitor  # noqa: E402
from pipeline.errors import PipelineError  # noqa: E402


def refresh_seconds(text: str) -> float:
    """--refresh: a number of seconds in (0, 3600] (0, negative, nan, inf and 1e300 are refused)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not 0 < value <= monitor.MAX_REFRESH_S:
        raise argparse.ArgumentTypeError(f"expected seconds in (0, {monitor.MAX_REFRESH_S:.0f}], got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--log-dir", type=Path, required=True, help="the run's logs folder (SAVE_DIR/logs)")
    parser.add_argument("--refresh", type=refresh_seconds, default=2.0,
                        help="seconds between updates (at most 3600; default 2)")
    parser.add_argument("--once", action="store_true", help="print one snapshot and exit")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def body() -> int:
        if args.log_dir.exists() and not args.log_dir.is_dir():
            raise PipelineError(f"{args.log_dir}: not a folder; pass the run's logs folder (SAVE_DIR/logs)")
        return monitor.follow(args.log_dir, refresh=args.refresh, once=args.once)

    return cli.guarded(body)


if __name__ == "__main__":
    sys.exit(main())
