"""The training engine: one plain loop with exact checkpoint/resume and tracking. Read it top to bottom.

    python solutions/train_pipeline.py --data-dir processed_data --epochs 50 --batch-size 32 \
        --learning-rate 0.001 --save-dir checkpoints

    from pipeline import train
    result = train.run(train.make_config({"data_dir": "processed_data", "save_dir": "checkpoints"}))
    result = train.run(config, model_fn=build, sinks=[my_sink])     # your network, your extra sink

`run` is the table of contents: decide where to resume, build the parts, restore them, open tracking, fit,
finish. `fit` is the epoch loop and `train_one_epoch` the batch loop. Each concern lives in its own module:
`config` (the settings), `batches` (the epoch order), `optim` (optimizer, schedule, loss), `evaluate`,
`checkpoint` (training state, save/restore, the resume decision), `record` (metrics.json), `runtime`
(device, save-dir lock, signals), `tracking` (the sinks) and `model` (the networks).

Everything needed to continue is in the checkpoint, saved whole, so a run killed at any moment and started
again ends exactly where an uninterrupted run would (on CPU: every tensor identical).
"""
from __future__ import annotations

import contextlib
import copy
import functools
import json
import math
import os
import time
import uuid
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from pipeline import (baselines, batches, checkpoint, config as config_lib, distributed, evaluate as scoring,
                      fileio, metrics, model as model_lib, optim, runtime, status as status_lib, tracking,
                      uncertainty)
from pipeline.checkpoint import TrainingState
from pipeline.data import store as data  # the processed splits only: no pandas on the training path
from pipeline.errors import CheckpointError, ConfigError, PipelineError
from pipeline.record import RunRecord, best_values, read_record
from pipeline.rundir import RunDir
from pipeline.system import SystemSampler

# The Python API, as it has always been reachable from here.
TrainConfig = config_lib.TrainConfig
make_config = config_lib.make_config
config_differences = config_lib.config_differences
epoch_permutation = batches.epoch_permutation
lr_factor = optim.lr_factor
Log = Callable[[str], None]


@dataclass
class RunResult:
    status: str
    exit_code: int
    save_dir: Path
    metrics: dict[str, Any]


