"""Phase 1: how prepare judges each column (the column report) and the warnings it gives, on small tables."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline import data
from pipeline.errors import DataError

from conftest import BUNDLED_CSV, make_classification_csv


def _prepare(tmp_path: Path, frame: pd.DataFrame, **options) -> data.PrepareResult:
    csv = tmp_path / "table.csv"
    frame.to_csv(csv, index=False)
    return data.prepare_dataset(csv, tmp_path / "out", **options)


def _roles(result: data.PrepareResult) -> dict[str, dict]:
    return {item["name"]: item for item in result.schema["columns"]}


def _base(n: int, seed: int = 0) -> pd.DataFrame:
    """A learnable but not trivially predictable table: two numeric features, a noisy label."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 2))
    noise = rng.random(n) < 0.25
    label = np.where((x[:, 0] + x[:, 1] > 0) ^ noise, "yes", "no")
    return pd.DataFrame({"x0": x[:, 0].round(4), "x1": x[:, 1].round(4), "label": label})


def _kinds(result: data.PrepareResult) -> list[tuple[str, str]]:
    return [(w["kind"], w["column"]) for w in result.schema["warnings"]]


# ------------------------------------------------------------------------------------------ the report
def test_report_lists_every_column_in_file_order_with_its_role(tmp_path: Path):
    result = data.prepare_dataset(BUNDLED_CSV, tmp_path / "out")
    report = result.schema["columns"]
    assert [c["name"] for c in report] == list(pd.read_csv(BUNDLED_CSV).columns)
    roles = _roles(result)
    assert roles["species"] == {"name": "species", "role": "target", "detail": "classification, 3 classes"}
    assert roles["island"]["role"] == "categorical" and roles["island"]["detail"] == "3 levels, all kept"
    assert roles["sex"]["detail"] == "3 levels (one is (missing)), all kept" and roles["sex"]["missing"] == 11
    assert roles["bill_length_mm"]["detail"] == "2 missing (0.6%) -> the training median"
    assert roles["year"]["detail"] == "no gaps"
    # existing schema keys are all still there
    assert {"features", "preprocessing", "rows", "class_counts", "source", "splits"} <= set(result.schema)
    table = result.column_table().splitlines()
    assert table[0].split() == ["column", "role", "details"] and len(table) == 1 + len(report)
    assert table[1].split()[:3] == ["island", "categorical", "3"]
    saved = json.loads((tmp_path / "out" / "schema.json").read_text())
    assert saved["columns"] == report and saved["warnings"] == result.schema["warnings"] == []


def test_long_column_names_are_cut_in_the_printed_table():
    report = [{"name": "a" * 40, "role": "numeric", "detail": "no gaps"}, {"name": "y", "role": "target", "detail": "x"}]
    lines = data.format_column_report(report, width=10).splitlines()
    assert lines[1].startswith("aaaaaaaaa~  numeric") and lines[2].startswith("y           target")


# ------------------------------------------------------------------------------- near-unique text, IDs
def test_near_unique_text_is_dropped_under_the_documented_rule(tmp_path: Path):
    """More distinct values than half the filled cells: an ID, a name or free text. At half or fewer: a feature."""
    n = 200
    frame = _base(n)
    frame.insert(0, "name", [f"person {i}" for i in range(101)] + [f"person {i}" for i in range(99)])  # 101 distinct
    frame.insert(1, "city", [f"city {i % 100}" for i in range(n)])  # 100 distinct in 200 rows: exactly half
    frame.insert(2, "case", [f"C-{i // 3}" if i < 150 else None for i in range(n)])  # 50 distinct in 150 filled
    frame.insert(3, "note", [f"free text {i}" if i % 2 else None for i in range(n)])  # 100 distinct in 100 filled
    roles = _roles(_prepare(tmp_path, frame))
    assert roles["name"]["role"] == "dropped"
    assert roles["name"]["reason"] == ("near-unique text: 101 distinct values in 200 filled rows "
                                       "(an ID, a name or free text)")
    assert roles["city"]["role"] == "categorical"
    assert roles["case"]["role"] == "categorical"  # 50 of 150 filled: repeats, a real grouping
    assert roles["note"]["role"] == "dropped" and "100 distinct values in 100 filled rows" in roles["note"]["reason"]


