"""Phase 2 CLI: train a network (the MLP, or your own with --model) on a prepared dataset, with exact
checkpoint/resume and tracking.

    python solutions/train_pipeline.py --data-dir processed_data --epochs 50 --batch-size 32 \
        --learning-rate 0.001 --save-dir checkpoints
    torchrun --standalone --nproc_per_node=2 solutions/train_pipeline.py ...   # DistributedDataParallel

Re-running the same command after a crash or Ctrl-C continues where it stopped. Exit codes: 0 completed or
early-stopped, 1 failed (e.g. non-finite loss), 2 bad input, 130/143 after SIGINT/SIGTERM (state saved).
"""
from __future__ import annotations

import os
import signal
import sys


def _interrupted_while_starting(signum: int, frame: object) -> None:
    """Ctrl-C while the heavy imports below load: nothing is written yet, so leave at once (raising inside
    half-imported libraries could end in their tracebacks). Training installs its own handler later."""
    os.write(2, b"interrupted\n")
    os._exit(130)


if __name__ == "__main__":
    signal.signal(signal.SIGINT, _interrupted_while_starting)

import argparse  # noqa: E402
import dataclasses  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from pipeline import cli, config, distributed, metrics, model, runtime, train  # noqa: E402
from pipeline.errors import ConfigError  # noqa: E402


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


HELP = {
    "resume": "auto (continue if a checkpoint exists), never (start over), or a checkpoint PATH",
    "model": f"the network: built in ({', '.join(model.BUILT_IN)}), package.module:function or "
             "path/to/file.py:function, called as fn(n_features, n_outputs, **model_args)",
    "model_args": "JSON object of keyword arguments for --model, e.g. '{\"width\": 64}'",
    "hidden_sizes": "comma-separated hidden layer widths of --model mlp, e.g. 256,128",
    "amp": "mixed precision: auto (bf16/fp16 on GPU, off on CPU), off, bf16, fp16",
    "tracking_uri": "MLflow tracking URI (default $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db)",
    "register_model": "also register the best model in MLflow's model registry under this NAME",
    "early_stopping_metric": "one of train_loss, " + ", ".join(
        sorted({f"val_{m}" for names in metrics.TASK_METRICS.values() for m in names})),
}


NO_HELP = {"mlflow": "do not log to MLflow", "tensorboard": "do not write TensorBoard events",
           "baselines": "do not fit the boosted-trees and linear baselines at the end",
           "clip_predictions": "let a regression predict outside the training target's range"}


def build_parser() -> argparse.ArgumentParser:
    """One flag per TrainConfig field; defaults stay unset here so YAML (--config) can fill them."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], argument_default=argparse.SUPPRESS)
    parser.add_argument("--config", type=Path, help="YAML file of settings (keys as flags, with underscores); "
                        "flags given on the command line win")
    for field in dataclasses.fields(config.TrainConfig):
        name = field.name
        default = field.default_factory() if field.default_factory is not dataclasses.MISSING else field.default
        choices = config.CHOICES.get(name)
        help_text = HELP.get(name, "") or (f"one of {', '.join(choices)}" if choices else "")
        if default is not dataclasses.MISSING:
            help_text += f" (default: {default})"
        if default is True:  # switches that are on: --no-mlflow, --no-tensorboard, --no-baselines
            parser.add_argument(f"--no-{name}", dest=name, action="store_false", help=NO_HELP[name])
        elif isinstance(default, bool):
            parser.add_argument(_flag(name), dest=name, action="store_true", help=help_text)
        elif choices and name != "device":  # --device also takes cuda:N
            parser.add_argument(_flag(name), dest=name, choices=choices, help=help_text)
        else:
            kind = {int: int, float: float}.get(type(default), str)
            parser.add_argument(_flag(name), dest=name, type=kind, help=help_text)
    return parser


def load_yaml(path: Path) -> dict:
    import yaml

    try:
        values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: expected a mapping of settings, e.g. 'epochs: 20'")
    return {str(k).replace("-", "_"): v for k, v in values.items()}


def main(argv: list[str] | None = None) -> int:
    args = vars(build_parser().parse_args(argv))

    def body() -> int:
        values = load_yaml(args.pop("config")) if "config" in args else {}
        values.update(args)
        result = train.run(config.make_config(values))
        if distributed.from_environment().main:  # under torchrun, rank 0 speaks for the run
            runtime.tolerant(print)(f"metrics: {result.save_dir / 'metrics.json'}")
        return result.exit_code

    return cli.guarded(body)


if __name__ == "__main__":
    sys.exit(main())