# -------------------------------------------------------------------------------------------- the run
def run(config: TrainConfig, *, model_fn: model_lib.ModelFn | None = None, sinks: Sequence[tracking.Sink] = (),
        log: Log = print) -> RunResult:
    """Train (or continue training) as `config` says; return the final status and its exit code.

    `model_fn(n_features, n_outputs, **config.model_args) -> nn.Module` builds your own network instead of
    `config.model`; `sinks` receive every record beside the built-in ones (see `pipeline.tracking`)."""
    # Everything that can be refused is checked before the first write.
    world = distributed.from_environment()  # under torchrun: this process's rank among several
    log = runtime.tolerant(log) if world.main else _quiet  # rank 0 speaks for the run
    dataset = data.load_processed(config.data_dir, mmap=config.loader == "dataloader")
    device = distributed.device_for(world, runtime.resolve_device(config.device))
    amp = runtime.resolve_amp(config.amp, device)
    factory, model_ref, model_sha = model_lib.resolve_factory(config.model, model_fn)
    settings = resolved_settings(config, device=device, amp=amp, model_ref=model_ref, model_sha=model_sha,
                                 world_size=world.size)
    has_val = dataset.arrays["val"][0].shape[0] > 0
    monitor_metric = metrics.monitored_metric(config.early_stopping_metric, dataset.task, has_validation=has_val)
    save_dir, made = make_save_dir(Path(config.save_dir)) if world.main else (Path(config.save_dir), [])

    # rank 0 owns the folder; a run refused before writing anything leaves no .lock (nor the folders it made)
    lock = runtime.SaveDirLock(save_dir, made=made) if world.main else contextlib.nullcontext()
    # A signal from here on sets a flag: the loop saves at the next step boundary and stops (130/143).
    with distributed.joined(world, device), lock, runtime.determinism(config.deterministic, device), \
            runtime.Interrupt(shared=world.launched) as interrupt:
        # 1. build the parts (seeded first: the same seed gives the same initial weights); whatever cannot be
        #    built is refused here, before the resume decision may clear an old run or anything is written
        torch.manual_seed(config.seed)
        X_train, y_train = dataset.arrays["train"]
        target_scale = standardisation(dataset.task, y_train)
        target_range = prediction_range(dataset.task, y_train) if config.clip_predictions else None
        model_args = mlp_args(config) if model_ref == "mlp" else dict(config.model_args)
        spec = {"factory": model_ref, "factory_sha256": model_sha, "model_args": model_args,
                "factory_files": model_lib.factory_files(config.model, model_fn, factory),
                "n_features": dataset.n_features, "n_outputs": dataset.n_outputs, "task": dataset.task,
                "target_mean": target_scale[0], "target_std": target_scale[1], "target_range": target_range}
        net = model_lib.make(factory, dataset.n_features, dataset.n_outputs, model_args, reference=model_ref)
        arrays_sha = checkpoint.arrays_sha256(dataset.arrays)
        train_batches = batches.Batches(X_train, y_train, device=device, loader=config.loader,
                                        num_workers=config.num_workers, batch_size=config.batch_size,
                                        y_dtype=torch.long if dataset.task == "classification" else torch.float32,
                                        world=world)
        parts = build_parts(net.to(device), config, task=dataset.task, y_train=y_train,
                            n_outputs=dataset.n_outputs, device=device, amp=amp, world=world,
                            optimizer_steps_per_epoch=math.ceil(len(train_batches) / config.grad_accum_steps))
        if config.class_weights == "auto" and getattr(parts.loss_fn, "weight", None) is not None and world.main:
            log("class weights: balanced (--class-weights auto: a class is rare in the training split; "
                "--class-weights none turns this off)")
        checkpoints = checkpoint.Checkpointer(save_dir, parts, device=device, every=config.checkpoint_every,
                                              keep=config.keep_checkpoints, enabled=world.main,
                                              identity={"config": settings,
                                                        "data_fingerprint": dataset.schema["data_sha256"],
                                                        "arrays_sha256": arrays_sha,
                                                        "model_spec": spec})

        # 2. where to resume: decided by rank 0, before anything is written (and before an earlier run that left
        #    no checkpoint is cleared: its key, so that its MLflow run becomes this one's, not an orphan)
        earlier_key = unfinished_run_key(save_dir, settings) if world.main else None
        resume = decide_resume(save_dir, config.resume, settings=settings,
                               data_fingerprint=dataset.schema["data_sha256"], arrays_fingerprint=arrays_sha,
                               world=world, log=log)
        # a finished run asked for no more epochs: nothing to do, unless its process was stopped while
        # finishing (its checkpoint says finished, metrics.json does not yet): then only the finish is redone
        finishing = resume is not None and resume.nothing_to_do(config.epochs)
        if finishing and record_is_final(save_dir):
            return end_already_finished(save_dir, resume, log)

        # 3. restore, or start fresh
        if resume is None:
            state = TrainingState(started_at=runtime.now(), run_name=config.run_name or save_dir.resolve().name,
                                  run_key=earlier_key or uuid.uuid4().hex)
        else:
            state = continue_state(checkpoints.restore(resume.payload), resume, log, world=world)

        # 4. open tracking: the sinks, the resource sampler, the run record (rank 0 alone writes)
        tracker, sampler, record = open_tracking(
            config, save_dir=save_dir, state=state, resumed=resume is not None, settings=settings, dataset=dataset,
            monitor_metric=monitor_metric, steps_per_epoch=len(train_batches), world=world, sinks=sinks)

        # 5. fit (a run stopped while finishing has no epochs left: only its finish is redone)
        if finishing:
            status = resume.payload["state"]["status"]
            message = "finished again: the previous process was stopped while finishing"
        else:
            try:
                X_val, y_val = dataset.arrays["val"]
                validate = functools.partial(scoring.evaluate, X=X_val, y=y_val, task=dataset.task,
                                             loss_fn=parts.loss_fn, device=device, amp=amp, target_scale=target_scale,
                                             target_range=target_range)
                status, message = fit(
                    parts, train_batches, state, epochs=config.epochs, seed=config.seed, validate=validate,
                    task=dataset.task, target_scale=target_scale, monitor_metric=monitor_metric,
                    patience=config.early_stopping_patience, checkpoints=checkpoints,
                    checkpoint_every=config.checkpoint_every, tracker=tracker, record=record, interrupt=interrupt,
                    log_every=config.log_every, progress=world.main and runtime.progress_enabled(config.progress),
                    world=world, log=log)
            except BaseException as exc:
                crashed = status_lib.INTERRUPTED if isinstance(exc, KeyboardInterrupt) else status_lib.FAILED
                end_tracking(crashed, f"{type(exc).__name__}: {exc}", state=state, record=record, tracker=tracker,
                             sampler=sampler)
                raise

        # 6. finish: score the best weights on the test split, export them, close tracking
        state.status = status
        if status in status_lib.FINISHED and world.main:
            try:
                record.test, outputs = finish_training(parts, checkpoints, dataset, device=device,
                                                       target_scale=target_scale, spec=spec, save_dir=save_dir,
                                                       settings=settings, register_as=config.register_model,
                                                       tracker=tracker, state=state)
                best = best_values(state.history, state.best_epoch)
                if best:  # best_epoch, best_val_loss, ...: rank runs by what the engine kept
                    tracker.log_dict(best, state.global_step, "best")
                if record.test is not None:
                    judge_test_scores(record, dataset, outputs, seed=config.seed, with_baselines=config.baselines,
                                      tracker=tracker, step=state.global_step, log=log)
            except BaseException as exc:  # a full disk at the export: say so in metrics.json, not "running";
                ended = status_lib.INTERRUPTED if isinstance(exc, KeyboardInterrupt) else status_lib.FAILED
                end_tracking(ended, f"while finishing: {type(exc).__name__}: {exc}", state=state, record=record,
                             tracker=tracker, sampler=sampler)  # the checkpoint is left as it was: a rerun of
                raise                                            # the same command redoes the finish
        tracker.log_event({"type": "artifact", "path": str(RunDir(save_dir).metrics)})
        end_tracking(status, message, state=state, record=record, tracker=tracker, sampler=sampler)
        if state.mlflow_run_id != mlflow_run_id(tracker) and status != status_lib.FAILED:
            save(checkpoints, state, tracker)  # the server answered after the last save: a resume re-attaches
        log(f"{status.replace('_', '-')}: {message}" if message else status.replace("_", "-"))
        return RunResult(status, status_lib.trainer_exit_code(status, interrupt.signum), save_dir, record.build())


