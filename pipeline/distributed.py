"""Several processes, one run: DistributedDataParallel under torchrun (gloo on CPU, NCCL on GPUs).

    torchrun --standalone --nproc_per_node=2 solutions/train_pipeline.py --data-dir processed_data \
        --epochs 20 --batch-size 64 --learning-rate 0.001 --save-dir checkpoints

torchrun starts N copies of the script with RANK, LOCAL_RANK and WORLD_SIZE set; `setup` joins them into one
process group. Every rank trains its shard of each epoch's seeded permutation with its own --batch-size (so the
effective batch is batch_size x world_size; the learning rate is not scaled: raise it yourself if you want the
linear-scaling rule). DDP averages the gradients, so every rank holds the same weights after every step. Rank 0
alone writes (checkpoints, metrics.json, logs, TensorBoard, MLflow) and scores the validation split; it tells the
others what it found, and a signal on any rank is shared at the next step boundary, so every rank takes the same
decision at the same step. A world of one under torchrun computes exactly what a plain run does.
"""
from __future__ import annotations

import datetime
import math
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class World:
    rank: int = 0
    local_rank: int = 0
    size: int = 1
    launched: bool = False   # started by torchrun (even with one process): collectives are used

    @property
    def main(self) -> bool:
        """The rank that writes and evaluates."""
        return self.rank == 0


def from_environment() -> World:
    """The world torchrun describes in the environment; a plain `python` run is a world of one."""
    if "LOCAL_RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return World()
    return World(rank=int(os.environ.get("RANK", 0)), local_rank=int(os.environ["LOCAL_RANK"]),
                 size=int(os.environ["WORLD_SIZE"]), launched=True)


def setup(world: World, device: torch.device) -> None:
    """Join the process group (NCCL for GPUs, gloo for CPUs). A no-op outside torchrun."""
    if world.launched and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend, timeout=datetime.timedelta(minutes=30))


def teardown(world: World) -> None:
    if world.launched and dist.is_initialized():
        dist.destroy_process_group()


@contextmanager
def joined(world: World, device: torch.device) -> Iterator[None]:
    """The process group for the length of a run (nothing outside torchrun)."""
    setup(world, device)
    try:
        yield
    finally:
        teardown(world)


def device_for(world: World, device: torch.device) -> torch.device:
    """One GPU per process under torchrun: cuda:LOCAL_RANK."""
    if world.launched and device.type == "cuda":
        torch.cuda.set_device(world.local_rank)
        return torch.device("cuda", world.local_rank)
    return device


def shard(permutation: torch.Tensor, world: World) -> torch.Tensor:
    """This rank's rows of an epoch's permutation: every `size`-th row from `rank`, after padding with the
    permutation's first rows so that every rank gets the same number (DDP needs equal step counts)."""
    if world.size == 1:
        return permutation
    n = permutation.numel()
    per_rank = math.ceil(n / world.size)
    padded = torch.cat([permutation, permutation[:per_rank * world.size - n]])
    return padded[world.rank::world.size]


def agree(world: World, signum: int | None, non_finite: bool) -> tuple[int | None, bool]:
    """What every rank must know at a step boundary: a signal any rank received (the highest number, so
    SIGTERM wins over SIGINT) and whether any rank saw a non-finite loss. One small all-reduce."""
    if not world.launched:
        return signum, non_finite
    flags = torch.tensor([signum or 0, int(non_finite)], dtype=torch.int64)
    dist.all_reduce(flags, op=dist.ReduceOp.MAX)
    return (int(flags[0]) or None), bool(flags[1])


def total(world: World, loss_sum: float, samples: int) -> tuple[float, int]:
    """The whole epoch's loss sum and sample count (every rank's shard)."""
    if not world.launched:
        return loss_sum, samples
    values = torch.tensor([loss_sum, float(samples)], dtype=torch.float64)
    dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return float(values[0]), int(values[1])


def gather(world: World, value: Any) -> list[Any]:
    """`value` from every rank, in rank order (on every rank)."""
    if not world.launched:
        return [value]
    found: list[Any] = [None] * world.size
    dist.all_gather_object(found, value)
    return found


def from_main(world: World, value: Any) -> Any:
    """Rank 0's `value`, on every rank."""
    if not world.launched:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def wrap(net: torch.nn.Module, world: World, device: torch.device) -> torch.nn.Module:
    """DistributedDataParallel around `net` under torchrun; `net` itself otherwise."""
    if not world.launched:
        return net
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None)
