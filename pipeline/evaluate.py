"""Scoring a model on one split: its loss and the task's metrics, in the target's own units.

    scores = evaluate(net, X_val, y_val, task="classification", loss_fn=loss_fn, device=device, amp=None,
                      target_scale=(0.0, 1.0))                  # {"loss": ..., "accuracy": ..., "f1_macro": ...}
    scores = evaluate(net, X_val, y_val, task="regression", loss_fn=loss_fn, device=device, amp=None,
                      target_scale=(mean, std), target_range=[low, high])   # predictions clipped to [low, high]

`predict_arrays` runs the model in inference mode in chunks; the metric maths is in `pipeline.metrics`.
"""
from __future__ import annotations

import copy
from typing import Any

import numpy as np
import torch
from torch import nn

from pipeline import metrics


@torch.inference_mode()
def predict_arrays(model: nn.Module, X: np.ndarray, *, device: torch.device, amp: torch.dtype | None,
                   batch_size: int = 4096) -> np.ndarray:
    """Raw model outputs (rows, n_outputs) as float32 NumPy, in chunks."""
    model.eval()
    outputs = []
    for start in range(0, X.shape[0], batch_size):
        xb = torch.from_numpy(np.require(X[start:start + batch_size], requirements=['C', 'W'])).to(device)
        with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
            outputs.append(model(xb).float().cpu())
    return torch.cat(outputs).numpy() if outputs else np.zeros((0, 1), dtype=np.float32)


def evaluate(model: nn.Module, X: np.ndarray, y: np.ndarray, *, task: str, loss_fn: nn.Module,
             device: torch.device, amp: torch.dtype | None, target_scale: tuple[float, float],
             target_range: list[float] | None = None, detailed: bool = False,
             classes: list[str] | None = None) -> dict[str, Any]:
    """Loss + task metrics of `model` on one split (metrics in the target's own units). A regression's
    predictions are clipped to `target_range` ([low, high] in the target's units) when it is given."""
    if X.shape[0] == 0:
        return {}
    return score_outputs(predict_arrays(model, X, device=device, amp=amp), y, task=task, loss_fn=loss_fn,
                         target_scale=target_scale, target_range=target_range, detailed=detailed, classes=classes)


def score_outputs(raw: np.ndarray, y: np.ndarray, *, task: str, loss_fn: nn.Module,
                  target_scale: tuple[float, float], target_range: list[float] | None = None, detailed: bool = False,
                  classes: list[str] | None = None) -> dict[str, Any]:
    """`evaluate` on outputs already computed (`predict_arrays`): the finish scores and bootstraps one pass."""
    out = torch.from_numpy(raw)
    loss_fn = copy.deepcopy(loss_fn).cpu()  # a CPU copy: the training loss (and its class weights) stays put
    if task == "classification":
        target = torch.from_numpy(np.asarray(y)).long()
        loss = float(loss_fn(out, target))
        probabilities = torch.softmax(out, dim=1).numpy()
        result = {"loss": loss, **metrics.classification_metrics(np.asarray(y), probabilities, detailed=detailed,
                                                                 classes=classes)}
        if detailed:
            result["roc_curves"] = roc_curves(np.asarray(y), probabilities, classes or [])
            result["pr_curves"] = pr_curves(np.asarray(y), probabilities, classes or [])
            result["average_precision"] = metrics.average_precision(np.asarray(y), probabilities)
            result["calibration"] = metrics.calibration(np.asarray(y), probabilities)
        return result
    mean, std = target_scale
    out = _clipped(out, target_scale, target_range)
    scaled = (torch.from_numpy(np.asarray(y, dtype=np.float32)) - mean) / std
    loss = float(loss_fn(out[:, 0], scaled))
    predicted = out[:, 0].numpy() * std + mean
    result = {"loss": loss, **metrics.regression_metrics(np.asarray(y), predicted)}
    if detailed:
        keep = np.linspace(0, len(y) - 1, num=min(len(y), 2000)).astype(int)
        result["predictions"] = {"y_true": np.asarray(y)[keep].tolist(), "y_pred": predicted[keep].tolist()}
    return result


def test_outputs(raw: np.ndarray, *, task: str, target_scale: tuple[float, float],
                 target_range: list[float] | None = None) -> np.ndarray:
    """What the bootstrap resamples, from `predict_arrays`' raw outputs: class probabilities (rows, classes), or
    predictions (rows,) in the target's units, clipped as `score_outputs` clips them."""
    out = torch.from_numpy(raw)
    if task == "classification":
        return torch.softmax(out, dim=1).numpy()
    mean, std = target_scale
    return _clipped(out, target_scale, target_range)[:, 0].numpy().astype(np.float64) * std + mean


def _clipped(out: torch.Tensor, target_scale: tuple[float, float], target_range: list[float] | None) -> torch.Tensor:
    """Standardised regression outputs clipped to `target_range` (given in the target's units), when given."""
    if target_range is None:
        return out
    mean, std = target_scale
    return out.clamp((target_range[0] - mean) / std, (target_range[1] - mean) / std)


def roc_curves(y: np.ndarray, probabilities: np.ndarray, classes: list[str]) -> dict[str, Any]:
    """One-vs-rest ROC curves (thinned to 200 points): one, of the positive class, for two classes."""
    from sklearn.metrics import roc_curve

    curves = {}
    for i, name in enumerate(classes):
        if len(classes) == 2 and i == 0:
            continue  # the negative class's curve is the positive's mirror image
        positives = (y == i)
        if positives.all() or not positives.any():
            continue
        fpr, tpr, _ = roc_curve(positives, probabilities[:, i])
        keep = np.unique(np.linspace(0, len(fpr) - 1, num=min(len(fpr), 200)).astype(int))
        curves[name] = {"fpr": fpr[keep].round(5).tolist(), "tpr": tpr[keep].round(5).tolist()}
    return curves


def pr_curves(y: np.ndarray, probabilities: np.ndarray, classes: list[str]) -> dict[str, Any]:
    """One-vs-rest precision-recall curves (thinned to 200 points), of the positive class for two classes, with
    each class's share of the rows (the precision a random guess reaches)."""
    from sklearn.metrics import precision_recall_curve

    curves = {}
    for i, name in enumerate(classes):
        positives = (y == i)
        if (len(classes) == 2 and i == 0) or positives.all() or not positives.any():
            continue
        precision, recall, _ = precision_recall_curve(positives, probabilities[:, i])
        keep = np.unique(np.linspace(0, len(recall) - 1, num=min(len(recall), 200)).astype(int))
        curves[name] = {"recall": recall[keep].round(5).tolist(), "precision": precision[keep].round(5).tolist(),
                        "share": round(float(positives.mean()), 5)}
    return curves