# ------------------------------------------------------------------------------------------- the loop
def fit(parts: optim.StepParts, train_batches: batches.Batches, state: TrainingState, *, epochs: int, seed: int,
        validate: Callable[[nn.Module], dict[str, Any]], task: str, target_scale: tuple[float, float],
        monitor_metric: str, patience: int,
        checkpoints: checkpoint.Checkpointer, checkpoint_every: int, tracker: tracking.Tracker, record: RunRecord,
        interrupt: runtime.Interrupt, log_every: int, progress: bool, world: distributed.World,
        log: Log) -> tuple[str, str]:
    """The epoch loop. Returns (status, message): completed, early_stopped, interrupted or failed.

    `validate(net)` scores the validation split ({} when there is none). Under torchrun every rank runs this
    loop in step: rank 0 validates and the others learn its scores, so all decide alike."""
    for epoch in range(state.epoch, epochs):
        totals = train_one_epoch(parts, train_batches, state, permutation=batches.epoch_permutation(
                                     seed, epoch, train_batches.n), epoch=epoch, epochs=epochs,
                                 task=task, target_scale=target_scale, log_every=log_every, tracker=tracker,
                                 interrupt=interrupt, progress=progress, world=world)
        if totals.non_finite is not None:
            return status_lib.FAILED, non_finite_message(totals.non_finite, epoch, state.global_step)

        stop = None
        if totals.finished:
            # --- validate and record the epoch
            loss_sum, samples = distributed.total(world, totals.loss_sum, totals.samples)  # every rank's shard
            entry: dict[str, Any] = {"epoch": epoch + 1, "step": state.global_step,
                                     "train_loss": loss_sum / max(1, samples)}
            if not math.isfinite(entry["train_loss"]):
                return status_lib.FAILED, non_finite_message(entry["train_loss"], epoch, state.global_step)
            val = distributed.from_main(world, validate(parts.net) if world.main else None)
            if val:
                if not math.isfinite(val["loss"]):
                    return status_lib.FAILED, non_finite_message(val["loss"], epoch, state.global_step)
                entry.update({f"val_{k}": v for k, v in val.items()})
            entry.update(timings(totals, lr=parts.optimizer.param_groups[0]["lr"], samples=samples))
            if isinstance(parts.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
                current = entry[monitor_metric]
                parts.scheduler.step(-current if metrics.higher_is_better(monitor_metric) else current)  # mode=min
            improved = end_epoch(state, entry, monitor_metric)
            tracker.log_dict({k: v for k, v in entry.items() if k != "step"}, state.global_step, "epoch")
            log(epoch_line(entry, epochs, improved))
            requested = distributed.from_main(world, tracker.stop_requested)  # a sink's StopTraining

            # --- best checkpoint, early stopping
            if improved:
                save(checkpoints, state, tracker, "best")
            if (patience > 0 and state.bad_epochs >= patience) or requested:
                stop = status_lib.EARLY_STOPPED

        # --- interrupted? (the flag is read once: a later signal is handled at the next step boundary; under
        #     torchrun the ranks agree first, so a signal one rank got since the last step stops them all here)
        if world.launched:
            interrupt.signum, _ = distributed.agree(world, interrupt.received, False)
        if stop is None and interrupt.signum is not None:
            stop = status_lib.INTERRUPTED

        # --- checkpoint (a mid-epoch one keeps every rank's partial sums, for an exact resume)
        if not totals.finished and world.launched:
            state.shard_partials = distributed.gather(world, [totals.loss_sum, totals.samples])
        if stop is not None:
            state.status = stop
        if stop is not None or state.epoch % checkpoint_every == 0 or state.epoch == epochs:
            save(checkpoints, state, tracker)
        record.write()
        if stop == status_lib.EARLY_STOPPED:
            return stop, tracker.stop_requested or (
                f"no improvement in {monitor_metric} for {state.bad_epochs} epochs; best was "
                f"epoch {state.best_epoch} ({state.best_value:.6g})")
        if stop == status_lib.INTERRUPTED:
            where = f"after epoch {epoch + 1}" if totals.finished else f"at epoch {epoch + 1}, step {state.global_step}"
            return stop, (f"{interrupt.name} {where}; state saved to last.pt: run the same command again to "
                          "continue")
    return status_lib.COMPLETED, f"{epochs} epochs; best {monitor_metric} {state.best_value:.6g} at epoch {state.best_epoch}"


@dataclass
class EpochTotals:
    """What one pass over the training batches returns."""
    loss_sum: float            # sum of per-sample losses (the epoch's mean is loss_sum / samples)
    samples: int
    seconds: float
    data_seconds: float        # time spent waiting for batches
    finished: bool             # False: stopped at a step boundary by an interrupt (partial sums are in state)
    non_finite: float | None = None  # the NaN/inf loss that stopped the epoch, if one did


def train_one_epoch(parts: optim.StepParts, train_batches: batches.Batches, state: TrainingState, *,
                    permutation: torch.Tensor, epoch: int, epochs: int, task: str,
                    target_scale: tuple[float, float],
                    log_every: int, tracker: tracking.Tracker, interrupt: runtime.Interrupt,
                    progress: bool, world: distributed.World = distributed.World()) -> EpochTotals:
    """One pass over the training batches in `permutation` order, from `state.step_in_epoch` on (a mid-epoch
    resume). Advances `state`'s step counters; logs a step record every `log_every` batches. Under torchrun the
    ranks agree after every step on a signal or a non-finite loss any of them saw, so all stop together."""
    parts.model.train()
    regression = task == "regression"
    mean, std = target_scale
    per_step_schedule = optim.per_step(parts.scheduler)
    # entering even a disabled autocast context costs microseconds per step; skip it when AMP is off
    autocast = ((lambda: torch.autocast(train_batches.device.type, dtype=parts.amp)) if parts.amp is not None
                else contextlib.nullcontext)
    # partial sums restored from the checkpoint when resuming mid-epoch; float64 so replay is exact
    loss_sum = torch.tensor(state.epoch_loss_sum, dtype=torch.float64, device=train_batches.device)
    samples = state.epoch_samples
    started = time.perf_counter()
    data_seconds = 0.0
    bar = runtime.progress_bar(progress, total=len(train_batches), initial=state.step_in_epoch, epoch=epoch,
                               epochs=epochs)

    def totals(finished: bool, non_finite: float | None = None) -> EpochTotals:
        if bar is not None:
            bar.close()
        return EpochTotals(float(loss_sum), samples, time.perf_counter() - started, data_seconds, finished,
                           non_finite)

    fetch_start = time.perf_counter()
    for b, xb, yb in train_batches.iterate(permutation, state.step_in_epoch):  # xb: (batch, n_features)
        data_seconds += time.perf_counter() - fetch_start
        if regression:
            yb = (yb - mean) / std                          # train on the standardised target
        with autocast():
            out = parts.model(xb)                           # (batch, n_outputs)
            loss = parts.loss_fn(out[:, 0] if regression else out, yb)
        scaled = loss / parts.accum_steps if parts.accum_steps > 1 else loss
        (parts.scaler.scale(scaled) if parts.scaler is not None else scaled).backward()
        loss_sum.add_(loss.detach(), alpha=xb.shape[0])  # float64 running sum: one op, no host sync
        samples += xb.shape[0]
        state.global_step += 1
        state.step_in_epoch = b + 1
        boundary = (b + 1) % parts.accum_steps == 0 or b + 1 == len(train_batches)
        if boundary:
            optimizer_step(parts)
            if per_step_schedule:
                parts.scheduler.step()
        value = None
        if state.global_step % log_every == 0:
            value = loss.item()  # one host sync per log interval, not per step
        if world.launched:
            interrupt.signum, any_non_finite = distributed.agree(  # what this rank received, not what was agreed
                world, interrupt.received, value is not None and not math.isfinite(value))
            value = float("nan") if any_non_finite and (value is None or math.isfinite(value)) else value
        if value is not None:
            if not math.isfinite(value):
                return totals(False, non_finite=value)
            tracker.log_dict({"loss": value, "lr": parts.optimizer.param_groups[0]["lr"], "epoch": epoch + 1},
                             state.global_step, "step")
        if bar is not None:
            bar.update(1)
        if interrupt.signum is not None and boundary and b + 1 < len(train_batches):
            state.epoch_loss_sum, state.epoch_samples = float(loss_sum), samples
            return totals(False)
        fetch_start = time.perf_counter()
    return totals(True)


def optimizer_step(parts: optim.StepParts) -> None:
    """Unscale (fp16), clip, step, zero the gradients."""
    if parts.grad_clip > 0:
        if parts.scaler is not None:
            parts.scaler.unscale_(parts.optimizer)
        nn.utils.clip_grad_norm_(parts.net.parameters(), parts.grad_clip)
    if parts.scaler is not None:
        parts.scaler.step(parts.optimizer)
        parts.scaler.update()
    else:
        parts.optimizer.step()
    parts.optimizer.zero_grad(set_to_none=True)


def end_epoch(state: TrainingState, entry: dict[str, Any], monitor_metric: str) -> bool:
    """Count the finished epoch into `state` (history, best, epochs without improvement); True if best."""
    improved = metrics.is_better(monitor_metric, entry[monitor_metric], state.best_value)
    state.epoch, state.step_in_epoch = entry["epoch"], 0
    state.epoch_loss_sum, state.epoch_samples, state.shard_partials = 0.0, 0, []
    if improved:
        state.best_value, state.best_epoch, state.bad_epochs = entry[monitor_metric], entry["epoch"], 0
    else:
        state.bad_epochs += 1
    state.history.append(entry)
    return improved


# ------------------------------------------------------------------------------------- building blocks
def resolved_settings(config: TrainConfig, *, device: torch.device, amp: torch.dtype | None, model_ref: str,
                      model_sha: str | None, world_size: int = 1) -> dict[str, Any]:
    """The settings as recorded in checkpoints and metrics.json: the config, the model by its canonical
    reference and content hash, what `auto` resolved to, and the number of processes (a resume must match it:
    each process's shard of the data depends on it)."""
    return {**config.to_dict(), "model": model_ref, "model_sha256": model_sha,
            "resolved_device": "cuda" if device.type == "cuda" and world_size > 1 else str(device),
            "resolved_amp": str(amp).replace("torch.", "") if amp else "off", "world_size": world_size}


def mlp_args(config: TrainConfig) -> dict[str, Any]:
    return {"hidden_sizes": list(config.hidden_sizes), "dropout": config.dropout, "norm": config.norm,
            **config.model_args}


def standardisation(task: str, y_train: np.ndarray) -> tuple[float, float]:
    """(mean, std) of a regression target (trained on standardised, reported in its own units); (0, 1) else."""
    if task != "regression":
        return 0.0, 1.0
    return float(np.mean(y_train)), float(np.std(y_train)) or 1.0


def prediction_range(task: str, y_train: np.ndarray) -> list[float] | None:
    """[lowest, highest] training target of a regression: predictions are clipped to it (--no-clip-predictions
    keeps them raw). A network extrapolates wildly on inputs unlike the training rows; no answer outside the
    range it was shown is better than one far outside it. None for classification or an empty split."""
    if task != "regression" or len(y_train) == 0:
        return None
    return [float(np.min(y_train)), float(np.max(y_train))]


def weigh_classes(setting: str, y_train: np.ndarray, n_classes: int) -> bool:
    """Whether the loss weights the classes to balance them: always (`balanced`), never (`none`), or (`auto`)
    when a class is rare by prepare's rule (under 10% of the rows and half an even share). With a rare class an
    unweighted loss is won by always answering the majority; measured on an imbalanced cut of the Adult table
    (6% positives), weighting took the MLP's test balanced accuracy from 0.67 to 0.81 (boosted trees 0.71)."""
    if setting == "auto":
        return len(data.rare_classes(np.asarray(y_train, dtype=np.int64), n_classes)) > 0
    return setting == "balanced"


def build_parts(net: nn.Module, config: TrainConfig, *, task: str, y_train: np.ndarray, n_outputs: int,
                device: torch.device, amp: torch.dtype | None, optimizer_steps_per_epoch: int,
                world: distributed.World = distributed.World()) -> optim.StepParts:
    """The optimizer, schedule, loss and scaler around `net` (already on `device`); under torchrun the loop
    calls it through DistributedDataParallel, which averages the gradients across processes."""
    class_weight = None
    if task == "classification" and weigh_classes(config.class_weights, y_train, n_outputs):
        class_weight = optim.balanced_class_weights(y_train, n_outputs)
    optimizer = optim.build_optimizer(net.parameters(), config.optimizer, lr=config.learning_rate,
                                      weight_decay=config.weight_decay, momentum=config.momentum)
    scheduler = optim.build_scheduler(optimizer, config.scheduler, warmup_epochs=config.warmup_epochs,
                                      epochs=config.epochs, steps_per_epoch=optimizer_steps_per_epoch,
                                      step_size=config.step_size, gamma=config.gamma,
                                      plateau_patience=config.early_stopping_patience // 3)
    model = distributed.wrap(net, world, device)
    return optim.StepParts(net=net, model=torch.compile(model) if config.compile else model, optimizer=optimizer,
                           scheduler=scheduler, scaler=torch.amp.GradScaler("cuda") if amp == torch.float16 else None,
                           loss_fn=optim.build_loss(task, config.loss, class_weight).to(device), amp=amp,
                           accum_steps=config.grad_accum_steps, grad_clip=config.grad_clip)


def make_save_dir(save_dir: Path) -> tuple[Path, list[Path]]:
    """The folder, made if missing; and the folders this made (deepest first), for a refusal to take back."""
    if save_dir.exists() and not save_dir.is_dir():
        raise ConfigError(f"{save_dir}: exists and is not a folder; choose another --save-dir")
    made = [folder for folder in (save_dir, *save_dir.parents) if not folder.exists()]
    save_dir.mkdir(parents=True, exist_ok=True)
    return save_dir, made


def decide_resume(save_dir: Path, resume: str, *, settings: dict[str, Any], data_fingerprint: str,
                  arrays_fingerprint: str, world: distributed.World, log: Log) -> checkpoint.Resume | None:
    """Rank 0 decides where to resume (it alone may clear old outputs); under torchrun the others learn the
    checkpoint it chose, or its refusal, and load the same file."""
    found, refusal = None, None
    if world.main:
        try:
            found = checkpoint.find_resume(save_dir, resume, config=settings, data_fingerprint=data_fingerprint,
                                           arrays_fingerprint=arrays_fingerprint)
            checkpoint.make_room(save_dir, resume, found, log=log)
        except PipelineError as exc:
            if not world.launched:
                raise
            refusal = exc
    chosen, message = distributed.from_main(world, (str(found.path) if found else None,
                                                    str(refusal) if refusal else None))
    if refusal is not None:
        raise refusal
    if message is not None:
        raise CheckpointError(message)
    if world.main or chosen is None:
        return found
    return checkpoint.Resume(Path(chosen), checkpoint.load_checkpoint(Path(chosen)))


def unfinished_run_key(save_dir: Path, settings: dict[str, Any]) -> str | None:
    """The run key of an earlier run in `save_dir` that was killed before its first checkpoint, with the same
    settings: the fresh start takes it over, and with it the MLflow run that process may have created (it sent
    only the params, the same ones: values wait for a checkpoint). None otherwise."""
    if checkpoint.candidates(save_dir):
        return None
    recorded = read_record(save_dir) or {}
    key = (recorded.get("run") or {}).get("key")
    if not isinstance(key, str) or not key or recorded.get("config") != json.loads(json.dumps(settings)):
        return None
    return key


def record_is_final(save_dir: Path) -> bool:
    """metrics.json says the run finished (written last, after the final checkpoint and the status event) and,
    when it logged to MLflow, that the server took the run's end: a process killed between the two (a SIGKILL
    of a whole torchrun job while finishing) has its finish redone, so the MLflow run does not stay RUNNING."""
    recorded = read_record(save_dir) or {}
    run = recorded.get("run") or {}
    if run.get("status") not in status_lib.FINISHED or not run.get("ended_at"):
        return False
    return not (recorded.get("config") or {}).get("mlflow") or bool((run.get("mlflow") or {}).get("closed"))


def _quiet(message: str) -> None:
    """The log of ranks other than 0."""


def end_already_finished(save_dir: Path, resume: checkpoint.Resume, log: Log) -> RunResult:
    """Say why there is nothing to train (a finished run asked for no more epochs) and return its result."""
    state = resume.payload["state"]
    planned = max(resume.payload["config"].get("epochs", state["epoch"]), state["epoch"])
    log(f"nothing to do: {save_dir} already holds a {state['status'].replace('_', '-')} run of {state['epoch']} "
        f"epoch(s) (of {planned} asked for); raise --epochs above {planned} to continue it, or use --resume never "
        "to start over")
    return RunResult(state["status"], 0, save_dir, read_record(save_dir) or {})


def continue_state(state: TrainingState, resume: checkpoint.Resume, log: Log, *,
                   world: distributed.World = distributed.World()) -> TrainingState:
    """A restored state, marked as running again, with this resume noted (under torchrun: with this rank's own
    partial sums of an unfinished epoch)."""
    if state.shard_partials:
        loss_sum, samples = state.shard_partials[world.rank]
        state.epoch_loss_sum, state.epoch_samples = loss_sum, int(samples)
    if resume.finished:
        state.bad_epochs = 0  # continuing past an early stop: give the new epochs a fresh patience
    state.status = status_lib.RUNNING
    state.resumed.append({"time": runtime.now(), "checkpoint": str(resume.path), "epoch": state.epoch,
                          "step": state.global_step, "step_in_epoch": state.step_in_epoch})
    log(f"resuming from {resume.path} at epoch {state.epoch + 1}, step {state.global_step}")
    return state


def open_tracking(config: TrainConfig, *, save_dir: Path, state: TrainingState, resumed: bool,
                  settings: dict[str, Any], dataset: data.Dataset, monitor_metric: str, steps_per_epoch: int,
                  world: distributed.World, sinks: Sequence[tracking.Sink]
                  ) -> tuple[tracking.Tracker, SystemSampler | None, RunRecord]:
    """The sinks the config asks for (plus the caller's), the resource sampler and the run record, with the
    record written and the run announced. Under torchrun the other ranks get a tracker with no sinks: one set
    of logs and one MLflow run per training run, however many processes."""
    if world.main:
        tracker = tracking.open_tracker(
            RunDir(save_dir).logs, resume_step=state.global_step if resumed else None, tensorboard=config.tensorboard,
            mlflow=config.mlflow, tracking_uri=config.tracking_uri, experiment_name=config.experiment_name,
            run_name=state.run_name, mlflow_run_id=state.mlflow_run_id,
            tags={"pipeline.save_dir": str(save_dir.resolve()), "pipeline.task": dataset.task,
                  **({tracking.RUN_KEY_TAG: state.run_key} if state.run_key else {})}, extra=sinks)
    else:
        tracker = tracking.Tracker([])
    sampler = start_sampler(config.system_interval if world.main else 0, tracker, lambda: state.global_step)
    record = RunRecord(save_dir, config=settings, schema=dataset.schema, n_features=dataset.n_features, state=state,
                       device=settings["resolved_device"], amp=settings["resolved_amp"], monitor_metric=monitor_metric,
                       tracking_info=tracker.info,
                       system_summary=lambda: dict(sampler.summary) if sampler is not None else {},
                       world_size=world.size, enabled=world.main)
    record.write()
    tracker.log_event({"type": "run", "status": status_lib.RUNNING, "pid": os.getpid(), "host": tracking.host_name(),
                       "run_name": state.run_name, "epochs": config.epochs, "steps_per_epoch": steps_per_epoch,
                       "start_epoch": state.epoch, "start_step": state.global_step, "device": settings["resolved_device"],
                       "task": dataset.task, "monitor_metric": monitor_metric, "resumed": resumed, "config": settings,
                       "hparams": {k: v for k, v in settings.items() if k not in config_lib.RESUMABLE_KEYS},
                       "world_size": world.size, "logs": str(RunDir(save_dir).logs)})
    return tracker, sampler, record


def start_sampler(interval_s: float, tracker: tracking.Tracker, step: Callable[[], int]) -> SystemSampler | None:
    """Resource samples every `interval_s` seconds to every sink (0: none)."""
    if interval_s <= 0:
        return None
    return SystemSampler(interval_s, lambda sample: tracker.log_dict(sample, step(), "system"),
                         use_nvml=torch.cuda.is_available(), warn=lambda m: warnings.warn(m, stacklevel=2)).start()


def mlflow_run_id(tracker: tracking.Tracker) -> str | None:
    return (tracker.info().get("mlflow") or {}).get("run_id")


def save(checkpoints: checkpoint.Checkpointer, state: TrainingState, tracker: tracking.Tracker,
         kind: str = "last") -> None:
    """A checkpoint that also remembers the MLflow run, so a resume logs into the same one."""
    state.mlflow_run_id = mlflow_run_id(tracker) or state.mlflow_run_id
    checkpoints.save(state, kind)
    if kind == "last":  # what the sinks hold up to here is final: a resume only redoes later steps
        tracker.log_event({"type": "checkpoint", "step": state.global_step, "epoch": state.epoch})


def timings(totals: EpochTotals, *, lr: float, samples: int) -> dict[str, float]:
    """Rank 0's clock; `samples`: every rank's, so samples_per_second is the whole job's throughput."""
    return {"lr": lr, "epoch_seconds": round(totals.seconds, 4),
            "samples_per_second": round(samples / max(totals.seconds, 1e-9), 1),
            "data_seconds": round(totals.data_seconds, 4),
            "compute_seconds": round(max(0.0, totals.seconds - totals.data_seconds), 4)}


def non_finite_message(value: float, epoch: int, step: int) -> str:
    """Stop without touching the checkpoints: the last good state stays for a resume with other settings."""
    return (f"non-finite loss ({value}) in epoch {epoch + 1} at step {step}; the last good checkpoint is kept. "
            "Lower --learning-rate, add --grad-clip, or check the data, then re-run with --resume never or a "
            "new --save-dir")


def epoch_line(entry: dict[str, Any], epochs: int, improved: bool) -> str:
    parts = [f"epoch {entry['epoch']}/{epochs}", f"train_loss {entry['train_loss']:.4f}"]
    for key in ("val_loss", "val_accuracy", "val_balanced_accuracy", "val_f1_macro", "val_rmse", "val_r2"):
        if entry.get(key) is not None:
            parts.append(f"{key} {entry[key]:.4f}")
    parts.append(f"lr {entry['lr']:.2e}")
    parts.append(f"{entry['epoch_seconds']:.2f}s ({entry['samples_per_second']:,.0f} samples/s)")
    return "  ".join(parts) + ("  *best" if improved else "")


# ------------------------------------------------------------------------------------------ the finish
def finish_training(parts: optim.StepParts, checkpoints: checkpoint.Checkpointer, dataset: data.Dataset, *,
                    device: torch.device, target_scale: tuple[float, float], spec: dict[str, Any], save_dir: Path,
                    settings: dict[str, Any], register_as: str | None, tracker: tracking.Tracker,
                    state: TrainingState) -> tuple[dict[str, Any] | None, np.ndarray | None]:
    """Score the best weights on the test split, export them (model.safetensors, config.yaml), save the final
    state in last.pt, and hand the model to the sinks. Returns the test scores and the test outputs
    (probabilities or predictions) the bootstrap resamples; `judge_test_scores` logs the scores."""
    best_net = copy.deepcopy(parts.net)  # a copy: `net` keeps the last weights, which last.pt continues from
    best = checkpoints.best_weights()
    if best is not None:
        best_net.load_state_dict(best)
    run_dir = RunDir(save_dir)
    X_test, y_test = dataset.arrays["test"]
    test, outputs = None, None
    if X_test.shape[0]:
        raw = scoring.predict_arrays(best_net, X_test, device=device, amp=parts.amp)  # one pass: scores + bootstrap
        test = scoring.score_outputs(raw, y_test, task=dataset.task, loss_fn=parts.loss_fn, target_scale=target_scale,
                                     target_range=spec.get("target_range"), detailed=True,
                                     classes=dataset.schema["classes"])
        outputs = scoring.test_outputs(raw, task=dataset.task, target_scale=target_scale,
                                       target_range=spec.get("target_range"))
    export_model(run_dir.model, best_net, spec=spec, schema=dataset.schema)
    import yaml

    fileio.atomic_write_bytes(run_dir.config, yaml.safe_dump(settings, sort_keys=True).encode())
    save(checkpoints, state, tracker)  # records the final status in the checkpoint
    tracker.log_event({"type": "model", "path": str(run_dir.model), "spec": spec,
                       "data_dir": str(Path(settings["data_dir"]).resolve()), "register_as": register_as,
                       "artifacts": [[str(run_dir.config), None],
                                     [str(run_dir.model), "model_weights"],
                                     [str(Path(settings["data_dir"]) / "schema.json"), "model_weights"]]})
    return test, outputs


def judge_test_scores(record: RunRecord, dataset: data.Dataset, outputs: np.ndarray, *, seed: int,
                      with_baselines: bool, tracker: tracking.Tracker, step: int, log: Log) -> None:
    """The baselines (boosted trees and a linear model on the same training split, scored on the same test rows),
    then one paired bootstrap of every test score: intervals, differences network - baseline, and the verdict
    against the best baseline. All of it goes into metrics.json; MLflow gets the intervals and verdict tags."""
    X_test, y_test = dataset.arrays["test"]
    found: dict[str, np.ndarray] = {}
    if with_baselines:
        X_train, y_train = dataset.arrays["train"]
        record.baselines = baselines.fit_baselines(X_train, y_train, X_test, y_test, task=dataset.task,
                                                   n_classes=dataset.n_outputs, seed=seed, outputs=found)
    summary = uncertainty.summarise(np.asarray(y_test), task=dataset.task, n_classes=dataset.n_outputs,
                                    network=(record.test, outputs), headline=baselines.headline(dataset.task),
                                    baselines={name: (record.baselines[name], found[name]) for name in found},
                                    settings=uncertainty.Bootstrap(seed=seed))
    record.test["intervals"] = summary["test_intervals"]
    for name, extra in summary["baselines"].items():
        record.baselines[name].update(extra)
    record.uncertainty, record.verdict = summary["uncertainty"], summary["verdict"]
    intervals = {f"{metric}_ci_{end}": value for metric, interval in record.test["intervals"].items()
                 for end, value in zip(("low", "high"), interval)}
    tracker.log_dict({**tracking.numbers(record.test), **intervals}, step, "test")  # test_<m>, test_<m>_ci_low/high
    if record.baselines is not None:
        tracker.log_event({"type": "baselines", "scores": record.baselines})
        log(baselines.comparison_line(record.test, record.baselines, dataset.task))
    if record.verdict is not None:
        tracker.log_event({"type": "verdict", "verdict": record.verdict})
        log(record.verdict["text"])


def export_model(path: Path, net: nn.Module, *, spec: dict[str, Any], schema: dict[str, Any]) -> None:
    """The weights as safetensors, with the model spec (how to rebuild it) and the data schema in its metadata."""
    from safetensors.torch import save as save_safetensors

    # copies: safetensors refuses tensors that share memory (tied weights), and a copy of each loads back the same
    tensors = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in net.state_dict().items()}
    metadata = {"model_spec": json.dumps(spec), "schema": json.dumps(schema), "format": "pipeline.model/1"}
    fileio.atomic_write_bytes(path, save_safetensors(tensors, metadata=metadata))


def end_tracking(status: str, message: str, *, state: TrainingState, record: RunRecord, tracker: tracking.Tracker,
                 sampler: SystemSampler | None) -> None:
    """The final status everywhere: metrics.json, the sinks (then closed), and metrics.json again with what
    the sinks said once they were done (e.g. the MLflow run id, if the server answered)."""
    state.status = status
    # the event first: a metrics.json that says "finished" then always has its status line in the log
    tracker.log_event({"type": "status", "status": status, "message": message[:500]})
    record.finish(message)
    if sampler is not None:
        sampler.stop()
    tracker.close(status)
    record.write()
