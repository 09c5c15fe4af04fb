"""Mini-batches of the training split, in an order that is a pure function of (seed, epoch).

    permutation = epoch_permutation(seed=42, epoch=3, n=len(X))       # the same on every run and resume
    for b, xb, yb in Batches(X, y, device=device, ...).iterate(permutation, start_batch=0): ...

Because the order needs no saved state, a run killed mid-epoch resumes at batch `step_in_epoch` of the same
permutation and sees exactly the rows it would have seen. Two sources give identical batches: indexed tensors
in memory (the fast path, on the GPU when the table fits) and a DataLoader over memory-mapped arrays (for
tables bigger than RAM), whose workers gather whole batches.
"""
from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import torch

from pipeline import distributed


def epoch_permutation(seed: int, epoch: int, n: int) -> torch.Tensor:
    """The order of training rows in `epoch`: a pure function of (seed, epoch), so resume needs no state."""
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=generator)


class Batches:
    """Mini-batches of the training split in the epoch's permutation order.

    memory: X and y live in tensors (on the GPU when they fit) and a batch is one index_select.
    dataloader: X stays memory-mapped on disk; workers gather whole batches (same order, same results).
    """

    def __init__(self, X: np.ndarray, y: np.ndarray, *, device: torch.device, loader: str, num_workers: int,
                 batch_size: int, y_dtype: torch.dtype, world: distributed.World = distributed.World()):
        self.device, self.loader, self.batch_size = device, loader, batch_size
        self.num_workers = num_workers
        self.world = world
        self.n = X.shape[0]                                   # rows in the split (the permutation's length)
        self.rows_per_rank = math.ceil(self.n / world.size)   # rows this process trains on per epoch
        self.X_np, self.y_np = X, y
        self.y_dtype = y_dtype
        self.on_device = False
        if loader == "memory":
            X_t = torch.from_numpy(np.ascontiguousarray(X))  # (rows, features) float32, zero-copy
            y_t = torch.from_numpy(np.ascontiguousarray(y)).to(y_dtype)
            if device.type == "cuda":
                free, _ = torch.cuda.mem_get_info(device)
                if X_t.nbytes + y_t.nbytes < 0.5 * free:  # keep the whole table on the GPU
                    X_t, y_t, self.on_device = X_t.to(device), y_t.to(device), True
                else:
                    X_t, y_t = X_t.pin_memory(), y_t.pin_memory()
            self.X, self.y = X_t, y_t

    def __len__(self) -> int:
        return math.ceil(self.rows_per_rank / self.batch_size)

    def iterate(self, permutation: torch.Tensor, start_batch: int) -> Iterator[tuple[int, torch.Tensor, torch.Tensor]]:
        """Yield (batch_index, xb, yb) from `start_batch` on, already on the device (under torchrun: this
        rank's shard of the permutation)."""
        permutation = distributed.shard(permutation, self.world)
        non_blocking = self.device.type == "cuda"
        if self.loader == "memory":
            perm = permutation.to(self.X.device)
            for b in range(start_batch, len(self)):
                idx = perm[b * self.batch_size:(b + 1) * self.batch_size]
                xb, yb = self.X.index_select(0, idx), self.y.index_select(0, idx)
                if not self.on_device:
                    xb = xb.to(self.device, non_blocking=non_blocking)
                    yb = yb.to(self.device, non_blocking=non_blocking)
                yield b, xb, yb
            return
        batches = [permutation[b * self.batch_size:(b + 1) * self.batch_size].numpy()
                   for b in range(start_batch, len(self))]
        dataset = GatherDataset(self.X_np, self.y_np, self.y_dtype)
        loader = torch.utils.data.DataLoader(dataset, sampler=batches, batch_size=None,
                                             num_workers=self.num_workers, pin_memory=non_blocking,
                                             persistent_workers=False,
                                             # its own generator: starting workers must not consume the global
                                             # RNG that dropout draws from, or resume/equivalence breaks
                                             generator=torch.Generator().manual_seed(0))
        for b, (xb, yb) in enumerate(loader, start=start_batch):
            yield b, xb.to(self.device, non_blocking=non_blocking), yb.to(self.device, non_blocking=non_blocking)


class GatherDataset(torch.utils.data.Dataset):
    """`dataset[indices]` returns a whole batch; used with a batch-index sampler and batch_size=None."""

    def __init__(self, X: np.ndarray, y: np.ndarray, y_dtype: torch.dtype):
        self.X, self.y, self.y_dtype = X, y, y_dtype

    def __len__(self) -> int:
        return self.X.shape[0]

    def __getitem__(self, indices: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        return (torch.from_numpy(np.ascontiguousarray(self.X[indices])),
                torch.from_numpy(np.ascontiguousarray(self.y[indices])).to(self.y_dtype))
