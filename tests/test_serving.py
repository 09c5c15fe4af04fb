"""The MLflow model that takes raw rows: what predict gives, from load_model and from a real scoring server.

The engine's MLflow sink logs `pipeline.serving.RawRowsModel` (fitted preprocessing + network, from
model.safetensors); these tests load it the way an MLflow user would and compare it with `predict.predict_csv`
on the same CSV rows, exactly. The served test starts `mlflow models serve` once, on loopback, and stops it by PID.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline import data, predict, serving, train
from pipeline.errors import DataError

from conftest import BUNDLED_CSV, ROOT, free_port, script_env, wait_until_answering

ENGINE = {"tensorboard": False, "system_interval": 0, "progress": "off", "baselines": False, "epochs": 2,
          "resume": "never"}


def scratch_experiment(tmp_path: Path) -> str:
    """An experiment with its artefacts under tmp_path (the store's Default one keeps them in ./mlruns: the checkout)."""
    import mlflow

    return mlflow.create_experiment(f"serving-{tmp_path.name}", artifact_location=(tmp_path / "artifacts").as_uri())


def trained(data_dir: Path, save_dir: Path) -> tuple[str, Path]:
    """A short run with the MLflow sink on (the session's sandboxed sqlite store): (model URI, model.safetensors)."""
    result = train.run(train.make_config(dict(data_dir=str(data_dir), save_dir=str(save_dir), **ENGINE)),
                       log=lambda m: None)
    assert result.status == "completed"
    mlflow_run = result.metrics["run"]["mlflow"]
    assert mlflow_run is not None, "the MLflow sink did not run"
    return f"runs:/{mlflow_run['run_id']}/model", save_dir / "model.safetensors"


@pytest.fixture(scope="module")
def penguin_model(penguins_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    return trained(penguins_dir, tmp_path_factory.mktemp("serving") / "s")


@pytest.fixture(scope="module")
def regression_model(regression_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    return trained(regression_dir, tmp_path_factory.mktemp("serving_reg") / "s")


def csv_lines(path: Path, rows: list[int]) -> str:
    """The header and the given data rows (0-based) of a CSV, as its own text: the same bytes predict reads."""
    lines = path.read_text().splitlines()
    return "\n".join([lines[0]] + [lines[1 + r] for r in rows]) + "\n"


def assert_same(ours: pd.DataFrame, theirs: pd.DataFrame, task: str) -> None:
    columns = [c for c in theirs.columns if c == "prediction" or c.startswith("p_")]
    assert list(ours.columns) == columns
    for column in columns:
        if column == "prediction" and task == "classification":
            assert ours[column].tolist() == theirs[column].tolist()
        else:
            np.testing.assert_array_equal(ours[column].to_numpy(), theirs[column].to_numpy())  # exactly


def load(uri: str, **options):
    import mlflow

    return mlflow.pyfunc.load_model(uri, **options)


# ------------------------------------------------------------------------------------- the same predictions
def test_raw_rows_give_what_predict_csv_gives(penguin_model, tmp_path: Path):
    uri, weights = penguin_model
    model = load(uri)
    # the whole bundled file (rows with missing numbers and a missing sex among them), as pandas reads it
    whole = model.predict(pd.read_csv(BUNDLED_CSV))
    reference = predict.predict_csv(weights, BUNDLED_CSV)
    assert_same(whole, reference, "classification")
    assert whole["prediction"].nunique() > 1  # a network that learnt something: the comparison can fail
    # a few rows on their own, whose columns pandas reads with other types than the whole file's (no gaps: ints)
    some = tmp_path / "some.csv"
    some.write_text(csv_lines(BUNDLED_CSV, [0, 1, 2, 150, 300]))
    frame = pd.read_csv(some)
    assert frame["flipper_length_mm"].dtype == np.int64
    assert_same(model.predict(frame), predict.predict_csv(weights, some), "classification")
    # whole numbers held as floats (a frame built from a float array, JSON's 181.0) score as the CSV's integers
    as_floats = frame.astype({"flipper_length_mm": float, "body_mass_g": float, "year": float})
    assert_same(model.predict(as_floats), predict.predict_csv(weights, some), "classification")


def test_regression_values_are_predict_csv_values(regression_model, regression_dir: Path, tmp_path: Path):
    uri, weights = regression_model
    source = Path(data.load_schema(regression_dir)["source"]["path"])
    model = load(uri)
    ours = model.predict(pd.read_csv(source))
    assert_same(ours, predict.predict_csv(weights, source), "regression")
    assert ours["prediction"].std() > 0


def test_the_signature_and_example_are_raw_columns(penguin_model, penguins_dir: Path):
    import mlflow

    uri, _ = penguin_model
    schema = data.load_schema(penguins_dir)
    info = mlflow.models.get_model_info(uri)
    inputs = {spec["name"]: spec["type"] for spec in info.signature.inputs.to_dict()}
    assert list(inputs) == data.raw_columns(schema)  # the CSV's feature columns, not one-hot names
    assert set(inputs) == set(schema["features"]["original"]) and "species" not in inputs
    assert inputs["island"] == inputs["sex"] == "string" and inputs["body_mass_g"] == "any"
    outputs = [spec["name"] for spec in info.signature.outputs.to_dict()]
    assert outputs == ["prediction", "p_Adelie", "p_Chinstrap", "p_Gentoo"]
    assert "python_function" in info.flavors and info.flavors["python_function"].get("code") == "code"
    example = load(uri).input_example
    first = pd.read_csv(BUNDLED_CSV).head(3)
    assert list(example.columns) == list(inputs)
    assert example.to_dict("records") == first[list(inputs)].to_dict("records")  # 39.1 as in the file


def test_a_date_column_is_one_raw_string_column(tmp_path: Path):
    import mlflow

    rng = np.random.default_rng(5)
    n = 200
    table = pd.DataFrame({"when": pd.date_range("2021-01-01", periods=n, freq="D").strftime("%Y-%m-%d"),
                          "x": rng.normal(size=n).round(4), "kind": rng.choice(["a", "b"], size=n)})
    table["y"] = (table["x"] + (table["kind"] == "a") > 0.5).map({True: "yes", False: "no"})
    csv = tmp_path / "dated.csv"
    table.to_csv(csv, index=False)
    data.prepare_dataset(csv, tmp_path / "prepared", seed=1)
    train.run(train.make_config(dict(data_dir=str(tmp_path / "prepared"), save_dir=str(tmp_path / "s"),
                                     **dict(ENGINE, mlflow=False))), log=lambda m: None)
    weights = tmp_path / "s" / "model.safetensors"
    _, _, schema = predict.load_model(weights)
    assert schema["features"]["datetime"], "the test needs a date column"
    with mlflow.start_run(experiment_id=scratch_experiment(tmp_path)):
        info = serving.log_model(weights)
    inputs = {spec["name"]: spec["type"] for spec in info.signature.inputs.to_dict()}
    assert inputs == {"when": "string", "x": "any", "kind": "string"}
    assert_same(load(info.model_uri).predict(pd.read_csv(csv)), predict.predict_csv(weights, csv), "classification")


# ---------------------------------------------------------------------------------------- what is refused
def test_a_missing_column_is_refused_and_an_unknown_one_ignored(penguin_model):
    from mlflow.exceptions import MlflowException

    uri, _ = penguin_model
    model = load(uri)
    frame = pd.read_csv(BUNDLED_CSV).head(5)
    with pytest.raises(MlflowException, match=r"missing inputs \['sex'\]"):
        model.predict(frame.drop(columns=["sex"]))
    with_extra = frame.assign(comment="seen at dawn", species="not used")
    assert_same(model.predict(with_extra), model.predict(frame), "classification")


def test_unseen_levels_and_missing_cells_score_as_predict_scores_them(penguin_model, tmp_path: Path):
    """The documented fallback: an unseen level encodes as all zeros, a gap as the training median/"(missing)"."""
    uri, weights = penguin_model
    odd = tmp_path / "odd.csv"
    odd.write_text("island,bill_length_mm,bill_depth_mm,flipper_length_mm,body_mass_g,sex,year,species\n"
                   "Atlantis,39.1,18.7,181,3750,male,2007,Adelie\n"
                   "Torgersen,,18.7,,3750,,2007,Adelie\n"
                   "Dream,46.5,17.9,192,3500,unknown,2009,Chinstrap\n")
    ours = load(uri).predict(pd.read_csv(odd))
    assert_same(ours, predict.predict_csv(weights, odd), "classification")
    _, _, schema = predict.load_model(weights)
    features = data.features_for_scoring(data.like_csv(pd.read_csv(odd), schema), schema, source=odd)
    names = schema["features"]["processed"]
    island = [i for i, n in enumerate(names) if n.startswith("island=")]
    assert features[0, island].tolist() == [0.0, 0.0, 0.0]   # Atlantis: no level of the training rows
    assert features[1, names.index("sex=(missing)")] == 1.0
    # the request's own types (None for a gap, as JSON's null arrives) give what the same row as a CSV gives
    # (one row: the network's float rounding can depend on the batch, so the CSV holds that row alone)
    request = pd.DataFrame({"island": ["Torgersen"], "bill_length_mm": [None], "bill_depth_mm": [18.7],
                            "flipper_length_mm": [None], "body_mass_g": [3750], "sex": [None], "year": [2007]})
    gaps = tmp_path / "gaps.csv"
    gaps.write_text(csv_lines(odd, [1]))
    assert_same(load(uri).predict(request), predict.predict_csv(weights, gaps), "classification")


def test_text_in_a_number_column_is_refused_naming_it(penguin_model):
    from mlflow.exceptions import MlflowException

    uri, _ = penguin_model
    frame = pd.read_csv(BUNDLED_CSV).head(2).astype({"body_mass_g": object})
    frame.loc[0, "body_mass_g"] = "heavy"
    with pytest.raises(MlflowException, match="'body_mass_g' .*non-numeric value"):
        load(uri).predict(frame)


# ------------------------------------------------------------------------------------------------ provenance
FACTORY = '''
from torch import nn


def build(n_features, n_outputs, width=8):
    return nn.Sequential(nn.Linear(n_features, width), nn.{act}(), nn.Linear(width, n_outputs))
'''


def test_a_changed_factory_is_refused_unless_trusted(penguins_dir: Path, tmp_path: Path):
    import mlflow
    from mlflow.exceptions import MlflowException

    factory = tmp_path / "served_models.py"
    factory.write_text(FACTORY.format(act="Tanh"))
    config = dict(ENGINE, mlflow=False, model=f"{factory}:build", model_args={"width": 8})
    train.run(train.make_config(dict(data_dir=str(penguins_dir), save_dir=str(tmp_path / "s"), **config)),
              log=lambda m: None)
    weights = tmp_path / "s" / "model.safetensors"
    with mlflow.start_run(experiment_id=scratch_experiment(tmp_path)):
        uri = serving.log_model(weights).model_uri
    first = load(uri).predict(pd.read_csv(BUNDLED_CSV))
    assert_same(first, predict.predict_csv(weights, BUNDLED_CSV), "classification")
    factory.write_text(FACTORY.format(act="ReLU"))  # the same shapes: the weights would load and mean another thing
    with pytest.raises(Exception, match=r"code changed since it was trained .*trust_changed_code") as refused:
        load(uri)
    assert isinstance(refused.value, (MlflowException, DataError))
    trusted = load(uri, model_config={"trust_changed_code": True}).predict(pd.read_csv(BUNDLED_CSV))
    assert not np.array_equal(trusted["p_Adelie"].to_numpy(), first["p_Adelie"].to_numpy())  # ReLU now


# ------------------------------------------------------------------------------------------ a real server
def post(url: str, payload: dict) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=json.dumps(payload).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@pytest.mark.slow
def test_mlflow_models_serve_answers_a_raw_row(penguin_model, tmp_path: Path):
    """`mlflow models serve -m runs:/<id>/model --env-manager local` on 127.0.0.1, in a clean working folder and
    without this checkout on PYTHONPATH."""
    uri, weights = penguin_model
    port = free_port()
    env = script_env(PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
                     MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR="false")
    env.pop("PYTHONPATH", None)
    log_path = tmp_path / "serve.log"
    started = time.monotonic()
    with open(log_path, "w") as log:
        server = subprocess.Popen([sys.executable, "-m", "mlflow", "models", "serve", "-m", uri, "--env-manager",
                                   "local", "--host", "127.0.0.1", "--port", str(port)], cwd=tmp_path, env=env,
                                  stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        base = f"http://127.0.0.1:{port}"
        ready = wait_until_answering(server, f"{base}/ping", log_path, timeout_s=60)
        rows = tmp_path / "rows.csv"
        rows.write_text(csv_lines(BUNDLED_CSV, [3, 200]))  # row 3 is the one with every measurement missing
        frame = pd.read_csv(rows).drop(columns=["species"])
        payload = {"dataframe_split": json.loads(frame.to_json(orient="split", index=False))}
        status, answer = post(f"{base}/invocations", payload)
        assert status == 200, answer
        served = pd.DataFrame(answer["predictions"])
        reference = predict.predict_csv(weights, rows)
        assert served["prediction"].tolist() == reference["prediction"].tolist()
        for column in ("p_Adelie", "p_Chinstrap", "p_Gentoo"):  # float32 through JSON and back: the same float32
            np.testing.assert_array_equal(served[column].to_numpy(np.float32), reference[column].to_numpy())
        status, answer = post(f"{base}/invocations", {"dataframe_split": {"columns": ["island"], "data": [["Dream"]]}})
        assert status == 400 and "missing inputs" in answer["message"] and "'sex'" in answer["message"]
        print(f"served: ready after {ready:.1f} s, {time.monotonic() - started:.1f} s in all")
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()


@pytest.mark.slow
def test_a_fresh_process_loads_the_pipeline_code_saved_with_the_model(penguin_model, tmp_path: Path):
    """The model's `code/pipeline` comes first on the path when it loads, whichever `pipeline` is installed."""
    uri, _ = penguin_model
    code = f"import mlflow; mlflow.pyfunc.load_model({uri!r}); import pipeline; print(pipeline.__file__)"
    env = script_env(MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR="false")
    env.pop("PYTHONPATH", None)
    done = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=120,
                          cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().endswith("/code/pipeline/__init__.py"), done.stdout


@pytest.mark.slow
def test_the_tracking_module_imports_neither_pandas_nor_torch():
    code = "import sys, pipeline.tracking; print(sorted(m for m in ('pandas', 'torch', 'mlflow') if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=60, cwd=ROOT,
                          env=script_env(PYTHONPATH=str(ROOT)))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
