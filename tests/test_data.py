"""Phase 1: pure pieces of data preparation (code), properties of splits (data), and the output folder."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings, strategies as st

from pipeline import data
from pipeline.errors import DataError

from conftest import BUNDLED_CSV, make_classification_csv, make_regression_csv


def test_preprocessor_fits_on_train_only_and_transforms_purely():
    train = pd.DataFrame({"n": [1.0, 2.0, np.nan, 5.0], "c": ["a", "b", "a", None]})
    other = pd.DataFrame({"n": [100.0, np.nan], "c": ["zzz", "b"]})
    prep = data.Preprocessor(["n"], ["c"]).fit(train)
    assert prep.medians_ == {"n": 2.0}
    filled = np.array([1.0, 2.0, 2.0, 5.0])
    assert prep.means_["n"] == pytest.approx(filled.mean())
    assert prep.stds_["n"] == pytest.approx(filled.std())
    assert prep.categories_["c"] == ["a", "(missing)", "b"]  # by frequency, ties by name
    out = prep.transform(other)
    assert out.dtype == np.float32 and out.flags["C_CONTIGUOUS"]
    assert out[0, 0] == pytest.approx((100 - filled.mean()) / filled.std())
    assert out[1, 0] == pytest.approx((2.0 - filled.mean()) / filled.std())  # imputed with the train median
    assert out[0, 1:].tolist() == [0, 0, 0]  # unseen category: all zeros, no error
    assert out[1, 1:].tolist() == [0, 0, 1]
    # round trip through schema.json's plain values gives the same transform
    again = data.Preprocessor.from_dict(json.loads(json.dumps(prep.to_dict())))
    assert np.array_equal(again.transform(other), out)


def test_constant_train_column_scales_to_zero_not_nan():
    prep = data.Preprocessor(["n"], []).fit(pd.DataFrame({"n": [3.0, 3.0]}))
    assert np.isfinite(prep.transform(pd.DataFrame({"n": [3.0, 4.0]}))).all()


@pytest.mark.parametrize("values, expected", [
    (pd.Series(["a", "b"]), "classification"),
    (pd.Series([True, False, True]), "classification"),
    (pd.Series([0, 1, 2, 1] * 10), "classification"),
    (pd.Series(range(200)), "regression"),           # a count with many values
    (pd.Series([0.5, 1.25, 3.0]), "regression"),
])
def test_infer_task(values, expected):
    assert data.infer_task(values) == expected


def test_task_override():
    assert data.infer_task(pd.Series([0, 1, 0]), "regression") == "regression"


def test_choose_target_rule():
    assert data.choose_target(["a", "label", "b"], None) == "label"
    assert data.choose_target(["a", "target", "label"], None) == "target"
    assert data.choose_target(["a", "b"], None) == "b"
    with pytest.raises(DataError, match="did you mean 'species'"):
        data.choose_target(["island", "species"], "specis")


def test_infer_columns_drops_what_cannot_be_a_feature():
    n = 40
    frame = pd.DataFrame({"id": range(n), "const": [1] * n, "empty": [np.nan] * n, "x": np.arange(n) % 7 * 1.5,
                          "name": [f"row{i}" for i in range(n)], "colour": ["r", "g"] * (n // 2), "y": [0, 1] * (n // 2),
                          "volume": np.random.default_rng(0).permutation(n) * 1000 + 17})
    plan = data.infer_columns(frame, "y")
    # all-different whole numbers are a measurement (a volume) unless named like an ID or counting rows
    assert plan.numeric == ["x", "volume"] and plan.categorical == ["colour"]
    reasons = {d["name"]: d["reason"] for d in plan.dropped}
    assert reasons == {"id": "ID-like: 40 distinct whole numbers in 40 filled rows, and the name says ID",
                       "const": "constant (one distinct value)",
                       "empty": "all values missing", "name": "ID-like (a different value in every row)"}


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 3), min_size=12, max_size=300), st.integers(0, 10_000),
       st.floats(0.1, 0.4), st.floats(0.0, 0.3))
def test_splits_are_disjoint_complete_and_stratified(labels, seed, test_split, val_split):
    labels = np.array(labels)
    groups = np.arange(len(labels))
    splits = data.split_indices(labels, groups, test_split=test_split, val_split=val_split, seed=seed)
    joined = np.concatenate(list(splits.values()))
    assert sorted(joined.tolist()) == list(range(len(labels)))  # disjoint and complete
    for label in np.unique(labels):
        n = int((labels == label).sum())
        in_test = int((labels[splits["test"]] == label).sum())
        assert (labels[splits["train"]] == label).any()  # every class is trained on
        if n >= 3:
            assert abs(in_test - n * test_split) <= 1  # stratified: proportional within rounding
    assert np.array_equal(splits["test"], data.split_indices(labels, groups, test_split=test_split,
                                                              val_split=val_split, seed=seed)["test"])


def test_exact_duplicates_never_straddle_splits():
    labels = np.array([0, 1] * 50)
    groups = np.repeat(np.arange(20), 5)  # 20 groups of 5 identical rows
    labels = np.repeat(np.arange(20) % 2, 5)
    splits = data.split_indices(labels, groups, test_split=0.3, val_split=0.2, seed=1)
    owner = {}
    for name, idx in splits.items():
        for g in np.unique(groups[idx]):
            assert owner.setdefault(g, name) == name


def test_prepare_bundled_dataset(penguins_dir: Path):
    schema = json.loads((penguins_dir / "schema.json").read_text())
    assert schema["target"] == "species" and schema["task"] == "classification"
    assert schema["classes"] == ["Adelie", "Chinstrap", "Gentoo"]
    assert schema["source"]["sha256"] == "0321e8cdd3a19c9eff8f813792328797c465d8b041fafb5820cc7430d919007e"
    assert schema["features"]["numeric"] == ["bill_length_mm", "bill_depth_mm", "flipper_length_mm", "body_mass_g", "year"]
    assert schema["features"]["categorical"] == ["island", "sex"]
    assert sum(schema["rows"].values()) == 344
    # stratified: every split has every class in about the overall proportion
    for split, counts in schema["class_counts"].items():
        assert all(c > 0 for c in counts), split
    loaded = data.load_processed(penguins_dir)
    X, y = loaded.arrays["train"]
    assert X.dtype == np.float32 and X.flags["C_CONTIGUOUS"] and X.shape == (schema["rows"]["train"], 11)
    # preprocessing was fitted on train only: train features are standardised, test ones only roughly
    assert np.allclose(X[:, :5].mean(axis=0), 0, atol=1e-5)
    assert not np.allclose(loaded.arrays["test"][0][:, :5].mean(axis=0), 0, atol=1e-5)
    assert not list(penguins_dir.parent.glob(".*tmp*"))  # no staging folder left behind


def test_rerun_replaces_own_output_but_never_a_foreign_folder(tmp_path: Path):
    out = tmp_path / "out"
    data.prepare_dataset(BUNDLED_CSV, out)
    first = (out / "schema.json").read_text()
    data.prepare_dataset(BUNDLED_CSV, out, seed=7)
    assert (out / "schema.json").read_text() != first
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("precious")
    with pytest.raises(DataError, match="not an earlier output"):
        data.prepare_dataset(BUNDLED_CSV, foreign)
    assert (foreign / "notes.txt").read_text() == "precious"


def test_regression_dataset(regression_dir: Path):
    schema = json.loads((regression_dir / "schema.json").read_text())
    assert schema["task"] == "regression" and schema["classes"] is None and schema["target"] == "price"
    y = data.load_processed(regression_dir).arrays["train"][1]
    assert y.dtype == np.float32


def test_utf8_bom_and_header_whitespace(tmp_path: Path):
    csv = tmp_path / "bom.csv"
    make_classification_csv(tmp_path / "plain.csv", rows=60)
    text = (tmp_path / "plain.csv").read_text().replace("x0,", " x0 ,", 1)
    csv.write_bytes(b"\xef\xbb\xbf" + text.encode())
    result = data.prepare_dataset(csv, tmp_path / "out")
    assert "x0" in result.schema["features"]["numeric"]
    assert result.schema["source"]["encoding"] == "utf-8-sig"


def test_latin1_with_encoding_flag(tmp_path: Path):
    csv = tmp_path / "latin.csv"
    rows = "\n".join(f"{i % 5},{'café' if i % 2 else 'thé'},{'a' if i % 3 else 'b'}" for i in range(30))
    csv.write_bytes(("x,drink,label\n" + rows + "\n").encode("latin-1"))
    with pytest.raises(DataError, match="not valid utf-8"):
        data.prepare_dataset(csv, tmp_path / "out")
    result = data.prepare_dataset(csv, tmp_path / "out", encoding="latin-1")
    assert "drink=café" in result.schema["features"]["processed"]


def test_handled_rather_than_refused(tmp_path: Path):
    """An all-missing column is dropped, rows without a target are dropped: both printed as notes."""
    csv = make_classification_csv(tmp_path / "d.csv", rows=100)
    frame = pd.read_csv(csv)
    frame["blank"] = np.nan
    frame.loc[[5, 17], "label"] = np.nan
    frame.to_csv(csv, index=False)
    notes: list[str] = []
    result = data.prepare_dataset(csv, tmp_path / "out", notes=notes)
    assert sum(result.schema["rows"].values()) == 98
    assert any("dropped 2 row(s) with a missing target (rows 6, 18)" in n for n in notes)
    assert any("dropped column 'blank': all values missing" in n for n in notes)


def test_large_file_reads_fast_path(tmp_path: Path):
    """The big-file path (float32 dtypes learned from the first rows) keeps a numeric column numeric."""
    csv = make_regression_csv(tmp_path / "big.csv", rows=20_000)
    loaded = data.read_csv(csv)
    assert len(loaded.frame) == 20_000 and pd.api.types.is_float_dtype(loaded.frame["a"])


def test_a_count_with_a_capped_level_is_refused_as_numeric_and_taken_whole_under_categorical(tmp_path: Path):
    """mlmRev's Contraception: living children 0, 1, 2 and '3+'. Judged, it is a numeric column with bad cells
    (the message says how to say otherwise); under --categorical its four values are four levels."""
    rng = np.random.default_rng(0)
    pd.DataFrame({"age": rng.normal(30, 5, 300).round(1), "livch": rng.choice(["0", "1", "2", "3+"], 300),
                  "use": rng.choice(["N", "Y"], 300)}).to_csv(tmp_path / "c.csv", index=False)
    with pytest.raises(DataError, match=r"column 'livch' is numeric but .* e\.g\. '3\+'\); fix or blank those "
                                        r"cells, or pass --categorical livch if its values are categories$"):
        data.prepare_dataset(tmp_path / "c.csv", tmp_path / "judged")
    data.prepare_dataset(tmp_path / "c.csv", tmp_path / "p", categorical=("livch",))
    schema = json.loads((tmp_path / "p" / "schema.json").read_text())
    assert schema["features"]["categorical"] == ["livch"]
    assert sorted(n for n in schema["features"]["processed"] if n.startswith("livch=")) == [
        "livch=0", "livch=1", "livch=2", "livch=3+"]


def test_garbage_after_the_sampled_rows_is_still_reported_with_its_row(tmp_path: Path):
    """Big files parse floats as float32 using the first rows' types; a bad cell further down must still be
    caught, by row, not coerced to NaN."""
    csv = make_regression_csv(tmp_path / "big.csv", rows=20_000)
    lines = csv.read_text().splitlines()
    fields = lines[15_001].split(",")
    fields[0] = "n/a?"
    lines[15_001] = ",".join(fields)
    csv.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"column 'a' is numeric but has 1 non-numeric value\(s\) \(rows 15001, e.g. 'n/a\?'\)"):
        data.prepare_dataset(csv, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_big_file_floats_are_parsed_as_float32_but_the_target_keeps_its_precision(tmp_path: Path):
    csv = make_regression_csv(tmp_path / "big.csv", rows=20_000)
    loaded = data.read_csv(csv, keep_dtype="price")
    assert loaded.frame["a"].dtype == np.float32 and loaded.frame["price"].dtype == np.float64


def test_streamed_features_equal_the_in_memory_transform(tmp_path: Path):
    """Splits are written chunk by chunk on worker threads; the files must hold exactly what one transform
    call returns, in order."""
    frame = data.read_csv(BUNDLED_CSV).frame
    prep = data.Preprocessor(["bill_length_mm", "body_mass_g", "year"], ["island", "sex"]).fit(frame)
    order = np.random.default_rng(0).permutation(len(frame))
    splits = {"train": order[:300], "val": order[300:], "test": order[:0]}
    labels = np.arange(len(frame))
    width = len(prep.feature_names_)
    data._save_splits(tmp_path, prep, data.Columns.of(frame, prep.numeric, prep.categorical), splits, labels,
                      chunk_bytes=64 * 4 * width)  # 64-row chunks: 5 for train, the last one partial
    for name, rows in splits.items():
        streamed = np.load(tmp_path / f"{name}_X.npy")
        assert streamed.flags["C_CONTIGUOUS"] and streamed.dtype == np.float32 and streamed.shape == (len(rows), width)
        assert np.array_equal(streamed, prep.transform(frame, rows))
        assert np.array_equal(np.load(tmp_path / f"{name}_y.npy"), rows)
    rows = splits["train"]
    assert np.array_equal(prep.transform(frame, rows), prep.transform(frame.iloc[rows].reset_index(drop=True)))


@settings(max_examples=80, deadline=None)
@given(st.integers(1, 200_000), st.sampled_from(["normal", "few_values", "sorted", "constant"]), st.integers(0, 99))
def test_median_is_exact(n, kind, seed):
    """The sampled-bracket median equals NumPy's exact one, for sizes on both sides of the sampling threshold,
    heavy ties and sorted input."""
    rng = np.random.default_rng(seed)
    values = {"normal": rng.normal(size=n), "few_values": rng.integers(0, 4, n).astype(float),
              "sorted": np.sort(rng.exponential(size=n)), "constant": np.full(n, 2.5)}[kind].astype(np.float32)
    assert data._median(values.copy()) == np.median(values.astype(np.float64))


def test_numeric_stats_equal_the_imputed_column_statistics():
    """Mean and std are computed without building the imputed copy; they must equal the copy's."""
    rng = np.random.default_rng(3)
    values = rng.normal(5, 2, 100_001).astype(np.float32)
    values[rng.random(len(values)) < 0.1] = np.nan
    rows = np.sort(rng.choice(len(values), 70_000, replace=False))
    median, mean, std = data._numeric_stats(values, rows)
    part = values[rows].astype(np.float64)
    filled = np.where(np.isnan(part), np.median(part[~np.isnan(part)]), part)
    assert median == np.median(part[~np.isnan(part)])
    assert mean == pytest.approx(filled.mean(), rel=1e-12) and std == pytest.approx(filled.std(), rel=1e-9)


