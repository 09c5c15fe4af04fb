"""The search space: the settings TPE samples, their ranges (a --space YAML file changes them), and how a trial's
sampled values become the engine's own settings."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline.errors import ConfigError

# name: (kind, low, high, log) for numbers, ("choice", values) for choices
SPACE: dict[str, tuple] = {
    "learning_rate": ("float", 1e-4, 1e-2, True),
    "width": ("int", 32, 512, True),
    "depth": ("int", 1, 4, False),
    "dropout": ("float", 0.0, 0.5, False),
    "weight_decay": ("float", 1e-6, 1e-2, True),
    "batch_size": ("choice", [32, 64, 128, 256]),
    "model": ("choice", ["mlp", "realmlp", "tabm"]),
}
# boosted trees (scikit-learn's HistGradientBoosting), tuned with the same budget for a fair comparison
TREE_SPACE: dict[str, tuple] = {
    "learning_rate": ("float", 0.01, 0.3, True),
    "max_leaf_nodes": ("int", 4, 128, True),
    "min_samples_leaf": ("int", 2, 100, True),
    "l2_regularization": ("float", 1e-8, 10.0, True),
    "max_features": ("float", 0.3, 1.0, False),
}


def read_space(path: Path | None, search: list[str] | None) -> dict[str, tuple]:
    """The search space: SPACE, with ranges from a YAML file ({name: {low, high, log} | {choices} | a value to
    fix it}) and restricted to `search` names. Returns {name: spec}; fixed values come back as ("fixed", v)."""
    space = dict(SPACE)
    if path is not None:
        from pipeline import fileio

        given = fileio.read_yaml_mapping(path, what="--space file",
                                         example="learning_rate: {low: 0.0001, high: 0.01, log: true}")
        space = {name: _space_entry(path, str(name), spec) for name, spec in given.items()}
    if search is not None:
        unknown = [name for name in search if name not in space]
        if unknown:
            raise ConfigError(f"--search {','.join(unknown)}: not in the search space; choose from "
                              f"{', '.join(space)}")
        space = {name: spec for name, spec in space.items() if name in search or spec[0] == "fixed"}
    if not any(spec[0] != "fixed" for spec in space.values()):
        raise ConfigError("the search space is empty: nothing to tune; give --search names (e.g. "
                          "learning_rate,width) or ranges in --space")
    return space


def _space_entry(path: Path, name: str, spec: Any) -> tuple:
    if name not in SPACE:
        raise ConfigError(f"{path}: {name!r} is not a tunable setting; choose from {', '.join(SPACE)}")
    kind = SPACE[name][0]
    where = f"{path}: {name}"
    if not isinstance(spec, dict):
        return ("fixed", _checked_value(where, name, spec))
    if "choices" in spec:
        choices = spec["choices"]
        if not isinstance(choices, list) or not choices:
            raise ConfigError(f"{where}: choices must be a non-empty list")
        return ("choice", [_checked_value(where, name, c) for c in choices])
    if kind == "choice":
        raise ConfigError(f"{where}: give choices: [...] (e.g. {SPACE[name][1]})")
    extra = set(spec) - {"low", "high", "log"}
    if extra or "low" not in spec or "high" not in spec:
        raise ConfigError(f"{where}: expected {{low: ..., high: ..., log: true|false}}")
    low, high, log = spec["low"], spec["high"], bool(spec.get("log", False))
    number = int if kind == "int" else float
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (low, high)) or \
            (kind == "int" and not all(float(v).is_integer() for v in (low, high))):
        raise ConfigError(f"{where}: low and high must be {'whole ' if kind == 'int' else ''}numbers")
    low, high = number(low), number(high)
    floor_ok = low >= 0 if name in ("dropout", "weight_decay") else low > 0
    if not low < high or not floor_ok or (log and low <= 0) or (name == "dropout" and high >= 1):
        need = "0 <= low < high < 1" if name == "dropout" else "0 < low < high" if not floor_ok or log else "low < high"
        raise ConfigError(f"{where}: need {need}{' (log scale)' if log else ''}; got low {low}, high {high}")
    return (kind, low, high, log)


def _checked_value(where: str, name: str, value: Any) -> Any:
    from pipeline import config

    if name == "model":
        if not isinstance(value, str) or value not in config.BUILT_IN_MODELS:
            raise ConfigError(f"{where}: {value!r} is not a built-in network ({', '.join(config.BUILT_IN_MODELS)})")
        return value
    kind = SPACE[name][0]
    if kind == "int" or name == "batch_size":
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ConfigError(f"{where}: {value!r} is not a whole number ≥ 1")
        return value
    if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0 or \
            (name == "dropout" and value >= 1):
        raise ConfigError(f"{where}: {value!r} is not a valid {name}")
    return float(value)


def suggest(trial: Any, space: dict[str, tuple]) -> dict[str, Any]:
    """One value per searched name, asked of the trial (an enqueued retry gets its earlier values back)."""
    params = {}
    for name, spec in space.items():
        if spec[0] == "fixed":
            params[name] = spec[1]
        elif spec[0] == "choice":
            params[name] = trial.suggest_categorical(name, spec[1])
        elif spec[0] == "int":
            params[name] = trial.suggest_int(name, spec[1], spec[2], log=spec[3])
        else:
            params[name] = trial.suggest_float(name, spec[1], spec[2], log=spec[3])
    return params


def trial_values(params: dict[str, Any], training: dict[str, Any]) -> dict[str, Any]:
    """The training settings of a trial: the fixed ones, then the sampled ones in the engine's own terms
    (width and depth become hidden_sizes for mlp, model_args for realmlp and tabm)."""
    values = dict(training)
    for name in ("learning_rate", "weight_decay", "batch_size", "model"):
        if name in params:
            values[name] = params[name]
    model = values.get("model", "mlp")
    shape = {k: params[k] for k in ("width", "depth", "dropout") if k in params}
    if model == "mlp":
        hidden = list(values.get("hidden_sizes") or (256, 128))
        if "width" in shape or "depth" in shape:
            hidden = [shape.get("width", hidden[0])] * shape.get("depth", len(hidden))
        values["hidden_sizes"] = hidden
        if "dropout" in shape:
            values["dropout"] = shape["dropout"]
    elif shape:
        values["model_args"] = {**dict(values.get("model_args") or {}), **shape}
    return values
