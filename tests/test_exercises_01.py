"""The checks of exercises/01_data_preparation.ipynb, tested: each rejects plausible wrong answers and accepts a
correct answer written differently from the solution. In-process: the notebook's cells are executed with the
answer substituted for the exercise cell, then the check cell runs (no kernel per case)."""
from __future__ import annotations

import pytest

from exercise_checks import SOLUTIONS, Exercises, rejects

NOTEBOOK = SOLUTIONS / "01_data_preparation.ipynb"


@pytest.fixture(scope="module")
def notebook() -> Exercises:
    return Exercises(NOTEBOOK)


def test_the_solutions_pass(notebook: Exercises):
    assert len(notebook.exercises) >= 4
    for number in range(1, len(notebook.exercises) + 1):
        notebook.check(number)


# ------------------------------------------------------------------------------------ 1. stratified split
SPLIT_UNSTRATIFIED = """
def stratified_split(labels, test_fraction, seed):
    rows = np.random.default_rng(seed).permutation(len(labels))
    cut = round(len(labels) * test_fraction)
    return np.sort(rows[cut:]), np.sort(rows[:cut])
"""
SPLIT_FLOOR = """
def stratified_split(labels, test_fraction, seed):
    rng = np.random.default_rng(seed)
    test = [rng.permutation(np.flatnonzero(labels == k))[: int(np.sum(labels == k) * test_fraction)] for k in np.unique(labels)]
    test = np.sort(np.concatenate(test))
    return np.setdiff1d(np.arange(len(labels)), test), test
"""
SPLIT_GLOBAL_SEED = """
def stratified_split(labels, test_fraction, seed):
    np.random.seed(seed)
    test = [np.random.permutation(np.flatnonzero(labels == k))[: round(np.sum(labels == k) * test_fraction)] for k in np.unique(labels)]
    test = np.sort(np.concatenate(test))
    return np.setdiff1d(np.arange(len(labels)), test), test
"""
SPLIT_WITH_REPLACEMENT = """
def stratified_split(labels, test_fraction, seed):
    rng = np.random.default_rng(seed)
    test = [rng.choice(np.flatnonzero(labels == k), round(np.sum(labels == k) * test_fraction)) for k in np.unique(labels)]
    test = np.sort(np.concatenate(test))
    return np.setdiff1d(np.arange(len(labels)), test), test
"""
SPLIT_UNSORTED = """
def stratified_split(labels, test_fraction, seed):
    rng = np.random.default_rng(seed)
    test = np.concatenate([rng.permutation(np.flatnonzero(labels == k))[: round(np.sum(labels == k) * test_fraction)] for k in np.unique(labels)])
    return np.setdiff1d(np.arange(len(labels)), test), test
"""


@pytest.mark.parametrize("answer, says", [(SPLIT_UNSTRATIFIED, "test rows per class"), (SPLIT_FLOOR, "test rows per class"),
                                          (SPLIT_GLOBAL_SEED, "global random state"), (SPLIT_WITH_REPLACEMENT, "exactly once"),
                                          (SPLIT_UNSORTED, "not sorted")],
                         ids=["unstratified", "floor", "global-seed", "with-replacement", "unsorted"])
def test_split_check_rejects(notebook, answer, says):
    assert says in rejects(notebook, 1, answer)


def test_split_check_accepts_random_keys(notebook):
    notebook.check(1, """
    def stratified_split(labels, test_fraction, seed):
        keys = np.random.default_rng(seed).random(len(labels))     # one random key per row, shuffled by sorting
        is_test = np.zeros(len(labels), dtype=bool)
        for k in set(labels.tolist()):
            members = np.flatnonzero(labels == k)
            chosen = members[np.argsort(keys[members])][: int(round(test_fraction * len(members)))]
            is_test[chosen] = True
        return np.flatnonzero(~is_test), np.flatnonzero(is_test)
    """)