def test_group_ids_number_groups_by_first_appearance():
    assert data._group_ids(np.array([7, 3, 9], dtype=np.uint64)) is None  # all distinct: every row its own group
    assert data._group_ids(np.arange(1)) is None
    ids = data._group_ids(np.array([5, 2, 5, 8, 2, 5], dtype=np.uint64))
    assert ids.tolist() == [0, 1, 0, 2, 1, 0]
    assert data._group_ids(np.array(["b", "a", "b"], dtype=object)).tolist() == [0, 1, 0]


def test_row_groups_equal_rows_share_a_key_and_different_rows_do_not():
    frame = pd.DataFrame({"x": [1.5, 1.5, 1.5, np.nan, np.nan, 2.0], "n": [1, 1, 1, 4, 4, 1],
                          "c": ["a", "a", "b", None, None, "a"]})
    table = data.Columns.of(frame, ["x", "n"], ["c"])
    keys = data.row_groups(table, np.array([0, 0, 0, 1, 1, 0]))
    assert keys[0] == keys[1] and keys[3] == keys[4]  # identical rows (missing values included)
    assert len({keys[0], keys[2], keys[3], keys[5]}) == 4
    assert keys[0] != data.row_groups(table, np.array([1, 0, 0, 1, 1, 0]))[0]  # the label is part of the row


