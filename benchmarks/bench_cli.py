"""Benchmark: how long each CLI takes to answer --help (goal: <= 0.5 s), against `python -c pass` in the same run.

    python benchmarks/bench_cli.py [--rounds 5]

Each command runs as a fresh process, the commands interleaved round by round; the median and the minimum of the
wall times are printed. The interpreter's own start-up (`python -c pass`) is the floor no CLI can go under.
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = {
    "python -c pass": ["-c", "pass"],
    **{f"{name}.py --help": [str(ROOT / "solutions" / f"{name}.py"), "--help"]
       for name in ("prepare_dataset", "train_pipeline", "monitor_training", "generate_report", "tune")},
    "python -m pipeline.server --help": ["-m", "pipeline.server", "--help"],
    "python -m pipeline.course --help": ["-m", "pipeline.course", "--help"],
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="runs of each command (default 5)")
    args = parser.parse_args()
    times: dict[str, list[float]] = {name: [] for name in COMMANDS}
    for _ in range(args.rounds):
        for name, argv in COMMANDS.items():
            started = time.perf_counter()
            done = subprocess.run([sys.executable, *argv], capture_output=True, cwd=ROOT)
            times[name].append(time.perf_counter() - started)
            if done.returncode != 0:
                sys.exit(f"{name} failed: {done.stderr.decode()[-500:]}")
    floor = statistics.median(times["python -c pass"])
    slow = []
    for name, values in times.items():
        median = statistics.median(values)
        print(f"{name:36s} median {median:.3f}s  min {min(values):.3f}s  ({median - floor:+.3f}s over the interpreter)")
        if median > 0.5 and name != "python -c pass":
            slow.append(name)
    print("goal: every --help <= 0.5 s (median): " + ("met" if not slow else "NOT met by " + ", ".join(slow)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
