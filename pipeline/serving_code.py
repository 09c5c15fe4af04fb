"""The model's code, as MLflow's "models from code" logs it: loading the model runs this file (no pickle).

`serving.log_model` passes this file as `python_model`; the `pipeline` package travels with the model in
`code_paths`, so a process without the project installed loads the same code that trained it."""
import mlflow

from pipeline.serving import RawRowsModel

mlflow.models.set_model(RawRowsModel())