def test_group_by_features_keeps_an_input_with_two_labels_in_one_split(tmp_path: Path):
    """--group-by features: two rows that agree on every feature but the label land in the same split (the
    default groups exact duplicate rows only, and lets them straddle)."""
    rng = np.random.default_rng(0)
    x = rng.permutation(300) / 10  # 300 distinct inputs, each twice
    frame = pd.DataFrame({"x": np.concatenate([x, x]), "c": np.tile(rng.choice(["a", "b"], 300), 2),
                          "label": np.concatenate([rng.choice(["no", "yes"], 300), rng.choice(["no", "yes"], 300)])})
    frame.to_csv(tmp_path / "t.csv", index=False)

    def inputs_in_two_splits(out: Path) -> int:
        seen = {name: {tuple(row) for row in data.load_processed(out).arrays[name][0].round(5)}
                for name in ("train", "val", "test")}
        return len(seen["train"] & seen["test"]) + len(seen["train"] & seen["val"]) + len(seen["val"] & seen["test"])
    data.prepare_dataset(tmp_path / "t.csv", tmp_path / "rows", seed=3)
    data.prepare_dataset(tmp_path / "t.csv", tmp_path / "features", seed=3, group_by="features")
    assert inputs_in_two_splits(tmp_path / "rows") > 0
    assert inputs_in_two_splits(tmp_path / "features") == 0
    assert json.loads((tmp_path / "features" / "schema.json").read_text())["splits"]["grouped_on"] == "features"
    with pytest.raises(DataError, match="--group-by must be one of rows, features, not 'labels'"):
        data.prepare_dataset(tmp_path / "t.csv", tmp_path / "bad", group_by="labels")


