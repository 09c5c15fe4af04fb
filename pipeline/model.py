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
import json
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
    """(factory, canonical reference, identity sha256 or None) for `--model REFERENCE` or a function.

    The identity covers the factory's own code and every local module it uses (see `factory_files`), so an
    edit to a helper the factory imports changes it too: a resume refuses it and `predict` says so. A file is
    recorded by absolute path; a module by name (an installed package by its version); a function handed to
    the Python API by `module:qualname` and its source."""
    factory, canonical, _ = _resolve(reference, model_fn)
    files = factory_files(reference, model_fn, factory)
    return factory, canonical, identity_sha256(files)


def factory_files(reference: str, model_fn: ModelFn | None, factory: ModelFn) -> dict[str, str] | None:
    """{file or package: sha256 or version} of what the factory's behaviour depends on, or None for a built-in
    network (the package's own code, versioned with it). Local modules are those under the factory's folder
    (or its top-level package's parent) that are not installed packages and not this pipeline."""
    if model_fn is None and reference in BUILT_IN:
        return None
    module = sys.modules.get(getattr(factory, "__module__", "") or "")
    files: dict[str, str] = {}
    importable = module is not None and module.__name__ != "__main__" and Path(getattr(module, "__file__", "")
                                                                               or "").is_file()
    if model_fn is not None and not importable:
        # a function of a notebook or a script (predict can only be handed it again): its source, and the local
        # modules it uses. A function of an importable module is identified like `--model module:function`.
        files[f"{factory.__module__}:{factory.__qualname__}"] = _source_sha256(factory) or "unknown"
        used = [getattr(factory, "__globals__", {}).get(n) for n in getattr(factory, "__code__", None).co_names] \
            if hasattr(factory, "__code__") else []
        for value in used:
            target = value if inspect.ismodule(value) else sys.modules.get(getattr(value, "__module__", "") or "")
            if target is None or target is module:
                continue
            file = Path(getattr(target, "__file__", "") or "")
            if file.is_file() and not _installed(file):
                for path in _local_modules(target, file.resolve().parent):
                    files[path.name] = hashlib.sha256(path.read_bytes()).hexdigest()
        return files
    origin = Path(getattr(module, "__file__", "") or "")
    if not origin.is_file():
        return files or None
    if _installed(origin):
        top = (module.__name__ or "").split(".")[0]
        files[top] = "version " + _version(top)
        return files
    root = origin.resolve().parent
    package = (module.__name__ or "").split(".")
    for _ in package[1:]:  # a package's modules: its top-level folder's parent is the root
        root = root.parent
    for path in _local_modules(module, root):
        files[str(path.relative_to(root))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return files


def check_identity(spec: dict[str, Any], model_fn: ModelFn | None = None) -> None:
    """Refuse to rebuild a network whose factory code changed since training (the same shapes with another
    activation would load the weights and predict something else, silently). Names what changed."""
    recorded = spec.get("factory_sha256")
    reference = spec.get("factory", "mlp")
    if recorded is None or (model_fn is None and reference in BUILT_IN):
        return
    factory, _, now = resolve_factory(reference, model_fn)
    if now == recorded:
        return
    before, after = spec.get("factory_files") or {}, factory_files(reference, model_fn, factory) or {}
    if before and sorted(before.values()) == sorted(after.values()):
        return  # the same code under other names (a stand-in `model_fn` copied from the moved factory file)
    changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    what = ", ".join(changed[:5]) if changed and before else "its code"
    raise ConfigError(f"the model's code changed since it was trained ({what} differ from the training run's); "
                      "retrain, restore that code, or pass trust_changed_code=True to use it as it is now")


def identity_sha256(files: dict[str, str] | None) -> str | None:
    if files is None:
        return None
    return hashlib.sha256(json.dumps(sorted(files.items())).encode()).hexdigest()


def _installed(path: Path) -> bool:
    parts = path.resolve().parts
    return "site-packages" in parts or "dist-packages" in parts or str(path.resolve()).startswith(sys.base_prefix)


def _version(top: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(top)
    except metadata.PackageNotFoundError:
        module = sys.modules.get(top)
        return str(getattr(module, "__version__", "unknown"))


def _local_modules(module: Any, root: Path) -> list[Path]:
    """The module's file and, recursively, the files of the local modules its globals refer to (imported modules,
    and the modules that functions and classes it imported were defined in)."""
    own = Path(__file__).resolve().parent   # this package: versioned with the project, not the user's model
    seen: dict[str, Path] = {}
    todo = [module]
    while todo:
        current = todo.pop()
        file = Path(getattr(current, "__file__", "") or "")
        if not file.is_file():
            continue
        file = file.resolve()
        if str(file) in seen or root not in file.parents or own in file.parents or _installed(file):
            continue
        seen[str(file)] = file
        for value in list(vars(current).values()):
            if inspect.ismodule(value):
                todo.append(value)
            elif (inspect.isfunction(value) or inspect.isclass(value)) and value.__module__ in sys.modules:
                todo.append(sys.modules[value.__module__])
    return sorted(seen.values())


def _resolve(reference: str, model_fn: ModelFn | None) -> tuple[ModelFn, str, str | None]:
    if model_fn is not None:
        return model_fn, f"{model_fn.__module__}:{model_fn.__qualname__}", None
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
        except (Exception, SystemExit) as exc:  # ImportError, or the module itself failing (or exiting) on import
            raise ConfigError(f"--model {reference!r}: cannot import {where}{raised_at(exc)} ({type(exc).__name__}: "
                              f"{_first_line(exc)}); "
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
    if reference in BUILT_IN:
        check_builtin_args(reference, model_args)
    try:
        net = factory(n_features, n_outputs, **model_args)
    except TypeError as exc:
        raise ConfigError(f"--model {reference}: calling it as fn(n_features, n_outputs, **model_args) failed "
                          f"({exc}); check --model-args") from None
    except (Exception, SystemExit) as exc:  # the user's code: whatever it raises is one line, where it was raised
        raise ConfigError(f"--model {reference}: building the network failed{raised_at(exc)} "
                          f"({type(exc).__name__}: {_first_line(exc)}); check --model-args and the factory") from None
    if not isinstance(net, nn.Module):
        raise ConfigError(f"--model {reference}: returned {type(net).__name__}, not a torch.nn.Module")
    if not any(p.requires_grad for p in net.parameters()):
        raise ConfigError(f"--model {reference}: the network has no trainable parameters; nothing could learn")
    check_output_shape(net, n_features, n_outputs, reference)
    return net


# The built-in networks' numeric settings, checked by the flags' own rules before the factory sees them.
POSITIVE_INTS = ("width", "depth", "k", "n_frequencies", "embedding_dim")
POSITIVE_FLOATS = ("frequency_scale", "scale_lr_factor", "clip")


def check_builtin_args(reference: str, args: dict[str, Any]) -> None:
    def refuse(name: str, value: Any, rule: str) -> None:
        raise ConfigError(f"--model {reference}: {name} must be {rule}, not {value!r} (in --model-args or its flag)")

    def number(value: Any) -> bool:
        return isinstance(value, (int, float)) and not isinstance(value, bool)

    for name, value in args.items():
        if name in POSITIVE_INTS and not (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
            refuse(name, value, "a whole number >= 1")
        if name in POSITIVE_FLOATS and not (number(value) and 0 < value < float("inf")):
            refuse(name, value, "a number > 0")
        if name == "dropout" and not (number(value) and 0 <= value < 1):
            refuse(name, value, "in [0, 1)")
        if name == "hidden_sizes" and not (isinstance(value, (list, tuple)) and all(
                isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in value)):
            refuse(name, value, "a list of whole numbers >= 1, e.g. [256, 128]")
        if name == "norm" and value not in NORMS:
            refuse(name, value, f"one of {', '.join(NORMS)}")


def raised_at(exc: BaseException) -> str:
    """` at my_models.py:12`: the innermost frame of the user's own code (not torch's, not this package's)."""
    import traceback

    own = Path(__file__).resolve().parent
    frames = [f for f in traceback.extract_tb(exc.__traceback__)
              if not Path(f.filename).resolve().is_relative_to(own) and "site-packages" not in f.filename
              and not f.filename.startswith("<")]
    return f" at {frames[-1].filename}:{frames[-1].lineno}" if frames else ""


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0][:200] if text else "no message")


def check_output_shape(net: nn.Module, n_features: int, n_outputs: int, reference: str) -> None:
    """One forward pass on two rows, in eval mode and without touching the random stream (so checking
    leaves the run's numbers unchanged)."""
    was_training = net.training
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        net.eval()
        try:
                outputs = [net(torch.zeros(rows, n_features)) for rows in (2, 3)]  # two batch sizes: (batch, out)
        except Exception as exc:
            raise ConfigError(f"--model {reference}: a forward pass on (2, {n_features}) inputs failed{raised_at(exc)} "
                              f"({type(exc).__name__}: {_first_line(exc)})") from None
    net.train(was_training)
    for rows, out in zip((2, 3), outputs):
        if not isinstance(out, torch.Tensor) or tuple(out.shape) != (rows, n_outputs):
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ConfigError(f"--model {reference}: expected outputs of shape (batch, {n_outputs}), got {shape} "
                              f"for a batch of {rows}")


def _import_file(path: Path) -> Any:
    name = "pipeline_user_model_" + hashlib.sha256(str(path).encode()).hexdigest()[:12]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ConfigError(f"--model {path}: not a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # so classes defined in the file can be pickled (e.g. by MLflow)
    try:
        spec.loader.exec_module(module)
    except (Exception, SystemExit) as exc:  # sys.exit() at import is refused too: it would end the run silently
        del sys.modules[name]
        raise ConfigError(f"--model {path}: importing it failed{raised_at(exc)} ({type(exc).__name__}: "
                          f"{_first_line(exc)})") from None
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