def test_whole_number_ids_need_a_name_or_a_row_number_shape(tmp_path: Path):
    n = 200
    rng = np.random.default_rng(1)
    frame = _base(n)
    ids = rng.permutation(10_000)[:n]
    frame.insert(0, "PassengerId", ids)  # camelCase ...Id
    frame.insert(1, "case_id", np.where(np.arange(n) < 190, np.arange(n), np.arange(n) - 100))  # a few repeats
    frame.insert(2, "row", np.arange(n) + 1)  # 1, 2, 3 ...: a row number
    frame.insert(3, "volume", ids * 37 + 5)  # all different too, but a measurement
    frame.insert(4, "sorted_price", np.arange(n) * 1_000)  # increasing, but spread far wider than a row number
    roles = _roles(_prepare(tmp_path, frame))
    assert roles["PassengerId"]["reason"] == "ID-like: 200 distinct whole numbers in 200 filled rows, and the name says ID"
    assert roles["case_id"]["reason"] == "ID-like: 190 distinct whole numbers in 200 filled rows, and the name says ID"
    assert roles["row"]["reason"] == "ID-like: whole numbers increasing row by row, like a row number"
    assert roles["volume"]["role"] == "numeric" and roles["sorted_price"]["role"] == "numeric"


# ------------------------------------------------------------------------------------------------ dates
def test_timestamp_strings_are_expanded_into_numeric_parts(tmp_path: Path):
    n = 240
    frame = _base(n)
    stamps = pd.date_range("2021-01-30 06:00", periods=n, freq="37h")
    frame.insert(0, "when", stamps.strftime("%Y-%m-%d %H:%M:%S"))
    frame.insert(1, "day", stamps.strftime("%d-%b-%y"))
    frame.loc[[3, 50], "day"] = "not known"  # two cells that are no date: missing parts, not a refusal
    result = _prepare(tmp_path, frame)
    roles = _roles(result)
    assert roles["when"]["role"] == "datetime" and roles["when"]["format"] == "%Y-%m-%d %H:%M:%S"
    assert roles["when"]["features"] == ["when.year", "when.month", "when.day", "when.weekday", "when.hour"]
    assert roles["day"]["format"] == "%d-%b-%y" and roles["day"]["unparsed"] == 2
    assert "2 row(s) not in that format are treated as missing" in roles["day"]["detail"]
    features = result.schema["features"]
    assert features["datetime"]["when"] == {"format": "%Y-%m-%d %H:%M:%S",
                                            "parts": ["year", "month", "day", "weekday", "hour"]}
    assert "when" not in features["numeric"] and "when.hour" in features["numeric"]  # minute never varies: left out
    assert "when.minute" not in features["numeric"]
    # the parts are the real calendar values
    plan = data.infer_columns(pd.read_csv(tmp_path / "table.csv"), "label")
    assert plan.columns.numeric["when.hour"][:3].tolist() == [6.0, 19.0, 8.0]
    assert plan.columns.numeric["when.weekday"][0] == stamps[0].day_of_week
    assert np.isnan(plan.columns.numeric["day.month"][3])


def test_scoring_new_rows_rebuilds_the_date_parts_the_model_was_trained_on(tmp_path: Path):
    """predict reads raw CSVs: the same parts must come out of the same strings, in the same processed columns."""
    n = 120
    frame = _base(n)
    frame.insert(0, "when", pd.date_range("2020-02-01", periods=n, freq="D").strftime("%Y-%m-%d"))
    result = _prepare(tmp_path, frame)
    X, _ = data.load_raw_for_scoring(tmp_path / "table.csv", result.schema)
    processed = data.load_processed(tmp_path / "out")
    stacked = np.concatenate([processed.arrays[s][0] for s in data.SPLITS])
    assert X.shape == stacked.shape
    assert np.array_equal(np.unique(X, axis=0), np.unique(stacked, axis=0))


def test_text_that_is_not_dates_stays_text():
    frame = pd.DataFrame({"code": [f"A{i % 5}-{i % 3}" for i in range(60)], "time": ["12:30", "08:15"] * 30,
                          "y": [0, 1] * 30})
    plan = data.infer_columns(frame, "y")
    assert plan.categorical == ["code", "time"] and plan.datetime == {}


