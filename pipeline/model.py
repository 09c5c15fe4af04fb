"""The networks: the plain MLP, and one way to build any model from its spec (built-in or your own).

    model = build_mlp(n_features=11, n_outputs=3, hidden_sizes=(256, 128), dropout=0.1)
    logits = model(x)  # x: (batch, n_features) -> (batch, n_outputs)

A model is made by a *factory* `fn(n_features, n_outputs, **model_args) -> nn.Module`, named by a reference:
`mlp` (built in), `package.module:function`, or `path/to/file.py:function`. `resolve_factory` turns the
reference into the function plus what identifies it (the canonical reference and a content hash), so a run
refuses to resume with another model and `predict` rebuilds the same network from `model.safetensors`.
"""
from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pipeline import networks
from pipeline.errors import ConfigError

NORMS = ("none", "batch", "layer")
ModelFn = Callable[..., nn.Module]


def build_mlp(n_features: int, n_outputs: int, hidden_sizes: tuple[int, ...] | list[int] = (256, 128),
              dropout: float = 0.0, norm: str = "none") -> nn.Sequential:
    """Linear -> [norm] -> ReLU -> [dropout] for each hidden size, then a linear head (no activation:
    the loss applies softmax/identity)."""
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {NORMS}, not {norm!r}")
    layers: list[nn.Module] = []
    width = n_features
    for size in hidden_sizes:
        layers.append(nn.Linear(width, size))
        if norm == "batch":
            layers.append(nn.BatchNorm1d(size))
        elif norm == "layer":
            layers.append(nn.LayerNorm(size))
        layers.append(nn.ReLU())
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        width = size
    layers.append(nn.Linear(width, n_outputs))
    return nn.Sequential(*layers)


# The networks `--model NAME` knows by name.
BUILT_IN: dict[str, ModelFn] = {"mlp": build_mlp, "realmlp": networks.build_realmlp, "tabm": networks.build_tabm}


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def resolve_factory(reference: str, model_fn: ModelFn | None = None) -> tuple[ModelFn, str, str | None]:
    """(factory, canonical reference, sha256 of its source or None) for `--model REFERENCE` or a function.

    A file is recorded by absolute path and content hash; a module by name and its file's hash; a function
    handed to the Python API by `module:qualname` and the hash of its source."""
    if model_fn is not None:
        return model_fn, f"{model_fn.__module__}:{model_fn.__qualname__}", _source_sha256(model_fn)
    if reference in BUILT_IN:
        return BUILT_IN[reference], reference, None
    where, sep, name = reference.rpartition(":")
    if not sep or not where or not name:
        raise ConfigError(f"--model {reference!r}: expected a built-in network ({', '.join(BUILT_IN)}), "
                          "package.module:function or path/to/file.py:function")
    if where.endswith(".py"):
        path = Path(where).expanduser().resolve()
        if not path.is_file():
            raise ConfigError(f"--model {reference!r}: {path} is not a file; check the path")
        module = _import_file(path)
        origin, digest = str(path), hashlib.sha256(path.read_bytes()).hexdigest()
    else:
        try:
            module = importlib.import_module(where)
        except Exception as exc:  # ImportError, or the module itself failing on import
            raise ConfigError(f"--model {reference!r}: cannot import {where} ({type(exc).__name__}: {exc}); "
                              "is it installed or on PYTHONPATH?") from None
        origin, digest = where, _file_sha256(getattr(module, "__file__", None))
    factory = getattr(module, name, None)
    if not callable(factory):
        raise ConfigError(f"--model {reference!r}: {where} has no function {name!r}")
    return factory, f"{origin}:{name}", digest


def build(spec: dict[str, Any], model_fn: ModelFn | None = None) -> nn.Module:
    """The network a spec describes (as saved in checkpoints and model.safetensors), freshly initialised.

    `model_fn` stands in for a factory that cannot be imported here (e.g. one defined in a notebook)."""
    reference = spec.get("factory", "mlp")
    args = spec.get("model_args")
    if args is None:  # specs written before factories existed describe the MLP by its own keys
        args = {k: spec[k] for k in ("hidden_sizes", "dropout", "norm") if k in spec}
    factory, _, _ = resolve_factory(reference, model_fn)
    return make(factory, spec["n_features"], spec["n_outputs"], args, reference=reference)


def make(factory: ModelFn, n_features: int, n_outputs: int, model_args: dict[str, Any], *,
         reference: str) -> nn.Module:
    """Call the factory and check that it gives a module mapping (batch, n_features) to (batch, n_outputs)."""
    try:
        net = factory(n_features, n_outputs, **model_args)
    except TypeError as exc:
        raise ConfigError(f"--model {reference}: calling it as fn(n_features, n_outputs, **model_args) failed "
                          f"({exc}); check --model-args") from None
    if not isinstance(net, nn.Module):
        raise ConfigError(f"--model {reference}: returned {type(net).__name__}, not a torch.nn.Module")
    check_output_shape(net, n_features, n_outputs, reference)
    return net


def check_output_shape(net: nn.Module, n_features: int, n_outputs: int, reference: str) -> None:
    """One forward pass on two rows, in eval mode and without touching the random stream (so checking
    leaves the run's numbers unchanged)."""
    was_training = net.training
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        net.eval()
        try:
            out = net(torch.zeros(2, n_features))
        except Exception as exc:
            raise ConfigError(f"--model {reference}: a forward pass on (2, {n_features}) inputs failed "
                              f"({type(exc).__name__}: {exc})") from None
    net.train(was_training)
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (2, n_outputs):
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ConfigError(f"--model {reference}: expected outputs of shape (batch, {n_outputs}), got {shape} "
                          f"for a batch of 2")


def _import_file(path: Path) -> Any:
    name = "pipeline_user_model_" + hashlib.sha256(str(path).encode()).hexdigest()[:12]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ConfigError(f"--model {path}: not a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # so classes defined in the file can be pickled (e.g. by MLflow)
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[name]
        raise ConfigError(f"--model {path}: importing it failed ({type(exc).__name__}: {exc})") from None
    return module


def _file_sha256(path: str | None) -> str | None:
    if not path or not Path(path).is_file():
        return None
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _source_sha256(fn: Callable[..., Any]) -> str | None:
    try:
        return hashlib.sha256(inspect.getsource(fn).encode()).hexdigest()
    except (OSError, TypeError):
        return None
