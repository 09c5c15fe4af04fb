"""The processed splits and schema.json, read back: what training imports (NumPy only, no pandas)."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.errors import DataError


SCHEMA_VERSION = 1
PRODUCER = "pipeline.prepare_dataset"
SPLITS = ("train", "val", "test")
FLOAT32_MAX = float(np.finfo(np.float32).max)  # the processed arrays are float32: larger values would become inf
MINORITY_SHARE = 0.10        # a class under this share of rows (and under half an even share) is flagged


def rare_classes(labels: np.ndarray, n_classes: int) -> np.ndarray:
    """The class codes under MINORITY_SHARE of the rows and under half an even share: prepare warns about them,
    and training weights the classes (`--class-weights auto`) when there is one."""
    counts = np.bincount(labels, minlength=n_classes)
    if counts.sum() == 0:
        return np.zeros(0, dtype=np.int64)
    return np.flatnonzero(counts / counts.sum() < np.minimum(MINORITY_SHARE, 0.5 / n_classes))


# -------------------------------------------------------------------------------------------- loading
@dataclass(frozen=True)
class Dataset:
    """Processed splits as NumPy arrays (X float32 C-contiguous; y int64 classes or float32 targets)."""
    schema: dict[str, Any]
    arrays: dict[str, tuple[np.ndarray, np.ndarray]]

    @property
    def task(self) -> str:
        return self.schema["task"]

    @property
    def n_features(self) -> int:
        return len(self.schema["features"]["processed"])

    @property
    def n_outputs(self) -> int:
        return len(self.schema["classes"]) if self.task == "classification" else 1


def load_schema(data_dir: Path | str) -> dict[str, Any]:
    data_dir = Path(data_dir)
    path = data_dir / "schema.json"
    if not path.is_file():
        raise DataError(f"{data_dir}: no schema.json here; run solutions/prepare_dataset.py with "
                        f"--output-dir {data_dir} first")
    try:
        schema = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise DataError(f"{path}: not valid JSON ({exc}); re-run prepare_dataset.py") from None
    if schema.get("producer") != PRODUCER or schema.get("schema_version") != SCHEMA_VERSION:
        raise DataError(f"{path}: not a schema version {SCHEMA_VERSION} written by prepare_dataset.py; re-run it")
    return schema


def load_split(data_dir: Path | str, split: str, *, mmap: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """One split's (X, y): X float32 (rows, features) in C order, ready for `torch.from_numpy` (no copy)."""
    return load_processed(data_dir, mmap=mmap, splits=(split,)).arrays[split]


def load_processed(data_dir: Path | str, *, mmap: bool = False, splits: tuple[str, ...] = SPLITS) -> Dataset:
    """Load the processed splits; `mmap=True` maps them instead of reading (for data larger than memory)."""
    data_dir = Path(data_dir)
    schema = load_schema(data_dir)
    arrays = {}
    for name in splits:
        files = schema["files"][name]
        try:
            features = np.load(data_dir / files["X"], allow_pickle=False, mmap_mode="r" if mmap else None)
            labels = np.load(data_dir / files["y"], allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise DataError(f"{data_dir / files['X']}: cannot be read ({exc}); re-run prepare_dataset.py") from None
        if features.shape[0] != labels.shape[0] or features.shape[0] != schema["rows"][name]:
            raise DataError(f"{data_dir}: the {name} split's files disagree with schema.json on the row count; "
                            "re-run prepare_dataset.py")
        arrays[name] = (features, labels)
    return Dataset(schema=schema, arrays=arrays)