# ------------------------------------------------------------------------------------ 2. standardiser
STANDARDIZER = """
class Standardizer:
    def __init__(self, columns):
        self.columns = list(columns)
    def fit(self, frame):
        part = frame[self.columns].astype(float)
        {fit}
        return self
    def transform(self, frame):
        part = frame[self.columns].astype(float)
        {transform}
"""
FIT_OK = ("self.medians_ = part.median(); filled = part.fillna(self.medians_); self.means_ = filled.mean(); "
          "self.stds_ = filled.std(ddof=0).replace(0, 1)")
TRANSFORM_OK = "return ((part.fillna(self.medians_) - self.means_) / self.stds_).to_numpy(np.float32)"
STANDARDIZER_WRONG = {
    "pandas-ddof-1": (FIT_OK.replace("std(ddof=0)", "std()"), TRANSFORM_OK),
    "mean-before-imputing": ("self.medians_ = part.median(); self.means_ = part.mean(); "
                             "self.stds_ = part.fillna(self.medians_).std(ddof=0).replace(0, 1)", TRANSFORM_OK),
    "fill-with-mean": ("self.medians_ = part.mean(); filled = part.fillna(self.medians_); self.means_ = filled.mean(); "
                       "self.stds_ = filled.std(ddof=0).replace(0, 1)", TRANSFORM_OK),
    "statistics-of-the-transformed-frame": (FIT_OK, "filled = part.fillna(part.median()); "
                                            "return ((filled - filled.mean()) / filled.std(ddof=0).replace(0, 1)).to_numpy(np.float32)"),
    "no-zero-std-guard": (FIT_OK.replace(".replace(0, 1)", ""), TRANSFORM_OK),
    "float64-out": (FIT_OK, TRANSFORM_OK.replace("np.float32", "np.float64")),
}


@pytest.mark.parametrize("name", list(STANDARDIZER_WRONG))
def test_standardizer_check_rejects(notebook, name):
    fit, transform = STANDARDIZER_WRONG[name]
    rejects(notebook, 2, STANDARDIZER.format(fit=fit, transform=transform))


def test_standardizer_check_accepts_numpy(notebook):
    notebook.check(2, """
    class Standardizer:
        def __init__(self, columns):
            self.columns = list(columns)
        def fit(self, frame):
            self.medians_, self.means_, self.stds_ = {}, {}, {}
            for c in self.columns:
                v = frame[c].to_numpy(dtype=float)
                m = np.nanmedian(v)
                v = np.where(np.isnan(v), m, v)
                self.medians_[c], self.means_[c] = m, v.mean()
                self.stds_[c] = v.std() or 1.0
            return self
        def transform(self, frame):
            cols = []
            for c in self.columns:
                v = frame[c].to_numpy(dtype=float)
                cols.append((np.where(np.isnan(v), self.medians_[c], v) - self.means_[c]) / self.stds_[c])
            return np.stack(cols, axis=1).astype(np.float32)
    """)


# ------------------------------------------------------------------------------------ 3. one-hot
ONEHOT = """
class OneHot:
    def __init__(self, max_levels=50):
        self.max_levels = max_levels
    def fit(self, values):
        {fit}
        return self
    def transform(self, values):
        position = {{level: i for i, level in enumerate(self.categories_)}}
        out = np.zeros((len(values), len(self.categories_)), dtype=np.float32)
        for row, level in enumerate(values.fillna("(missing)").astype(str)):
            if level in position:
                out[row, position[level]] = 1.0
        return out
"""
ONEHOT_WRONG = {
    "ties-by-appearance": "self.categories_ = list(values.fillna('(missing)').astype(str).value_counts().index[: self.max_levels])",
    "missing-dropped": "c = values.dropna().astype(str).value_counts(); "
                       "self.categories_ = [l for l, _ in sorted(c.items(), key=lambda kv: (-kv[1], kv[0]))][: self.max_levels]",
    "no-cap": "c = values.fillna('(missing)').astype(str).value_counts(); "
              "self.categories_ = [l for l, _ in sorted(c.items(), key=lambda kv: (-kv[1], kv[0]))]",
    "alphabetical-only": "self.categories_ = sorted(set(values.fillna('(missing)').astype(str)))[: self.max_levels]",
}


@pytest.mark.parametrize("name", list(ONEHOT_WRONG))
def test_onehot_check_rejects(notebook, name):
    rejects(notebook, 3, ONEHOT.format(fit=ONEHOT_WRONG[name]))