# --------------------------------------------------------------------------------------- level cap
def test_level_cap_is_stated_with_the_rows_it_affects(tmp_path: Path):
    n = 800
    rng = np.random.default_rng(2)
    frame = _base(n)
    frame.insert(0, "product", [f"p{int(v):02d}" for v in rng.zipf(1.3, n) % 80])
    levels = frame["product"].nunique()
    assert levels > 50
    result = _prepare(tmp_path, frame)
    product = _roles(result)["product"]
    kept = result.schema["preprocessing"]["categorical"]["product"]["categories"]
    outside = int((~frame["product"].isin(kept)).sum())
    assert product["levels"] == levels and product["levels_kept"] == 50 == len(kept) and product["capped"]
    assert product["rows_all_zero"] == outside > 0
    assert product["detail"] == (f"{levels} levels, 50 kept (--max-levels 50): {outside:,} rows "
                                 f"({100 * outside / n:.1f}%) in the other {levels - 50} encode as all zeros")
    wider = data.prepare_dataset(tmp_path / "table.csv", tmp_path / "out", max_levels=200)
    assert wider.schema["preprocessing"]["max_levels"] == 200
    assert not _roles(wider)["product"]["capped"]
    assert _roles(wider)["product"]["levels_kept"] == len(
        wider.schema["preprocessing"]["categorical"]["product"]["categories"]) > 50
    assert sum(f.startswith("product=") for f in wider.schema["features"]["processed"]) > 50
    with pytest.raises(DataError, match="--max-levels must be a whole number >= 1"):
        data.prepare_dataset(tmp_path / "table.csv", tmp_path / "out", max_levels=0)


# --------------------------------------------------------------------------------- the user in control
def test_integer_codes_become_categories_with_categorical(tmp_path: Path):
    n = 300
    frame = _base(n)
    frame.insert(0, "school_code", np.arange(n) % 8 + 101)
    plain = _prepare(tmp_path, frame)
    school = _roles(plain)["school_code"]
    assert school["role"] == "numeric"
    assert school["hint"] == "whole numbers, 8 distinct: if they are codes, pass --categorical school_code"
    coded = data.prepare_dataset(tmp_path / "table.csv", tmp_path / "out", categorical=["school_code"])
    school = _roles(coded)["school_code"]
    assert school["role"] == "categorical" and school["detail"] == "8 levels, all kept (--categorical)"
    assert sorted(f for f in coded.schema["features"]["processed"] if f.startswith("school_code=")) == \
        [f"school_code={c}" for c in range(101, 109)]
    # new data is encoded the same way (codes read back as numbers match the names '101', ...)
    X, _ = data.load_raw_for_scoring(tmp_path / "table.csv", coded.schema)
    names = coded.schema["features"]["processed"]
    assert X[0, names.index("school_code=101")] == 1.0 and X[1, names.index("school_code=102")] == 1.0


def test_drop_removes_a_column_and_says_so(tmp_path: Path):
    frame = _base(100)
    result = _prepare(tmp_path, frame, drop=["x1"])
    assert _roles(result)["x1"] == {"name": "x1", "role": "dropped", "detail": "dropped with --drop",
                                    "reason": "dropped with --drop"}
    assert result.schema["features"]["numeric"] == ["x0"] and result.schema["options"]["drop"] == ["x1"]


