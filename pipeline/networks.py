"""Networks for tables that hold their own against boosted trees: RealMLP-style inputs, optionally a TabM ensemble.

    python solutions/train_pipeline.py --data-dir processed_data --save-dir out --model realmlp
    model = build_realmlp(n_features=11, n_outputs=3)           # x: (batch, 11) -> logits (batch, 3)
    model = build_tabm(n_features=11, n_outputs=1, k=8)         # 8 members sharing one body, averaged

Both are factories `fn(n_features, n_outputs, **model_args)` like `model.build_mlp`, so the engine trains them
with every promise kept (exact resume: the forward pass is deterministic on CPU; predict rebuilds them). The
inputs reaching them are already standardised with the training split's statistics; what each piece adds:

- `SmoothClip` (RealMLP, Holzmüller et al., "Better by Default", NeurIPS 2024): x / sqrt(1 + (x/3)^2) keeps
  ordinary values and squashes outliers to at most 3, so a test row far outside the training range (a house
  ten times the usual price) cannot make the network extrapolate wildly.
- `PeriodicEmbedding` (Gorishniy et al., "On Embeddings for Numerical Features", NeurIPS 2022; RealMLP's
  PBLD variant): each feature becomes [x, linear(cos(2π(w x + b)))], so the first layer can draw sharp,
  non-monotone functions of a single feature, which plain MLPs are bad at and trees are good at.
- `DiagonalScale` (RealMLP's scaling layer): one learnable factor per embedded input, learning faster than
  the rest (a reparametrisation: with Adam, a weight used as `factor * w` moves `factor` times faster), so the
  network can switch useless features off early.
- A 3 x 256 body with dropout 0.15 and SELU (classification) or Mish (regression), RealMLP's defaults.
  `--model-args '{"embedding": "none"}'` leaves the embedding out (clip -> scale -> body), for comparison.
- `build_tabm` (Gorishniy et al., "TabM", ICLR 2025): k members share the body; each has its own input
  adapter (random ±1 signs at start, as in TabM-mini) and its own head. At evaluation the members' predictions
  are averaged (probabilities for classification, values for regression). In training each row is routed to
  one member (row i to member i mod k: the engine shuffles rows every epoch, so membership is random and
  needs no random numbers), so every member learns from its own loss at the cost of one network, not k.
  This routing is our simplification; the paper trains every member on every row.

What RealMLP does that these factories cannot (they see neither the data nor the optimizer): robust scaling
by quantiles (the pipeline standardises by mean and std before the clip), its learning-rate and dropout
schedules, label smoothing and data-dependent initialisation. Written from the papers; no code copied.
"""
from __future__ import annotations

import math

import torch
from torch import nn


class SmoothClip(nn.Module):
    """x / sqrt(1 + (x / bound)^2): about x for |x| << bound, never beyond ±bound."""

    def __init__(self, bound: float = 3.0):
        super().__init__()
        self.bound = bound

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x / torch.sqrt(1 + (x / self.bound) ** 2)


class PeriodicEmbedding(nn.Module):
    """Each of `n_features` scalars -> [x, linear(cos(2π(w x + b)))]: (batch, n_features) -> (batch, n_features * dim).

    Frequencies w start at N(0, frequency_scale^2) (low: smooth functions first), phases b at U(0, 1); each
    feature has its own frequencies and its own small linear map (n_frequencies -> dim - 1)."""

    def __init__(self, n_features: int, *, n_frequencies: int = 16, dim: int = 4, frequency_scale: float = 0.1):
        super().__init__()
        self.frequency = nn.Parameter(torch.randn(n_features, n_frequencies) * frequency_scale)
        self.phase = nn.Parameter(torch.rand(n_features, n_frequencies))
        bound = 1 / math.sqrt(n_frequencies)
        self.weight = nn.Parameter(torch.empty(n_features, n_frequencies, dim - 1).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(n_features, dim - 1).uniform_(-bound, bound))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        waves = torch.cos(2 * math.pi * (x.unsqueeze(-1) * self.frequency + self.phase))  # (batch, features, freq)
        mixed = torch.einsum("bfk,fkd->bfd", waves, self.weight) + self.bias              # (batch, features, dim-1)
        return torch.cat([x.unsqueeze(-1), mixed], dim=-1).flatten(1)                     # (batch, features * dim)


class DiagonalScale(nn.Module):
    """y = x * (lr_factor * s), s starting at 1 / lr_factor: a per-input gain that learns `lr_factor` times faster."""

    def __init__(self, width: int, lr_factor: float = 16.0):
        super().__init__()
        self.lr_factor = lr_factor
        self.scale = nn.Parameter(torch.full((width,), 1.0 / lr_factor))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * (self.lr_factor * self.scale)


def activation_for(name: str) -> nn.Module:
    activations = {"selu": nn.SELU, "mish": nn.Mish, "relu": nn.ReLU, "gelu": nn.GELU, "silu": nn.SiLU}
    if name not in activations:
        raise ValueError(f"activation must be one of {', '.join(activations)} (or auto), not {name!r}")
    return activations[name]()


def body(width_in: int, *, width: int, depth: int, dropout: float, activation: str) -> nn.Sequential:
    """`depth` x (Linear -> activation -> dropout): (batch, width_in) -> (batch, width)."""
    layers: list[nn.Module] = []
    for _ in range(depth):
        layers += [nn.Linear(width_in, width), activation_for(activation)]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        width_in = width
    return nn.Sequential(*layers)


