"""Train a network (the MLP, or your own with --model) on a prepared dataset, with exact checkpoint/resume and tracking.

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

# Only what the parser needs is imported here (no torch), so --help answers at once; training imports the rest.
from pipeline import cli, config, metrics  # noqa: E402


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


HELP = {
    "data_dir": "folder written by prepare_dataset.py (schema.json and the split arrays); required, here or in --config",
    "save_dir": "run folder for checkpoints, metrics.json, logs/ and model.safetensors; required, here or in --config",
    "epochs": "total epochs (raise it and re-run to continue a finished run)",
    "batch_size": "training rows per optimizer step",
    "learning_rate": "the optimizer's learning rate (the peak, with a schedule)",
    "device": "auto (cuda when available), cpu, cuda or cuda:N",
    "seed": "seeds weights, shuffling and dropout: the same seed gives the same run",
    "resume": "auto (continue if a checkpoint exists), never (start over), or a checkpoint PATH",
    "model": f"the network: built in ({', '.join(config.BUILT_IN_MODELS)}), package.module:function or "
             "path/to/file.py:function, called as fn(n_features, n_outputs, **model_args)",
    "model_args": "JSON object of keyword arguments for --model, e.g. '{\"width\": 64}'",
    "hidden_sizes": "comma-separated hidden layer widths of --model mlp, e.g. 256,128",
    "dropout": "dropout probability after each hidden layer of --model mlp",
    "norm": "normalisation after each hidden layer of --model mlp",
    "optimizer": "the optimizer",
    "weight_decay": "weight decay (decoupled for adamw)",
    "momentum": "momentum of --optimizer sgd",
    "scheduler": "learning-rate schedule, stepped per batch",
    "warmup_epochs": "linear warm-up of the learning rate over this many epochs (fractions allowed)",
    "step_size": "epochs between decays of --scheduler step",
    "gamma": "decay factor of --scheduler step and plateau",
    "early_stopping_patience": "stop after this many epochs without improvement of --early-stopping-metric; 0: never",
    "early_stopping_metric": "the monitored metric, which also picks the best epoch: train_loss or one of "
                             + ", ".join(sorted({f"val_{m}" for names in metrics.TASK_METRICS.values() for m in names}))
                             + " (the task's own)",
    "amp": "mixed precision: auto (bf16/fp16 on GPU, off on CPU), off, bf16, fp16",
    "grad_clip": "clip the gradients' global norm to this value; 0: off",
    "grad_accum_steps": "batches whose gradients add up before one optimizer step",
    "loss": "auto (cross entropy for classification, mse for regression), or one by name",
    "class_weights": "auto (balanced when a class is rare), none or balanced",
    "clip_predictions": "",
    "checkpoint_every": "epochs between periodic checkpoints ckpt-epochNNNN.pt (last.pt is written every epoch)",
    "keep_checkpoints": "periodic checkpoints kept, newest first; 0 keeps all",
    "tracking_uri": "MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db)",
    "experiment_name": "MLflow experiment",
    "run_name": "MLflow run name (default: the run folder's name)",
    "register_model": "also register the best model in MLflow's model registry under this NAME",
    "num_workers": "DataLoader worker processes (with --loader dataloader)",
    "loader": "memory (indexed tensors, fastest) or dataloader (memory-mapped, for data bigger than RAM)",
    "compile": "torch.compile the model (pays on long runs and GPUs)",
    "deterministic": "torch.use_deterministic_algorithms for the run",
    "log_every": "batches between step records in logs/metrics.jsonl",
    "system_interval": "seconds between resource samples in logs/system.jsonl; 0: off",
    "progress": "auto (a progress bar on a terminal), bar or off",
}


NO_HELP = {"mlflow": "do not log to MLflow", "tensorboard": "do not write TensorBoard events",
           "baselines": "do not fit the boosted-trees and linear baselines at the end",
           "clip_predictions": "let a regression predict outside the training target's range"}


def build_parser() -> argparse.ArgumentParser:
    """One flag per TrainConfig field; defaults stay unset here so YAML (--config) can fill them."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], argument_default=argparse.SUPPRESS,
                                     epilog=__doc__.split("\n\n", 2)[2].strip(),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, help="YAML file of settings (keys as flags, with underscores); "
                        "flags given on the command line win")
    for field in dataclasses.fields(config.TrainConfig):
        name = field.name
        default = field.default_factory() if field.default_factory is not dataclasses.MISSING else field.default
        choices = config.CHOICES.get(name)
        help_text = HELP.get(name, "")  # switches that are on (mlflow, ...) take NO_HELP below
        if default not in (dataclasses.MISSING, None) and not isinstance(default, bool):
            shown = ",".join(map(str, default)) if isinstance(default, tuple) else default
            help_text += f" (default: {shown})"
        if default is True:  # switches that are on: --no-mlflow, --no-tensorboard, --no-baselines, ...
            parser.add_argument(f"--no-{name.replace('_', '-')}", dest=name, action="store_false", help=NO_HELP[name])
            if "_" in name:  # the spelling of earlier versions, still accepted
                parser.add_argument(f"--no-{name}", dest=name, action="store_false", help=argparse.SUPPRESS)
        elif isinstance(default, bool):
            parser.add_argument(_flag(name), dest=name, action="store_true", help=help_text)
        elif choices and name != "device":  # --device also takes cuda:N
            parser.add_argument(_flag(name), dest=name, choices=choices, help=help_text)
        else:
            kind = {int: int, float: float}.get(type(default), str)
            parser.add_argument(_flag(name), dest=name, type=kind, help=help_text)
    return parser


def load_yaml(path: Path) -> dict:
    from pipeline import fileio

    values = fileio.read_yaml_mapping(path, what="config file", example="epochs: 20")
    return {str(k).replace("-", "_"): v for k, v in values.items()}


def main(argv: list[str] | None = None) -> int:
    args = vars(build_parser().parse_args(argv))

    def body() -> int:
        values = load_yaml(args.pop("config")) if "config" in args else {}
        values.update(args)
        from pipeline import distributed, runtime, train

        result = train.run(config.make_config(values))
        if distributed.from_environment().main:  # under torchrun, rank 0 speaks for the run
            runtime.tolerant(print)(f"metrics: {result.save_dir / 'metrics.json'}")
        return result.exit_code

    return cli.guarded(body)


if __name__ == "__main__":
    sys.exit(main())