@pytest.mark.parametrize("options, message", [
    ({"drop": ["x3", "colr"]}, "--drop: no column named 'colr'; did you mean 'colour'?"),
    ({"categorical": ["Colour "]}, "--categorical: no column named 'Colour '; did you mean 'colour'?"),
    ({"drop": ["label"]}, "--drop names the target column 'label'"),
    ({"drop": ["x1"], "categorical": ["x1"]}, "'x1' are in both --drop and --categorical"),
])
def test_unknown_or_conflicting_column_names_are_refused(options, message, tmp_path: Path):
    csv = make_classification_csv(tmp_path / "d.csv", rows=60)
    with pytest.raises(DataError, match=message.replace("(", r"\(").replace("?", r"\?")) as info:
        data.prepare_dataset(csv, tmp_path / "out", **options)
    assert str(csv) in str(info.value) and "\n" not in str(info.value)
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------------------------------- warnings
def test_a_feature_that_alone_predicts_the_target_is_named_with_its_figure(tmp_path: Path):
    n = 1118
    rng = np.random.default_rng(4)
    frame = _base(n)
    outcome = frame["label"].to_numpy()
    agrees = np.arange(n) < 1084  # the severity code goes with the outcome in 1,084 of 1,118 rows
    rng.shuffle(agrees)
    frame.insert(0, "severity", np.where(agrees == (outcome == "yes"), "high", "low"))
    result = _prepare(tmp_path, frame)
    leaks = [w for w in result.schema["warnings"] if w["kind"] == "leak"]
    assert [w["column"] for w in leaks] == ["severity"]
    assert 0.95 <= leaks[0]["accuracy"] <= 0.99 and leaks[0]["balanced_accuracy"] >= 0.9
    message = leaks[0]["message"]
    assert f"accuracy {leaks[0]['accuracy']:.3f}" in message and "pass --drop severity" in message
    assert "feature 'severity' alone predicts 'label' almost perfectly" in message
    # once dropped, the warning is gone
    assert _kinds(data.prepare_dataset(tmp_path / "table.csv", tmp_path / "out", drop=["severity"])) == []


def test_a_numeric_leak_is_found_through_its_bins_and_a_unique_code_cannot_look_predictive(tmp_path: Path):
    n = 600
    frame = _base(n)
    score = np.where(frame["label"] == "yes", 1.0, 0.0) + np.random.default_rng(5).normal(0, 0.05, n)
    frame.insert(0, "score_after", score.round(4))
    frame.insert(1, "ticket", np.arange(n) * 7 % n)  # one value per row: memorises train, says nothing held out
    result = _prepare(tmp_path, frame, categorical=["ticket"])
    assert _kinds(result) == [("leak", "score_after")]


def test_regression_leak_reports_r2(tmp_path: Path):
    n = 400
    rng = np.random.default_rng(6)
    x = rng.normal(size=n)
    frame = pd.DataFrame({"x": x.round(4), "noise": rng.normal(size=n).round(4),
                          "price_in_cents": (100 * (3 * x + 10)).round(0),
                          "price": (3 * x + 10 + rng.normal(0, 0.01, n)).round(4)})
    result = _prepare(tmp_path, frame, drop=["x"])
    assert _kinds(result) == [("leak", "price_in_cents")]
    warning = result.schema["warnings"][0]
    assert warning["r2"] > 0.99 and f"R^2 {warning['r2']:.3f}" in warning["message"]


def test_no_warnings_on_an_honest_table(tmp_path: Path):
    csv = make_classification_csv(tmp_path / "d.csv", rows=600)
    assert data.prepare_dataset(csv, tmp_path / "out").schema["warnings"] == []


def test_a_rare_class_is_flagged_with_its_share_and_what_to_watch(tmp_path: Path):
    n = 1000
    frame = _base(n)
    frame["label"] = np.where(np.arange(n) % 50 < 3, "fraud", "ok")  # 6%
    result = _prepare(tmp_path, frame)
    assert _kinds(result) == [("imbalance", "label")]
    warning = result.schema["warnings"][0]
    assert warning["class"] == "fraud" and warning["share"] == pytest.approx(0.06) and warning["rows"] == 60
    assert warning["message"].startswith("class 'fraud' of 'label' is 6.0% of the rows (60 of 1,000; 'ok' 94.0%)")
    assert "val_balanced_accuracy" in warning["message"] and "--class-weights auto" in warning["message"]


def test_many_even_classes_are_not_imbalance(tmp_path: Path):
    frame = _base(1000)
    frame["label"] = [f"c{i % 20}" for i in range(1000)]  # 5% each, but all alike
    assert [k for k, _ in _kinds(_prepare(tmp_path, frame))] == []
    frame["label"] = [f"c{i % 4}" if i % 100 >= 9 else "rare" for i in range(1000)]  # 9% against 22.75% each
    assert _kinds(_prepare(tmp_path, frame)) == [("imbalance", "label")]


