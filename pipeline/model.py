"""The model: a multi-layer perceptron for tabular features, built from plain arguments.

    model = build_mlp(n_features=11, n_outputs=3, hidden_sizes=(256, 128), dropout=0.1)
    logits = model(x)  # x: (batch, n_features) -> (batch, n_outputs)
"""
from __future__ import annotations

from torch import nn

NORMS = ("none", "batch", "layer")


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


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
