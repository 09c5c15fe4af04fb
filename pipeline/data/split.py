"""The train/val/test split: stratified by class, duplicate rows kept on one side."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.data.store import SPLITS
from pipeline.data.table import Columns, _thread_map
from pipeline.errors import DataError


# ----------------------------------------------------------------------------------------------- splits
def split_indices(labels: np.ndarray | None, groups: np.ndarray, *, test_split: float, val_split: float,
                  seed: int) -> dict[str, np.ndarray]:
    """Seeded, disjoint split of rows; stratified by `labels` when given; rows sharing a group stay together.

    `groups` gives each row a group id (identical rows share one), so exact duplicates never straddle splits.
    Allocation per class uses largest remainders, so tiny classes still land in train first.
    """
    rng = np.random.default_rng(seed)
    inverse = _group_ids(np.asarray(groups))  # None: every row is its own group
    if inverse is None:
        group_label = labels if labels is not None else np.zeros(len(groups), dtype=np.int64)
    else:  # where the running maximum id rises, a group appears for the first time
        first_row = np.flatnonzero(np.diff(np.maximum.accumulate(inverse), prepend=-1) > 0)
        group_label = labels[first_row] if labels is not None else np.zeros(len(first_row), dtype=np.int64)
    assignment = np.empty(len(group_label), dtype=np.int8)  # 0 train, 1 val, 2 test
    small_ints = (group_label.dtype.kind in "iu" and len(group_label) and group_label.min() >= 0
                  and group_label.max() < 1 << 16)
    # class codes 0..k-1: counting them beats np.unique's hash table on a million rows
    for label in (np.flatnonzero(np.bincount(group_label)) if small_ints else np.unique(group_label)):
        members = rng.permutation(np.flatnonzero(group_label == label))
        n = len(members)
        n_test = int(math.floor(n * test_split + 0.5)) if n >= 3 else 0
        n_val = int(math.floor(n * val_split + 0.5)) if n - n_test >= 2 else 0
        n_test = min(n_test, n - 1)
        n_val = min(n_val, n - 1 - n_test)
        assignment[members[:n_test]] = 2
        assignment[members[n_test:n_test + n_val]] = 1
        assignment[members[n_test + n_val:]] = 0
    row_assignment = assignment if inverse is None else assignment[inverse]
    return {name: np.flatnonzero(row_assignment == code) for code, name in enumerate(SPLITS)}


def row_groups(table: Columns, labels: np.ndarray | None) -> np.ndarray:
    """A 64-bit key per row over every feature column and the label: identical rows get identical keys.
    `labels` None: over the features alone (--group-by features: an input never sits in two splits, whatever
    its labels; a table with few distinct inputs may then have too few groups to split).

    A polynomial hash (key * M + value, wrapping at 2**64) over each column's bits or category codes: three
    cheap passes per column, no copy of the frame. Rows differing in one column can never share a key (M is odd,
    so the difference cannot vanish modulo 2**64); for other distinct rows it is vanishingly unlikely, and would
    only keep the two in the same split. Identical rows always share theirs, which is what disjoint splits need."""
    key = np.zeros(table.n_rows, dtype=np.uint64)
    columns = [np.asarray(c) for c in (*table.numeric.values(), *(c for c, _ in table.categorical.values()),
                                        *([] if labels is None else [labels]))]

    def fill(start: int) -> None:  # 65,536 rows at a time: the slice of `key` stays in the CPU cache
        part = key[start:start + 65_536]
        for values in columns:
            part *= _HASH_MULTIPLIER
            part += _as_uint64(values[start:start + 65_536])

    _thread_map(fill, range(0, table.n_rows, 65_536))
    return key


_HASH_MULTIPLIER = np.uint64(0x9E3779B97F4A7C15)  # odd, so multiplying by it loses no information


def _as_uint64(values: np.ndarray) -> np.ndarray:
    """The values' bits as unsigned 64-bit integers (equal values, equal bits; NaN is one bit pattern)."""
    if values.dtype.itemsize == 8:
        return values.view(np.uint64)
    unsigned = {1: np.uint8, 2: np.uint16, 4: np.uint32}[values.dtype.itemsize]
    return values.view(unsigned).astype(np.uint64)


def _group_ids(groups: np.ndarray) -> np.ndarray | None:
    """A group id per row, numbered in order of first appearance (so the split does not depend on how the
    group keys happen to sort); None when every row is distinct, the usual case, which a hash-table uniqueness
    check proves in ~40 ms per million rows, faster than numbering them (factorize) or sorting them."""
    if pd.Index(groups).is_unique:
        return None
    return pd.factorize(groups, use_na_sentinel=False)[0]


def _check_fractions(test_split: float, val_split: float) -> None:
    if not (0 < test_split < 1) or not (0 <= val_split < 1) or test_split + val_split >= 1:
        raise DataError(f"--test-split {test_split} and --val-split {val_split} must each be in [0, 1) "
                        "and leave rows for training (e.g. 0.2 and 0.1)")


def _check_split_sizes(splits: dict[str, np.ndarray], n_rows: int, test_split: float, val_split: float,
                       *, source: Path) -> None:
    empty = [name for name in SPLITS if len(splits[name]) == 0 and not (name == "val" and val_split == 0)]
    if empty:
        raise DataError(f"{source}: {n_rows} usable row(s) are too few to fill the {'/'.join(empty)} split(s) "
                        f"(test {test_split}, val {val_split}); add rows or lower the split fractions")