def embedding_for(kind: str, n_features: int, *, n_frequencies: int, dim: int,
                  frequency_scale: float) -> tuple[nn.Module, int]:
    """(the input embedding, its output width): periodic (dim numbers per feature) or none (the features)."""
    if kind == "periodic":
        return (PeriodicEmbedding(n_features, n_frequencies=n_frequencies, dim=dim, frequency_scale=frequency_scale),
                n_features * dim)
    if kind == "none":
        return nn.Identity(), n_features
    raise ValueError(f"embedding must be periodic or none, not {kind!r}")


class RealMLP(nn.Module):
    """clip -> periodic embedding -> diagonal scale -> body -> head. x: (batch, n_features) -> (batch, n_outputs)."""

    def __init__(self, n_features: int, n_outputs: int, *, width: int, depth: int, dropout: float, activation: str,
                 embedding: str, n_frequencies: int, embedding_dim: int, frequency_scale: float,
                 scale_lr_factor: float, clip: float):
        super().__init__()
        self.clip = SmoothClip(clip)
        self.embed, width_in = embedding_for(embedding, n_features, n_frequencies=n_frequencies, dim=embedding_dim,
                                             frequency_scale=frequency_scale)
        self.scale = DiagonalScale(width_in, scale_lr_factor)
        self.body = body(width_in, width=width, depth=depth, dropout=dropout, activation=activation)
        self.head = nn.Linear(width, n_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(self.scale(self.embed(self.clip(x)))))


class TabM(nn.Module):
    """RealMLP's inputs, k members sharing one body (TabM-mini: a ±1 adapter per member before it, a head each).

    Training: row i goes through member i mod k (one member per row: the cost of one network). Evaluation: every
    row through every member, predictions averaged; for classification the output is log(mean probability),
    which the engine's softmax and cross-entropy read like any logits."""

    def __init__(self, n_features: int, n_outputs: int, *, k: int, width: int, depth: int, dropout: float,
                 activation: str, embedding: str, n_frequencies: int, embedding_dim: int, frequency_scale: float,
                 scale_lr_factor: float, clip: float):
        super().__init__()
        if k < 1:
            raise ValueError(f"k (ensemble members) must be >= 1, not {k}")
        self.k, self.classification = k, n_outputs > 1
        self.clip = SmoothClip(clip)
        self.embed, width_in = embedding_for(embedding, n_features, n_frequencies=n_frequencies, dim=embedding_dim,
                                             frequency_scale=frequency_scale)
        self.scale = DiagonalScale(width_in, scale_lr_factor)
        self.adapter = nn.Parameter(torch.randint(0, 2, (k, width_in)).float() * 2 - 1)  # (k, width_in), ±1
        self.body = body(width_in, width=width, depth=depth, dropout=dropout, activation=activation)
        bound = 1 / math.sqrt(width)
        self.head_weight = nn.Parameter(torch.empty(k, width, n_outputs).uniform_(-bound, bound))
        self.head_bias = nn.Parameter(torch.empty(k, n_outputs).uniform_(-bound, bound))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.scale(self.embed(self.clip(x)))                                         # (batch, width_in)
        if self.training:
            member = torch.arange(x.shape[0], device=x.device) % self.k                  # (batch,)
            z = self.body(h * self.adapter[member])                                      # (batch, width)
            return torch.einsum("bw,bwo->bo", z, self.head_weight[member]) + self.head_bias[member]
        z = self.body((h.unsqueeze(1) * self.adapter).flatten(0, 1))                     # (batch * k, width)
        z = z.view(x.shape[0], self.k, -1)                                               # (batch, k, width)
        out = torch.einsum("bkw,kwo->bko", z, self.head_weight) + self.head_bias          # (batch, k, outputs)
        if self.classification:
            return torch.logsumexp(torch.log_softmax(out, dim=-1), dim=1) - math.log(self.k)
        return out.mean(dim=1)


def _auto_activation(activation: str, n_outputs: int) -> str:
    # RealMLP's defaults: SELU for classification, Mish for regression (one output: a standardised target)
    return ("mish" if n_outputs == 1 else "selu") if activation == "auto" else activation


def build_realmlp(n_features: int, n_outputs: int, width: int = 256, depth: int = 3, dropout: float = 0.15,
                  activation: str = "auto", embedding: str = "periodic", n_frequencies: int = 16,
                  embedding_dim: int = 4, frequency_scale: float = 0.1, scale_lr_factor: float = 16.0,
                  clip: float = 3.0) -> RealMLP:
    """A RealMLP-style network (`--model realmlp`); every default is meant to work untuned."""
    return RealMLP(n_features, n_outputs, width=width, depth=depth, dropout=dropout,
                   activation=_auto_activation(activation, n_outputs), embedding=embedding,
                   n_frequencies=n_frequencies, embedding_dim=embedding_dim, frequency_scale=frequency_scale,
                   scale_lr_factor=scale_lr_factor, clip=clip)


def build_tabm(n_features: int, n_outputs: int, k: int = 8, width: int = 256, depth: int = 3, dropout: float = 0.15,
               activation: str = "auto", embedding: str = "periodic", n_frequencies: int = 16,
               embedding_dim: int = 4, frequency_scale: float = 0.1, scale_lr_factor: float = 16.0,
               clip: float = 3.0) -> TabM:
    """RealMLP's inputs with a TabM-mini ensemble of `k` members (`--model tabm`)."""
    return TabM(n_features, n_outputs, k=k, width=width, depth=depth, dropout=dropout,
                activation=_auto_activation(activation, n_outputs), embedding=embedding,
                n_frequencies=n_frequencies, embedding_dim=embedding_dim, frequency_scale=frequency_scale,
                scale_lr_factor=scale_lr_factor, clip=clip)
