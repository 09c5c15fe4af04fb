"""Score a new CSV with an exported model (`model.safetensors`, which carries its own schema).

    from pipeline import predict
    scored = predict.predict_csv("checkpoints/model.safetensors", "data/train.csv")   # a DataFrame
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
from pipeline.errors import DataError


def load_model(path: Path | str) -> tuple[nn.Module, dict[str, Any], dict[str, Any]]:
    """Rebuild the MLP from the safetensors file; returns (model in eval mode, model spec, data schema)."""
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
    net = model_lib.build_mlp(spec["n_features"], spec["n_outputs"], spec["hidden_sizes"], spec["dropout"], spec["norm"])
    net.load_state_dict(load_file(str(path)))
    return net.eval(), spec, schema


def predict_csv(model_path: Path | str, csv_path: Path | str) -> pd.DataFrame:
    """The CSV's rows with a `prediction` column (and `p_<class>` probabilities for classification)."""
    net, spec, schema = load_model(model_path)
    features, frame = data.load_raw_for_scoring(csv_path, schema)
    with torch.inference_mode():
        out = net(torch.from_numpy(features)).numpy()
    scored = frame.copy()
    if spec["task"] == "classification":
        probabilities = torch.softmax(torch.from_numpy(out), dim=1).numpy()
        classes = schema["classes"]
        scored["prediction"] = np.asarray(classes, dtype=object)[probabilities.argmax(axis=1)]
        for i, name in enumerate(classes):
            scored[f"p_{name}"] = probabilities[:, i]
    else:
        scored["prediction"] = out[:, 0] * spec["target_std"] + spec["target_mean"]
    return scored
