"""The exported model as an MLflow pyfunc model that takes raw rows: the training CSV's columns in, predictions out.

    import mlflow, pandas
    model = mlflow.pyfunc.load_model(f"runs:/{run_id}/model")          # or the LoggedModel's models:/<id>
    model.predict(pandas.read_csv("data/train.csv").head())            # prediction, p_<class> ...

    mlflow models serve -m runs:/<run_id>/model --env-manager local --host 127.0.0.1 --port 5001

The MLflow sink logs it at the end of a run (`log_model`). Its one artefact is `model.safetensors`, which carries
the network's spec and the data schema (the fitted preprocessing); the `pipeline` package that trained it travels
in the model's code folder, so a serving process rebuilds the network with the same code. Scoring is
`predict`'s: the same column checks, preprocessing and network, so a frame of CSV rows gets the predictions
`predict.predict_csv` gives that CSV (`data.like_csv` gives the rows the types the CSV reader would).

Columns the model was not trained on are ignored (MLflow says so in a warning); a missing feature column is
refused by MLflow's signature check, naming it. Missing cells are imputed as in training; a category level the
training rows did not have encodes as all zeros, as rare levels did in training. A factory whose code changed
since training is refused when the model loads, as `predict` refuses it, unless the loader passes
`model_config={"trust_changed_code": True}`.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd

from pipeline import data, predict
from pipeline.errors import DataError

EXAMPLE_ROWS = 3
EXAMPLE_MAX_BYTES = 200 * 2**20  # a bigger training CSV is not read again for a few example rows
WHERE = "the request"  # what error messages name in place of a CSV file


class RawRowsModel(mlflow.pyfunc.PythonModel):
    """Raw rows -> the fitted preprocessing -> the network -> `prediction` (and `p_<class>`), as `predict` does."""

    def load_context(self, context: Any) -> None:
        trust = bool((context.model_config or {}).get("trust_changed_code", False))
        self.net, self.spec, self.schema = predict.load_model(context.artifacts["model"], trust_changed_code=trust)

    # `pd.DataFrame` is the one input hint MLflow takes without building a signature of its own from it
    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        """A DataFrame of raw rows (the training CSV's feature columns) -> a DataFrame with the same index."""
        frame = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
        try:
            features = data.features_for_scoring(data.like_csv(frame, self.schema), self.schema, source=WHERE,
                                                 hint="send the training file's columns")
        except DataError as exc:  # the scoring server answers an MlflowException with 400 and its message
            raise mlflow.exceptions.MlflowException.invalid_parameter_value(str(exc)) from None
        scored = predict.predict_features(self.net, self.spec, self.schema, features)
        scored.index = frame.index
        return scored


def raw_example(schema: dict[str, Any], rows: int = EXAMPLE_ROWS) -> pd.DataFrame | None:
    """The first rows of the training CSV (its feature columns, typed as the CSV reader types them), or None when
    that file is no longer where prepare read it (its path is recorded relative to prepare's working folder) or
    is over EXAMPLE_MAX_BYTES. Read whole, with `read_csv`, so the column types are the whole file's."""
    source = schema["source"]
    path = Path(source.get("path") or "")
    if not path.is_file() or path.stat().st_size > EXAMPLE_MAX_BYTES:
        return None
    try:
        csv_file = data.read_csv(path, encoding=source.get("encoding") or "utf-8",
                                 delimiter=source.get("delimiter", ","))
    except DataError:
        return None
    columns = data.raw_columns(schema)
    if any(c not in csv_file.frame.columns for c in columns):
        return None
    example = csv_file.frame[columns].head(rows).reset_index(drop=True)
    for column in example.columns:  # the reader's float32 widened would show 39.1 as 39.099998474121094
        if example[column].dtype == np.float32:
            example[column] = example[column].to_numpy().astype(str).astype(np.float64)
    return example


def raw_signature(schema: dict[str, Any], example: pd.DataFrame | None) -> Any:
    """Inputs: every raw feature column, required. Text columns are `string`; number columns are `Any`, since
    MLflow's `double` refuses the int64 columns pandas reads whole numbers as, and `long` refuses a missing value
    (the model imputes both). Outputs: `prediction` and, for classification, `p_<class>`."""
    from mlflow.models import ModelSignature
    from mlflow.types.schema import AnyType, ColSpec, Schema

    def kind(column: str) -> Any:
        if column in schema["features"].get("datetime", {}):
            return "string"
        if column in schema["features"]["categorical"] and (example is None or _is_text(example[column])):
            return "string"
        return AnyType()

    inputs = Schema([ColSpec(kind(c), c) for c in data.raw_columns(schema)])
    outputs = [ColSpec("string" if schema["task"] == "classification" else "double", "prediction")]
    if schema["task"] == "classification":
        outputs += [ColSpec("float", f"p_{name}") for name in schema["classes"]]
    return ModelSignature(inputs=inputs, outputs=Schema(outputs))


def _is_text(series: pd.Series) -> bool:
    return series.dtype.kind == "O" or isinstance(series.dtype, pd.StringDtype)


def log_model(model_path: Path | str, *, register_as: str | None = None, name: str = "model", step: int = 0) -> Any:
    """Log the pyfunc model to the active MLflow run; returns MLflow's ModelInfo. The caller sets the run.
    `step`: MLflow links the run's metrics logged at this step to the model."""
    import safetensors
    import torch

    import pipeline

    _, _, schema = predict.load_model(model_path)
    example = raw_example(schema)
    weights = weights_identity(model_path)
    requirements = [f"torch=={torch.__version__.split('+')[0]}", f"pandas=={pd.__version__}",
                    f"numpy=={np.__version__}", f"safetensors=={safetensors.__version__}",
                    f"mlflow=={mlflow.__version__}"]
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # no tqdm bars in a lesson's output
    with warnings.catch_warnings(), quiet("mlflow.pyfunc", "mlflow.models"):
        warnings.simplefilter("ignore", UserWarning)  # MLflow's notes on the example's gaps, which the model imputes
        return mlflow.pyfunc.log_model(
            name=name, python_model=str(Path(__file__).with_name("serving_code.py")),  # models from code: no pickle
            artifacts={"model": str(model_path)},
            code_paths=[str(Path(pipeline.__file__).resolve().parent)], signature=raw_signature(schema, example),
            input_example=example, registered_model_name=register_as, pip_requirements=requirements,
            model_config={"trust_changed_code": False}, tags={WEIGHTS_TAG: weights}, step=step)


WEIGHTS_TAG = "pipeline.weights_sha256"  # on the logged model: which model.safetensors it serves


def weights_identity(model_path: Path | str) -> str:
    """sha256 of a model.safetensors' tensors and metadata, in a fixed order (the file's own bytes are not: its
    header's keys come in any order, so two exports of the same weights differ)."""
    import torch
    from safetensors import safe_open

    digest = hashlib.sha256()
    with safe_open(str(model_path), framework="pt") as handle:
        digest.update(json.dumps(handle.metadata() or {}, sort_keys=True).encode())
        for key in sorted(handle.keys()):
            tensor = handle.get_tensor(key).contiguous()
            digest.update(f"{key}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
            digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


@contextlib.contextmanager
def quiet(*loggers: str) -> Iterator[None]:
    """MLflow's INFO lines while it logs the model ("Validating input example ..."): warnings still show."""
    found = [logging.getLogger(name) for name in loggers]
    levels = [logger.level for logger in found]
    for logger in found:
        logger.setLevel(max(logger.getEffectiveLevel(), logging.WARNING))
    try:
        yield
    finally:
        for logger, level in zip(found, levels):
            logger.setLevel(level)
