"""The training configuration: every hyperparameter and switch of a run, built once and validated.

    from pipeline import config
    c = config.make_config({"data_dir": "processed_data", "save_dir": "checkpoints", "epochs": 20})

Flags (`--learning-rate`), YAML keys (`learning_rate:`) and notebook parameters all become one frozen
`TrainConfig` here; only `train.run` reads it, and everything below it receives plain arguments. This module
also says which settings may change when a run is resumed (`RESUMABLE_KEYS`) and lists what differs when
one that may not has changed (`config_differences`).
"""
from __future__ import annotations

import dataclasses
import difflib
import math
import os
from dataclasses import dataclass, field
from typing import Any

from pipeline.errors import ConfigError

# The allowed values of every choice setting: the validation below and `train_pipeline.py --help` read them.
CHOICES: dict[str, tuple[str, ...]] = {
    "device": ("auto", "cpu", "cuda"),
    "norm": ("none", "batch", "layer"),
    "optimizer": ("adam", "adamw", "sgd"),
    "scheduler": ("none", "cosine", "step", "plateau", "onecycle"),
    "amp": ("auto", "off", "bf16", "fp16"),
    "loss": ("auto", "cross_entropy", "mse", "huber"),
    "class_weights": ("auto", "none", "balanced"),
    "loader": ("memory", "dataloader"),
    "progress": ("auto", "bar", "off"),
}


BUILT_IN_MODELS = ("mlp", "realmlp", "tabm")   # --model NAME; model.BUILT_IN builds each (a test checks they agree)


@dataclass(frozen=True)
class TrainConfig:
    """Every hyperparameter and switch of a run. Field names are the flags (`--learning-rate`) and YAML keys."""
    data_dir: str
    save_dir: str
    epochs: int = 50
    batch_size: int = 32
    learning_rate: float = 1e-3
    device: str = "auto"              # auto | cpu | cuda (or cuda:N)
    seed: int = 42
    resume: str = "auto"              # auto | never | PATH
    model: str = "mlp"                # a built-in network, package.module:function or path/to/file.py:function
    model_args: dict[str, Any] = field(default_factory=dict)  # keyword arguments of a custom model's factory
    hidden_sizes: tuple[int, ...] = (256, 128)  # --model mlp
    dropout: float = 0.1              # --model mlp
    norm: str = "none"                # --model mlp: none | batch | layer
    optimizer: str = "adamw"          # adam | adamw | sgd
    weight_decay: float = 0.0
    momentum: float = 0.9             # sgd only
    scheduler: str = "none"           # none | cosine | step | plateau | onecycle
    warmup_epochs: float = 0.0
    step_size: int = 10               # step scheduler: epochs between decays
    gamma: float = 0.5                # step/plateau decay factor
    early_stopping_patience: int = 10  # epochs without improvement; 0 turns it off
    early_stopping_metric: str = "val_loss"
    amp: str = "auto"                 # auto | off | bf16 | fp16
    grad_clip: float = 0.0            # max gradient norm; 0 turns it off
    grad_accum_steps: int = 1
    loss: str = "auto"                # auto | cross_entropy | mse | huber
    class_weights: str = "auto"       # auto (balanced when a class is rare) | none | balanced
    clip_predictions: bool = True     # clip a regression's predictions to the training target's range
    checkpoint_every: int = 1         # epochs between checkpoints
    keep_checkpoints: int = 2         # periodic ckpt-epochNNNN.pt files kept (0 keeps all)
    tracking_uri: str | None = None   # default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db
    experiment_name: str = "pipeline"
    run_name: str | None = None
    register_model: str | None = None  # register the best model in MLflow's model registry under this name
    mlflow: bool = True
    tensorboard: bool = True
    baselines: bool = True            # boosted trees and a linear model scored on the same test split
    num_workers: int = 0              # DataLoader workers (loader=dataloader)
    loader: str = "memory"            # memory (indexed tensors) | dataloader (memory-mapped, for big data)
    compile: bool = False             # torch.compile the model
    deterministic: bool = False       # torch.use_deterministic_algorithms
    log_every: int = 10               # batches between step records
    system_interval: float = 2.0      # seconds between resource samples; 0 turns sampling off
    progress: str = "auto"            # auto (a bar on a terminal) | bar | off

    def to_dict(self) -> dict[str, Any]:
        values = dataclasses.asdict(self)
        values["hidden_sizes"] = list(self.hidden_sizes)
        return values


# Settings that do not change what is computed: they may differ when a run is resumed.
RESUMABLE_KEYS = {"epochs", "data_dir", "save_dir", "resume", "tracking_uri", "experiment_name", "run_name",
                  "register_model", "mlflow", "tensorboard", "baselines", "num_workers", "loader", "log_every",
                  "system_interval", "progress", "checkpoint_every", "keep_checkpoints"}