def test_an_automatic_target_that_recodes_another_column_is_flagged(tmp_path: Path):
    n = 300
    frame = _base(n)
    sex = np.where(np.random.default_rng(7).random(n) < 0.35, "female", "male")
    frame.insert(0, "Sex", sex)
    frame = frame.drop(columns="label")
    frame["SexCode"] = (sex == "female").astype(int)  # the last column: picked as the target
    result = _prepare(tmp_path, frame)
    assert _kinds(result) == [("recoded_target", "Sex")]
    message = result.schema["warnings"][0]["message"]
    assert "target 'SexCode' was picked automatically (the last column)" in message
    assert "one-to-one recoding of column 'Sex'" in message and "pass --target" in message
    # chosen on purpose: no complaint about the choice, but the leak is still named
    chosen = data.prepare_dataset(tmp_path / "table.csv", tmp_path / "out", target="SexCode")
    assert _kinds(chosen) == [("leak", "Sex")] and chosen.schema["warnings"][0]["accuracy"] == 1.0


def test_an_automatic_target_that_looks_like_an_id(tmp_path: Path):
    frame = _base(200).drop(columns="label")
    frame["y"] = np.random.default_rng(8).normal(size=200).round(3)
    frame["order_id"] = np.random.default_rng(8).permutation(200) + 5000
    result = _prepare(tmp_path, frame)
    assert result.schema["task"] == "regression" and _kinds(result) == [("id_target", "order_id")]
    assert "target 'order_id' was picked automatically (the last column) but looks like an ID" in \
        result.schema["warnings"][0]["message"]
    assert _kinds(data.prepare_dataset(tmp_path / "table.csv", tmp_path / "out", target="y", drop=["order_id"])) == []
    frame = _base(200).rename(columns={"label": "outcome"})
    frame["customer"] = [f"name {i}" for i in range(200)]  # text, all different: refused, it cannot be trained
    with pytest.raises(DataError, match=r"target 'customer' was picked automatically \(the last column\) but looks "
                                        r"like an ID, a name or free text \(200 distinct values in 200 rows\)"):
        _prepare(tmp_path, frame)


def test_whole_number_targets_that_are_measurements_are_not_ids(tmp_path: Path):
    frame = _base(200).drop(columns="label")
    frame["price"] = np.random.default_rng(9).permutation(200) * 1000 + 99_000  # all different, no ID shape
    assert _kinds(_prepare(tmp_path, frame)) == []


def test_single_feature_checks_look_at_a_bounded_sample(tmp_path: Path):
    """Checks stay cheap on big files: at most CHECK_SAMPLE_ROWS held-out rows are scored, and still find the leak."""
    n = 30_000
    frame = _base(n, seed=3)
    frame.insert(0, "outcome_code", np.where(frame["label"] == "yes", 7, 3))
    result = _prepare(tmp_path, frame, target="label")  # chosen, so named as a leak, not as a recoded target
    leak = next(w for w in result.schema["warnings"] if w["kind"] == "leak")
    assert leak["column"] == "outcome_code" and leak["accuracy"] == 1.0
    assert f"on {data.CHECK_SAMPLE_ROWS:,} held-out rows" in leak["message"] and data.CHECK_SAMPLE_ROWS < 0.3 * n


def test_shares_near_the_limit_are_not_rounded_up_to_it():
    assert data._percent(0.09977, 0.10) == "9.98%" and data._percent(0.06, 0.10) == "6.0%"
    assert data._percent(0.1004, 0.10) == "10.0%"


def test_single_row_classes_of_an_automatic_target_point_at_target_and_stay_short(tmp_path: Path):
    frame = _base(60).rename(columns={"label": "outcome"})
    frame["release"] = [f"v{i}" if i < 25 else "old" for i in range(60)]  # the last column: 25 one-row classes
    with pytest.raises(DataError) as info:
        _prepare(tmp_path, frame)
    message = str(info.value)
    assert "class(es) ['v0', 'v1', 'v10', 'v11', 'v12', 'v13', 'v14', 'v15', 'v16', 'v17', ... (25 in all)]" in message
    assert message.endswith("(the target was picked automatically, the last column: choose yours with --target)")
    with pytest.raises(DataError) as info:
        data.prepare_dataset(tmp_path / "table.csv", tmp_path / "out", target="release")
    assert "picked automatically" not in str(info.value)
