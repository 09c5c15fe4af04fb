"""Benchmark: the pipeline's networks against boosted trees and a linear model, on real tables, with no tuning.

    OMP_NUM_THREADS=1 python benchmarks/bench_tabular.py [--seeds 1] [--models mlp,realmlp,tabm] [--only wine,cars]
    OMP_NUM_THREADS=1 python benchmarks/bench_tabular.py --models 'mlp,mlp:clip_predictions=false' --only cars

Every table ships with an installed package and is read offline: scikit-learn's breast_cancer, wine, digits
and diabetes, the bundled penguins (data/train.csv), an imbalanced cut of the bundled Adult census table (6%
positives) and, where installed (`pip install -e .[bench]`), statsmodels' fair, anes96, randhie and engel and
vega_datasets' cars and seattle-weather; a missing package skips its tables with a message. Each table is
prepared by `data.prepare_dataset` (seeded 70/10/20 split), then trained by the engine with its defaults (50
epochs, early stopping on validation loss, the best epoch restored; only `--model` differs), and scikit-learn's
HistGradientBoosting and logistic/ridge regression are fitted on the same processed training split. Everyone is
scored on the same test split: balanced accuracy for classification, R² for regression. `--seeds N` repeats
with N split+training seeds and prints means.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------------------------ the tables
@dataclasses.dataclass
class Table:
    name: str
    load: Callable[[], pd.DataFrame]   # the raw table, target last
    source: str                        # the package it ships with
    note: str = ""


def _sklearn(name: str) -> Callable[[], pd.DataFrame]:
    def load() -> pd.DataFrame:
        from sklearn import datasets

        bunch = getattr(datasets, f"load_{name}")(as_frame=True)
        frame = bunch.frame.rename(columns={"target": "label"})
        if name != "diabetes":  # classes by name, so the task is classification whatever the codes
            frame["label"] = np.asarray(bunch.target_names)[frame["label"].to_numpy()]
        return frame
    return load


def _penguins() -> pd.DataFrame:
    return pd.read_csv(ROOT / "data" / "train.csv")


def _adult_rare() -> pd.DataFrame:
    """The bundled Adult census table with the >50K class thinned to 6% of the rows (8,000 rows): imbalanced."""
    frame = pd.read_csv(ROOT / "data" / "adult.csv")
    rich, rest = frame[frame["income"] == ">50K"], frame[frame["income"] != ">50K"]
    rest = rest.sample(n=min(len(rest), 7520), random_state=0)
    return pd.concat([rest, rich.sample(n=480, random_state=0)]).sample(frac=1.0, random_state=0)


def _statsmodels(name: str) -> Callable[[], pd.DataFrame]:
    def load() -> pd.DataFrame:
        from statsmodels import datasets

        frame = getattr(datasets, name).load_pandas().data
        if name == "fair":  # had an affair at all (32% yes); the time spent would leak it
            frame = frame.assign(label=np.where(frame.pop("affairs") > 0, "yes", "no"))
        elif name == "anes96":  # voted Dole (1) or Clinton (0)
            frame = frame.assign(label=np.where(frame.pop("vote") > 0, "dole", "clinton"))
        elif name == "randhie":  # doctor visits in a year: a heavy-tailed count (regression)
            frame = frame.sample(n=8000, random_state=0).reset_index(drop=True)
            frame = frame[[c for c in frame.columns if c != "mdvis"] + ["mdvis"]].astype({"mdvis": float})
        return frame
    return load


def _vega(name: str) -> Callable[[], pd.DataFrame]:
    def load() -> pd.DataFrame:
        from vega_datasets import local_data

        frame = getattr(local_data, name.replace("-", "_"))()
        if name == "cars":  # miles per gallon from the car's specs (6 rows without it are dropped by prepare)
            frame = frame[[c for c in frame.columns if c != "Miles_per_Gallon"] + ["Miles_per_Gallon"]]
        return frame
    return load


TABLES = [
    Table("breast_cancer", _sklearn("breast_cancer"), "scikit-learn"),
    Table("wine", _sklearn("wine"), "scikit-learn"),
    Table("digits", _sklearn("digits"), "scikit-learn"),
    Table("penguins", _penguins, "data/train.csv (palmerpenguins)"),
    Table("anes96", _statsmodels("anes96"), "statsmodels"),
    Table("fair", _statsmodels("fair"), "statsmodels"),
    Table("seattle_weather", _vega("seattle-weather"), "vega_datasets"),
    Table("adult_6pct", _adult_rare, "data/adult.csv", note="the >50K class thinned to 6%"),
    Table("diabetes", _sklearn("diabetes"), "scikit-learn"),
    Table("cars", _vega("cars"), "vega_datasets"),
    Table("randhie", _statsmodels("randhie"), "statsmodels", note="8,000 of 20,190 rows"),
    Table("engel", _statsmodels("engel"), "statsmodels", note="food spending by income: a few incomes 4-8 std out"),
]


# ---------------------------------------------------------------------------------------------- the contestants
def variant(spec: str) -> tuple[str, dict]:
    """"mlp" -> ("mlp", {}); "mlp:loss=huber;clip_predictions=false" -> ("mlp", {"loss": "huber", ...})."""
    import yaml

    model, _, overrides = spec.partition(":")
    settings = dict(item.split("=", 1) for item in overrides.split(";") if item)
    return model, {k: yaml.safe_load(v) for k, v in settings.items()}


def train_network(data_dir: Path, save_dir: Path, model: str, seed: int) -> tuple[float, float, int]:
    """(test score, seconds, epochs run) of the engine with its defaults and `--model model` (a `variant`)."""
    from pipeline import config as config_lib, train

    model, overrides = variant(model)
    values = dict(data_dir=str(data_dir), save_dir=str(save_dir), model=model, seed=seed, resume="never",
                  progress="off", mlflow=False, tensorboard=False, system_interval=0)  # none changes the numbers
    values.update(overrides)
    fields = {f.name for f in dataclasses.fields(config_lib.TrainConfig)}
    if "baselines" in fields:
        values["baselines"] = False  # fitted here, once per table
    started = time.perf_counter()
    result = train.run(train.make_config(values), log=lambda message: None)
    if result.exit_code != 0:
        raise RuntimeError(f"{model} on {data_dir}: {result.status}")
    test = result.metrics["test"]
    score = test["balanced_accuracy"] if "balanced_accuracy" in test else test["r2"]
    return score, time.perf_counter() - started, len(result.metrics["epochs"])


def fit_baselines(data_dir: Path, seed: int) -> dict[str, float]:
    """HistGradientBoosting and logistic/ridge regression on the processed training split, scored on test."""
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.metrics import balanced_accuracy_score, r2_score

    from pipeline import data

    dataset = data.load_processed(data_dir)
    (X, y), (X_test, y_test) = dataset.arrays["train"], dataset.arrays["test"]
    if dataset.task == "classification":
        models = {"hgb": HistGradientBoostingClassifier(random_state=seed),
                  "linear": LogisticRegression(max_iter=5000)}
        score = balanced_accuracy_score
    else:
        models = {"hgb": HistGradientBoostingRegressor(random_state=seed), "linear": Ridge()}
        score = r2_score
    return {name: float(score(y_test, m.fit(X, y).predict(X_test))) for name, m in models.items()}


# ------------------------------------------------------------------------------------------------------ the run
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=1, help="split+training seeds per table (scores are means)")
    parser.add_argument("--models", default="mlp,realmlp,tabm",
                        help="built-in networks to train, each optionally with settings: 'mlp:loss=huber;epochs=80'")
    parser.add_argument("--only", default="", help="comma-separated table names (default: all)")
    args = parser.parse_args(argv)
    import torch

    from pipeline import data

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    models = [m for m in args.models.split(",") if m]
    wanted = {n for n in args.only.split(",") if n}
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        for table in TABLES:
            if wanted and table.name not in wanted:
                continue
            try:
                frame = table.load()
            except ImportError as exc:
                print(f"skipping {table.name}: {exc.name or exc} is not installed (pip install -e '.[bench]')")
                continue
            csv = Path(tmp) / f"{table.name}.csv"
            frame.to_csv(csv, index=False)
            scores: dict[str, list[float]] = {m: [] for m in [*models, "hgb", "linear"]}
            seconds: dict[str, list[float]] = {m: [] for m in models}
            for seed in range(42, 42 + args.seeds):
                prepared = Path(tmp) / f"{table.name}-{seed}"
                result = data.prepare_dataset(csv, prepared, seed=seed)
                for name, value in fit_baselines(prepared, seed).items():
                    scores[name].append(value)
                for model in models:
                    run_dir = Path(tmp) / f"run-{table.name}-{seed}-{models.index(model)}"
                    score, took, _ = train_network(prepared, run_dir, model, seed)
                    scores[model].append(score)
                    seconds[model].append(took)
            row = {"dataset": table.name, "rows": result.schema["source"]["rows"], "task": result.schema["task"],
                   "features": len(result.schema["features"]["processed"]),
                   **{k: statistics.fmean(v) for k, v in scores.items()},
                   **{f"{k}_s": statistics.fmean(v) for k, v in seconds.items()}}
            rows.append(row)
            print(f"{table.name}: " + ", ".join(f"{k} {row[k]:.3f}" for k in scores)
                  + "  (" + ", ".join(f"{k} {row[k + '_s']:.0f}s" for k in models) + ")", flush=True)
    print_table(rows, models, seeds=args.seeds)
    return 0


def print_table(rows: list[dict], models: list[str], *, seeds: int) -> None:
    columns = [*models, "hgb", "linear"]
    print(f"\nTest balanced accuracy (classification) / R² (regression), mean of {seeds} seed(s); engine defaults")
    header = f"| {'dataset':16s} | {'rows':>6s} | {'task':14s} | " + " | ".join(f"{c:>7s}" for c in columns) + " |"
    print(header)
    print("|" + "|".join("-" * len(part) for part in header.split("|")[1:-1]) + "|")
    for row in rows:
        print(f"| {row['dataset']:16s} | {row['rows']:6d} | {row['task']:14s} | "
              + " | ".join(f"{row[c]:7.3f}" for c in columns) + " |")
    print()
    for model in models:
        close = sum(row[model] >= row["hgb"] - 0.005 for row in rows)
        ahead_linear = sum(row[model] > row["linear"] for row in rows)
        gap = statistics.fmean(row[model] - row["hgb"] for row in rows) if rows else float("nan")
        print(f"{model:8s}: within 0.005 of HGB (or ahead) on {close}/{len(rows)} tables; ahead of linear on "
              f"{ahead_linear}/{len(rows)}; mean difference to HGB {gap:+.3f}")


if __name__ == "__main__":
    sys.exit(main())
