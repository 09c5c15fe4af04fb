"""Score a new CSV with an exported model (`model.safetensors`, which carries its own schema and model spec).

    from pipeline import predict
    scored = predict.predict_csv("checkpoints/model.safetensors", "data/train.csv")   # a DataFrame

The network is rebuilt from the spec by `model.build`, the same code the engine trains with; a model made
by your own factory is rebuilt by importing that factory again (pass `model_fn=` where it cannot be, e.g.
for one defined in a notebook).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from pipeline import data, model as model_lib
from pipeline.errors import ConfigError, DataError


def load_model(path: Path | str, model_fn: model_lib.ModelFn | None = None, *,
               trust_changed_code: bool = False) -> tuple[nn.Module, dict[str, Any], dict[str, Any]]:
    """Rebuild the network from the safetensors file; returns (model in eval mode, model spec, data schema).
    A factory whose code (or a local module it uses) changed since training is refused unless
    `trust_changed_code`: the weights would load into a network that computes something else."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such model file; train first (it is written to --save-dir)")
    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata() or {}
    if metadata.get("format") != "pipeline.model/1":
        raise DataError(f"{path}: not a model exported by this pipeline")
    spec, schema = json.loads(metadata["model_spec"]), json.loads(metadata["schema"])
    try:
        if not trust_changed_code:
            model_lib.check_identity(spec, model_fn)
        net = model_lib.build(spec, model_fn)
    except ConfigError as exc:
        raise DataError(f"{path}: the network cannot be rebuilt ({exc}); make its factory "
                        f"{spec.get('factory')!r} importable again, or pass model_fn= to predict.load_model / "
                        "predict_csv") from None
    try:
        net.load_state_dict(load_file(str(path)))
    except RuntimeError as exc:
        raise DataError(f"{path}: the weights do not fit the network {spec.get('factory')!r} builds now (was its "
                        f"code changed since training?): {str(exc).splitlines()[0][:200]}") from None
    return net.eval(), spec, schema


def predict_csv(model_path: Path | str, csv_path: Path | str, model_fn: model_lib.ModelFn | None = None, *,
                trust_changed_code: bool = False) -> pd.DataFrame:
    """The CSV's rows with a `prediction` column (and `p_<class>` probabilities for classification)."""
    net, spec, schema = load_model(model_path, model_fn, trust_changed_code=trust_changed_code)
    features, frame = data.load_raw_for_scoring(csv_path, schema)
    scored = frame.copy()
    for name, values in predict_features(net, spec, schema, features).items():
        scored[name] = values.to_numpy()  # a CSV's own `prediction` column is replaced, as before
    return scored


def predict_features(net: nn.Module, spec: dict[str, Any], schema: dict[str, Any], features: np.ndarray
                     ) -> pd.DataFrame:
    """`prediction` (a class name, or a value in the target's units) and, for classification, `p_<class>` for
    each row of the processed (rows, features) array; the index runs 0..rows-1. The class is the most probable
    one (the engine chooses no decision threshold)."""
    with torch.inference_mode():
        out = net(torch.from_numpy(features)).numpy()
    scored = pd.DataFrame(index=pd.RangeIndex(len(features)))
    if spec["task"] == "classification":
        probabilities = torch.softmax(torch.from_numpy(out), dim=1).numpy()
        classes = schema["classes"]
        scored["prediction"] = np.asarray(classes, dtype=object)[probabilities.argmax(axis=1)]
        for i, name in enumerate(classes):
            scored[f"p_{name}"] = probabilities[:, i]
    else:
        prediction = out[:, 0] * spec["target_std"] + spec["target_mean"]
        if spec.get("target_range"):  # the training target's range (models trained before it had none)
            prediction = np.clip(prediction, *spec["target_range"])
        scored["prediction"] = prediction
    return scored
