"""Tune the network's hyperparameters with Optuna (and boosted trees with the same budget, for comparison).

    python solutions/tune.py --data-dir processed_data --save-dir runs/tune --n-trials 20
    python solutions/tune.py --data-dir processed_data --save-dir runs/tune --n-trials 20 --jobs 2

Every trial is a normal run folder (runs/tune/trials/trial-NNNN); the study lives in runs/tune/study.db. Killing
the tuner and running the same command continues the study: a trial cut short resumes from its checkpoint and
counts once. At the end: runs/tune/tuning.json and the best trial's report with a tuning section (report.html).
Exit codes: 0 done (or --minutes reached), 1 stopped before the budget, 2 bad input, 130 after Ctrl-C.
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from pipeline.tune import build_parser, main  # noqa: E402,F401  (light: optuna and torch load when a study starts)

if __name__ == "__main__":
    sys.exit(main())