def test_onehot_check_rejects_unseen_levels_in_a_column(notebook):
    """A transform that puts unseen levels in the last column instead of all zeros."""
    good_fit = ("c = values.fillna('(missing)').astype(str).value_counts(); "
                "self.categories_ = [l for l, _ in sorted(c.items(), key=lambda kv: (-kv[1], kv[0]))][: self.max_levels]")
    answer = ONEHOT.format(fit=good_fit).replace("            if level in position:\n                out[row, position[level]] = 1.0",
                                                 "            out[row, position.get(level, len(position) - 1)] = 1.0")
    assert "position.get" in answer
    assert "transform expected" in rejects(notebook, 3, answer)


def test_onehot_check_accepts_pandas_get_dummies(notebook):
    notebook.check(3, """
    from collections import Counter

    class OneHot:
        def __init__(self, max_levels=50):
            self.max_levels = max_levels
        def fit(self, values):
            counts = Counter("(missing)" if pd.isna(v) else str(v) for v in values)
            self.categories_ = sorted(counts, key=lambda level: (-counts[level], level))[: self.max_levels]
            return self
        def transform(self, values):
            levels = values.fillna("(missing)").astype(str)
            dummies = pd.get_dummies(pd.Categorical(levels.where(levels.isin(self.categories_)), categories=self.categories_))
            return dummies.to_numpy(dtype=np.float32)
    """)


# ------------------------------------------------------------------------------------ 4. dataset + sampler
DATASET_OK = """
class BatchDataset(Dataset):
    def __init__(self, X, y):
        self.X, self.y = X, y
    def __len__(self):
        return len(self.X)
    def __getitem__(self, indices):
        return torch.tensor(self.X[indices], dtype=torch.float32), torch.tensor(self.y[indices], dtype=torch.int64)
"""
SAMPLER = """
class SeededBatchSampler:
    def __init__(self, n, batch_size, seed):
        self.n, self.batch_size, self.seed, self.epoch = n, batch_size, seed, 0
    def set_epoch(self, epoch):
        self.epoch = epoch
    def __len__(self):
        return {length}
    def __iter__(self):
        {order}
        for start in range(0, {stop}, self.batch_size):
            yield order[start:start + self.batch_size].tolist()
"""
GOOD_ORDER = "order = torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed * 1000 + self.epoch))"
SAMPLER_WRONG = {
    "global-rng": dict(length="math.ceil(self.n / self.batch_size)", stop="self.n",
                       order="torch.manual_seed(self.seed * 1000 + self.epoch); order = torch.randperm(self.n)"),
    "drops-the-last-batch": dict(length="self.n // self.batch_size", stop="self.n - self.n % self.batch_size", order=GOOD_ORDER),
    "floor-length": dict(length="self.n // self.batch_size", stop="self.n", order=GOOD_ORDER),
    # right for 103 rows in batches of 10, one too many for an exact multiple (100 rows: 11, not 10)
    "floor-plus-one-length": dict(length="self.n // self.batch_size + 1", stop="self.n", order=GOOD_ORDER),
    # the same mistake in both halves: an empty batch after the last full one of an exact multiple
    "empty-batch-on-exact-multiples": dict(length="self.n // self.batch_size + 1",
                                           stop="(self.n // self.batch_size + 1) * self.batch_size", order=GOOD_ORDER),
    "ignores-the-epoch": dict(length="math.ceil(self.n / self.batch_size)", stop="self.n",
                              order="order = torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed * 1000))"),
}


@pytest.mark.parametrize("name", list(SAMPLER_WRONG))
def test_sampler_check_rejects(notebook, name):
    rejects(notebook, 4, DATASET_OK + SAMPLER.format(**SAMPLER_WRONG[name]))


def test_sampler_check_names_the_exact_multiple_that_n_over_bs_plus_one_gets_wrong(notebook):
    message = rejects(notebook, 4, DATASET_OK + SAMPLER.format(**SAMPLER_WRONG["floor-plus-one-length"]))
    assert "SeededBatchSampler(100, 10" in message and "expected 10" in message and "got 11" in message, message


