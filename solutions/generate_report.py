"""A standalone HTML training report (papermill executes the report notebook, nbconvert renders it).

    python solutions/generate_report.py --metrics checkpoints/metrics.json --output training_report.html
    python solutions/generate_report.py --metrics runs/a/metrics.json --compare runs/b/metrics.json --output cmp.html
    python solutions/generate_report.py --metrics runs/tune/trials/trial-0007/metrics.json \
        --tuning runs/tune/tuning.json --output tuned.html
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from pipeline import cli, report  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--metrics", type=Path, required=True, help="a run's metrics.json")
    parser.add_argument("--output", type=Path, required=True, help="the HTML file to write")
    parser.add_argument("--compare", type=Path, nargs="*", default=[], help="other runs' metrics.json to overlay")
    parser.add_argument("--title", default="Training report", help="the report's title (default: Training report)")
    parser.add_argument("--tuning", type=Path, help="a study's tuning.json (solutions/tune.py): adds a tuning section")
    parser.add_argument("--executed-notebook", type=Path, help="also keep the executed report notebook here")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def body() -> int:
        out = report.generate(args.metrics, args.output, compare=args.compare, title=args.title,
                              executed_notebook=args.executed_notebook, tuning=args.tuning)
        print(f"wrote {out} ({out.stat().st_size / 1024:.0f} KiB); open it in any browser, no network needed")
        return cli.EXIT_OK

    return cli.guarded(body)


if __name__ == "__main__":
    sys.exit(main())