def make_config(values: dict[str, Any]) -> TrainConfig:
    """Build and validate a config from plain values (flags, YAML or notebook parameters)."""
    names = [f.name for f in dataclasses.fields(TrainConfig)]
    unknown = sorted(set(values) - set(names))
    if unknown:
        hints = []
        for key in unknown:
            close = difflib.get_close_matches(key, names, n=1)
            hints.append(key + (f" (did you mean {close[0]}?)" if close else ""))
        raise ConfigError(f"unknown config key(s): {', '.join(hints)}")
    for required in ("data_dir", "save_dir"):
        if not values.get(required):
            raise ConfigError(f"{required} is required (--{required.replace('_', '-')})")
    values = dict(values)
    if isinstance(values.get("hidden_sizes"), str):
        values["hidden_sizes"] = parse_sizes(values["hidden_sizes"])
    if isinstance(values.get("model_args"), str):
        values["model_args"] = parse_model_args(values["model_args"])
    for key in ("data_dir", "save_dir"):
        if isinstance(values[key], os.PathLike):
            values[key] = os.fspath(values[key])
    for key, value in values.items():
        values[key] = checked_type(key, value)
    config = TrainConfig(**values)
    _validate(config)
    return config


# The type each setting must have once parsed (YAML, papermill and the Python API all pass through here).
KINDS: dict[str, str] = {f.name: str(f.type) for f in dataclasses.fields(TrainConfig)}


def checked_type(key: str, value: Any) -> Any:
    """`value` if it has the setting's type (ints for floats allowed; integral floats for ints refused), else
    a ConfigError naming the setting, what came and what to write."""
    kind, flag = KINDS[key], "--" + key.replace("_", "-")

    def wrong(expected: str) -> ConfigError:
        return ConfigError(f"{flag} (YAML key {key}) must be {expected}, not {value!r} ({type(value).__name__})")

    if kind == "bool":
        if not isinstance(value, bool):
            raise wrong("true or false (a YAML boolean, unquoted)")
        return value
    if kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise wrong("a whole number, e.g. 20")
        return value
    if kind == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise wrong("a number, e.g. 0.001")
        return float(value)
    if kind == "str":
        if not isinstance(value, str) or not value:
            raise wrong("a non-empty text")
        return value
    if kind == "str | None":
        if value is not None and not isinstance(value, str):
            raise wrong("a text (or left out)")
        return value
    if kind.startswith("tuple"):
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, int) and not isinstance(v, bool)
                                                            for v in value):
            raise wrong("a list of whole numbers, e.g. [256, 128] or \"256,128\"")
        return tuple(value)
    if kind.startswith("dict"):
        if not isinstance(value, dict):
            raise wrong("a mapping, e.g. {width: 64}")
        return value
    return value


def parse_sizes(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in text.replace(" ", "").split(",") if part)
    except ValueError:
        raise ConfigError(f"--hidden-sizes must be comma-separated integers like 256,128, not {text!r}") from None


def parse_model_args(text: str) -> dict[str, Any]:
    """`--model-args '{"width": 64}'`: a JSON object of keyword arguments for the model factory."""
    import json

    try:
        value = json.loads(text) if text.strip() else {}
    except RecursionError:
        raise ConfigError("--model-args is nested too deeply to read; give a flat JSON object like "
                          "'{\"width\": 64}'") from None
    except ValueError as exc:
        raise ConfigError(f"--model-args must be a JSON object like '{{\"width\": 64}}' ({exc})") from None
    if not isinstance(value, dict):
        raise ConfigError(f"--model-args must be a JSON object like '{{\"width\": 64}}', not {text!r}")
    return value


def _validate(c: TrainConfig) -> None:
    checks = [
        (c.epochs >= 1, f"--epochs must be >= 1, not {c.epochs}"),
        (c.batch_size >= 1, f"--batch-size must be >= 1, not {c.batch_size}"),
        (c.learning_rate > 0 and math.isfinite(c.learning_rate), f"--learning-rate must be > 0, not {c.learning_rate}"),
        (c.device in CHOICES["device"] or c.device.startswith("cuda:"),
         f"--device must be auto, cpu or cuda, not {c.device!r}"),
        (bool(c.model) and isinstance(c.model, str), "--model must name a network, e.g. mlp or my_models.py:build"),
        (isinstance(c.model_args, dict), "--model-args must be a JSON object"),
        (all(s > 0 for s in c.hidden_sizes), f"--hidden-sizes must be positive, not {c.hidden_sizes}"),
        (0 <= c.dropout < 1, f"--dropout must be in [0, 1), not {c.dropout}"),
        (c.grad_accum_steps >= 1, "--grad-accum-steps must be >= 1"),
        (c.grad_clip >= 0, "--grad-clip must be >= 0"),
        (c.checkpoint_every >= 1, "--checkpoint-every must be >= 1"),
        (c.log_every >= 1, "--log-every must be >= 1"),
        (c.early_stopping_patience >= 0, "--early-stopping-patience must be >= 0"),
    ]
    for key, allowed in CHOICES.items():
        if key != "device":
            value = getattr(c, key)
            checks.append((value in allowed, f"--{key.replace('_', '-')} must be one of {', '.join(allowed)}, "
                                             f"not {value!r}"))
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)


def config_differences(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """`key: checkpoint X, now Y` for every setting that affects training and differs."""
    defaults = {f.name: f.default if f.default_factory is dataclasses.MISSING else f.default_factory()
                for f in dataclasses.fields(TrainConfig)}
    keys = sorted((set(saved) | set(current)) - RESUMABLE_KEYS)
    # a setting added after the checkpoint was written counts as its default there
    was = {k: saved.get(k, defaults.get(k)) for k in keys}
    now = {k: current.get(k, defaults.get(k)) for k in keys}
    return [f"{k}: checkpoint {was[k]!r}, now {now[k]!r}" for k in keys if was[k] != now[k]]