def test_dataset_check_rejects_float64_rows_and_lost_order(notebook):
    float64 = DATASET_OK.replace("dtype=torch.float32", "dtype=torch.float64")
    assert "float32" in rejects(notebook, 4, float64 + SAMPLER.format(length="math.ceil(self.n / self.batch_size)",
                                                                        stop="self.n", order=GOOD_ORDER))
    sorted_rows = DATASET_OK.replace("self.X[indices]", "self.X[np.sort(indices)]").replace("self.y[indices]", "self.y[np.sort(indices)]")
    rejects(notebook, 4, sorted_rows + SAMPLER.format(length="math.ceil(self.n / self.batch_size)", stop="self.n",
                                                      order=GOOD_ORDER))


def test_sampler_check_accepts_split_tensors(notebook):
    notebook.check(4, """
    class BatchDataset(Dataset):
        def __init__(self, X, y):
            self.X, self.y = torch.from_numpy(X).float(), torch.from_numpy(y).long()
        def __len__(self):
            return self.X.shape[0]
        def __getitem__(self, indices):
            idx = torch.as_tensor(indices)
            return self.X[idx], self.y[idx]

    class SeededBatchSampler:
        def __init__(self, n, batch_size, seed):
            self.n, self.batch_size, self.seed, self.epoch = n, batch_size, seed, 0
        def set_epoch(self, epoch):
            self.epoch = epoch
        def __len__(self):
            return -(-self.n // self.batch_size)
        def __iter__(self):
            g = torch.Generator()
            g.manual_seed(self.seed * 1000 + self.epoch)
            return iter([chunk.tolist() for chunk in torch.randperm(self.n, generator=g).split(self.batch_size)])
    """)


# ------------------------------------------------------------------------------------ 5. identifier columns
ID_LIKE = """
def id_like_columns(frame, share=0.9, min_rows=20):
    found = []
    for column in frame.columns:
        values = frame[column]
        if {skip}:
            continue
        filled = int(values.notna().sum())
        if filled {at_least} min_rows and {distinct} {more_than} share * {denominator}:
            found.append(column)
    return {result}
"""
ID_OK = dict(skip='values.dtype.kind == "f"', at_least=">=", distinct="values.nunique()", more_than=">",
             denominator="filled", result="found")
ID_WRONG = {
    "share-of-all-rows": dict(ID_OK, denominator="len(frame)"),
    "missing-counted-as-a-value": dict(ID_OK, distinct="values.nunique(dropna=False)"),
    "at-least-share": dict(ID_OK, more_than=">="),
    "more-than-min-rows": dict(ID_OK, at_least=">"),
    "text-columns-only": dict(ID_OK, skip="pd.api.types.is_numeric_dtype(values)"),
    "floats-too": dict(ID_OK, skip="False"),
    "alphabetical": dict(ID_OK, result="sorted(found)"),
}


def test_id_like_template_is_the_rule(notebook):
    notebook.check(5, ID_LIKE.format(**ID_OK))


@pytest.mark.parametrize("name", list(ID_WRONG))
def test_id_like_check_rejects(notebook, name):
    message = rejects(notebook, 5, ID_LIKE.format(**ID_WRONG[name]))
    assert "expected" in message and "got" in message, message


def test_id_like_check_accepts_vectorised_pandas(notebook):
    notebook.check(5, """
    def id_like_columns(frame, share=0.9, min_rows=20):
        kept = frame.select_dtypes(exclude=[np.floating])
        filled, distinct = kept.count(), kept.nunique()
        return [c for c in kept.columns if filled[c] >= min_rows and distinct[c] / filled[c] > share]
    """)


def test_id_like_check_accepts_a_set_per_column(notebook):
    notebook.check(5, """
    def id_like_columns(frame, share=0.9, min_rows=20):
        out = []
        for name, column in frame.items():
            if pd.api.types.is_float_dtype(column):
                continue
            present = [v for v in column if not pd.isna(v)]
            if len(present) >= min_rows and len(set(present)) > share * len(present):
                out.append(name)
        return out
    """)
