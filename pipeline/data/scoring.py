"""A new CSV through a fitted schema (what `predict` scores)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.data.columns import datetime_features
from pipeline.data.preprocess import Preprocessor
from pipeline.data.reading import check_numeric, read_csv, some
from pipeline.errors import DataError


def load_raw_for_scoring(csv_path: Path | str, schema: dict[str, Any]) -> tuple[np.ndarray, pd.DataFrame]:
    """Apply a fitted schema's preprocessing to a new CSV (used by `predict`); the target may be absent."""
    source = schema["source"]  # the training file's encoding and delimiter: a new file exported the same way
    csv_file = read_csv(csv_path, encoding=source.get("encoding") or "utf-8", delimiter=source.get("delimiter", ","))
    dates = schema["features"].get("datetime", {})
    derived = {f"{column}.{part}": column for column, item in dates.items() for part in item["parts"]}
    needed = [derived.get(c, c) for c in schema["features"]["numeric"] + schema["features"]["categorical"]]
    missing = list(dict.fromkeys(c for c in needed if c not in csv_file.frame.columns))
    if missing:
        raise DataError(f"{csv_path}: missing {len(missing)} feature column(s) the model was trained on "
                        f"({some(missing)}); score a CSV with the training file's columns")
    for column in schema["features"]["numeric"]:
        if column not in derived:
            check_numeric(csv_file.frame, column, source=csv_path)
    frame = csv_file.frame.assign(**datetime_features(csv_file.frame, dates)) if dates else csv_file.frame
    preprocessor = Preprocessor.from_dict(schema["preprocessing"])
    return preprocessor.transform(frame), csv_file.frame