def test_fit_and_transform_accept_converted_columns_and_an_out_buffer():
    frame = data.read_csv(BUNDLED_CSV).frame
    numeric, categorical = ["bill_length_mm", "body_mass_g", "year"], ["island", "sex"]
    rows = np.arange(0, len(frame), 2)
    from_frame = data.Preprocessor(numeric, categorical).fit(frame, rows)
    table = data.Columns.of(frame, numeric, categorical)
    from_table = data.Preprocessor(numeric, categorical).fit(table, rows)
    assert from_table.to_dict() == from_frame.to_dict()
    out = np.full((len(rows), len(from_table.feature_names_)), 7.0, dtype=np.float32)  # stale contents
    assert from_table.transform(table, rows, out=out) is out
    assert np.array_equal(out, from_frame.transform(frame, rows))
    with pytest.raises(ValueError, match="C-contiguous float32"):
        from_table.transform(table, rows, out=np.zeros((len(rows), 2), dtype=np.float32))


def test_a_file_cut_inside_a_utf8_character_is_refused(tmp_path: Path):
    csv = tmp_path / "cut.csv"
    csv.write_bytes("x,label\n1,caf\u00e9\n".encode()[:-2])  # the last byte of 'é' and the newline are gone
    with pytest.raises(DataError, match="not valid utf-8|ends inside a multi-byte"):
        data.prepare_dataset(csv, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_worker_count_follows_pandas_thread_option():
    try:
        pd.get_option("mode.max_threads")
    except (KeyError, pd.errors.OptionError):
        pytest.skip("this pandas has no mode.max_threads option")
    with pd.option_context("mode.max_threads", 1):
        assert data.worker_count() == 1
    assert 1 <= data.worker_count() <= 8


def test_transform_refuses_rows_outside_the_table():
    frame = pd.DataFrame({"n": [1.0, 2.0, 3.0], "c": ["a", "b", "a"]})
    prep = data.Preprocessor(["n"], ["c"]).fit(frame)
    with pytest.raises(IndexError, match=r"rows must lie in \[0, 3\)"):
        prep.transform(frame, np.array([0, 3]))
    with pytest.raises(IndexError):
        prep.transform(frame, np.array([-1]))
    assert prep.transform(frame, [2, 0]).shape == (2, 3)  # a list of rows works too
