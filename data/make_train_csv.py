"""Regenerate data/train.csv from the Palmer Penguins table shipped inside the `palmerpenguins` package.

    python -m pip install palmerpenguins==0.1.6
    python data/make_train_csv.py            # writes data/train.csv next to this script

The only change to the original table is the column order: `species` (the target) is moved to the
last column, so the target rule "else the last column" picks it without a flag.
"""
from __future__ import annotations

import hashlib
from importlib import resources
from pathlib import Path

import pandas as pd


def main() -> None:
    source = resources.files("palmerpenguins") / "data" / "penguins.csv"
    with resources.as_file(source) as path:
        frame = pd.read_csv(path, keep_default_na=False, dtype=str)
    columns = [c for c in frame.columns if c != "species"] + ["species"]
    out = Path(__file__).with_name("train.csv")
    frame[columns].to_csv(out, index=False, lineterminator="\n")
    print(f"wrote {out} ({len(frame)} rows) sha256={hashlib.sha256(out.read_bytes()).hexdigest()}")


if __name__ == "__main__":
    main()
