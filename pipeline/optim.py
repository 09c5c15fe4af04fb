"""What one optimizer step needs: the optimizer, the learning-rate schedule and the loss.

    optimizer = build_optimizer(net.parameters(), "adamw", lr=1e-3, weight_decay=0.0, momentum=0.9)
    scheduler = build_scheduler(optimizer, "cosine", warmup_epochs=1, epochs=20, steps_per_epoch=100)

The schedule is a pure function of the step (`lr_factor`), so a resumed run, or one whose --epochs was
raised, simply recomputes it; only ReduceLROnPlateau keeps state of its own (saved in the checkpoint).
"""
from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from pipeline.errors import ConfigError

Scheduler = torch.optim.lr_scheduler.LRScheduler | torch.optim.lr_scheduler.ReduceLROnPlateau


@dataclass
class StepParts:
    """What one optimizer step touches, travelling together (the loop's only bundle of arguments)."""
    net: nn.Module                       # the weights that are saved and exported
    model: nn.Module                     # what the loop calls: `net`, or torch.compile(net)
    optimizer: torch.optim.Optimizer
    scheduler: Scheduler | None
    scaler: torch.amp.GradScaler | None  # fp16 autocast only
    loss_fn: nn.Module
    amp: torch.dtype | None = None       # autocast dtype; None: full precision
    accum_steps: int = 1                 # batches per optimizer step
    grad_clip: float = 0.0               # max gradient norm; 0: off


def build_optimizer(params: Iterable[nn.Parameter], name: str, *, lr: float, weight_decay: float,
                    momentum: float) -> torch.optim.Optimizer:
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)


def lr_factor(step: int, *, kind: str, warmup_steps: int, total_steps: int, steps_per_epoch: int,
              step_size: int, gamma: float) -> float:
    """Multiplier of the base learning rate after `step` optimizer steps."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    if kind == "cosine":
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return 0.5 * (1 + math.cos(math.pi * progress))
    if kind == "onecycle":  # warm up to the peak (at least 30% of the run), then anneal to ~0
        peak = max(warmup_steps, int(0.3 * total_steps))
        if step < peak:
            return 0.04 + 0.96 * (step + 1) / max(1, peak)
        progress = min(1.0, (step - peak) / max(1, total_steps - peak))
        return 1e-4 + (1 - 1e-4) * 0.5 * (1 + math.cos(math.pi * progress))
    if kind == "step":
        return gamma ** ((step // max(1, steps_per_epoch)) // max(1, step_size))
    return 1.0


def build_scheduler(optimizer: torch.optim.Optimizer, kind: str, *, warmup_epochs: float, epochs: int,
                    steps_per_epoch: int, step_size: int = 10, gamma: float = 0.5,
                    plateau_patience: int = 3) -> Scheduler | None:
    """Per-step LambdaLR for none/cosine/step/onecycle (with warmup); ReduceLROnPlateau per epoch.
    `steps_per_epoch` counts optimizer steps (batches / gradient-accumulation steps)."""
    if kind == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="min", factor=gamma,
                                                          patience=max(1, plateau_patience))
    if kind == "none" and warmup_epochs <= 0:
        return None
    shape = dict(kind=kind, warmup_steps=int(round(warmup_epochs * steps_per_epoch)),
                 total_steps=epochs * steps_per_epoch, steps_per_epoch=steps_per_epoch, step_size=step_size,
                 gamma=gamma)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, **shape))


def per_step(scheduler: Scheduler | None) -> bool:
    """True when the scheduler advances every optimizer step (everything but ReduceLROnPlateau)."""
    return scheduler is not None and not isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)


def balanced_class_weights(y: np.ndarray, n_classes: int) -> torch.Tensor:
    """n / (n_classes * count): each class contributes equally to the loss, whatever its size."""
    counts = np.bincount(y, minlength=n_classes).astype(np.float64)
    return torch.tensor(len(y) / (n_classes * np.maximum(counts, 1)), dtype=torch.float32)


def build_loss(task: str, name: str, class_weight: torch.Tensor | None) -> nn.Module:
    if task == "classification":
        if name not in ("auto", "cross_entropy"):
            raise ConfigError(f"--loss {name} is for regression; classification uses cross_entropy")
        return nn.CrossEntropyLoss(weight=class_weight)
    if name == "cross_entropy":
        raise ConfigError("--loss cross_entropy is for classification; regression uses mse or huber")
    return nn.HuberLoss() if name == "huber" else nn.MSELoss()
