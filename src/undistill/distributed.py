"""Several processes, one run: DistributedDataParallel set-up for the engine.

``torchrun --nproc_per_node N -m undistill train ...`` (``WORLD_SIZE > 1`` in the environment)
trains one run with N processes. Every rank holds the whole training set on its device and draws
the same global batches (the loader is a function of (seed, epoch)); rank ``r`` trains on the
``r``-th contiguous shard of each global batch, whose size stays ``optim.batch_size``. Gradients
are averaged across ranks (each rank's loss is scaled by its share of the batch, so uneven shards
still give the global batch-mean gradient). BatchNorm normalises with per-rank batch statistics,
as plain DDP does; the running statistics are rank 0's. Evaluation is sharded and its counts
summed; rank 0 alone writes checkpoints, metrics and the result. See ``docs/performance.md``.

Without torchrun everything here is a no-op: :class:`DistContext` is rank 0 of 1.
"""

from __future__ import annotations

import atexit
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from undistill.methods import Method


@dataclass(frozen=True)
class DistContext:
    """This process's place in a multi-process run (rank 0 of 1 when not distributed)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def shard(self, n: int) -> tuple[int, int]:
        """This rank's contiguous slice ``[lo, hi)`` of ``n`` rows (sizes differ by at most 1)."""
        return n * self.rank // self.world, n * (self.rank + 1) // self.world

    def shard_batch(self, x: torch.Tensor, y: torch.Tensor
                    ) -> tuple[torch.Tensor, torch.Tensor, float]:
        """This rank's shard of a global batch and its loss scale (its share times the world
        size, so the averaged gradients are the global batch mean's); the batch itself when not
        distributed."""
        if not self.enabled:
            return x, y, 1.0
        lo, hi = self.shard(y.shape[0])
        return x[lo:hi], y[lo:hi], (hi - lo) * self.world / y.shape[0]

    def barrier(self, device: torch.device) -> None:
        if self.enabled:
            if device.type == "cuda":
                dist.barrier(device_ids=[device.index])
            else:
                dist.barrier()

    def sum(self, values: list[torch.Tensor | float | int], device: torch.device) -> list[float]:
        """Sum scalars over ranks (float64); one collective; plain floats back on every rank."""
        t = torch.stack([torch.as_tensor(v, dtype=torch.float64, device=device).reshape(())
                         for v in values])
        if self.enabled:
            dist.all_reduce(t)
        return t.tolist()

    def broadcast_buffers(self, module: nn.Module) -> None:
        """Rank 0's buffers (BatchNorm running statistics) on every rank."""
        if self.enabled:
            for buf in module.buffers():
                dist.broadcast(buf, 0)


def _destroy_process_group() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def distributed_context(device: torch.device) -> tuple[DistContext, torch.device]:
    """Join the process group when launched with ``WORLD_SIZE > 1`` (torchrun sets it).

    Backend nccl on CUDA (each rank on ``cuda:LOCAL_RANK``), gloo otherwise. A group the caller
    initialised already is used as it is. Returns the context and the device this rank trains on.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1 and not (dist.is_available() and dist.is_initialized()):
        return DistContext(), device
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", str(rank)))
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo",
                                device_id=device if device.type == "cuda" else None)
        atexit.register(_destroy_process_group)
    ctx = DistContext(dist.get_rank(), dist.get_world_size(), local_rank)
    return ctx, device


class ForwardTrain(nn.Module):
    """Adapter for DDP: its ``forward`` is the method's ``forward_train``."""

    def __init__(self, method: Method) -> None:
        super().__init__()
        self.method = method

    def forward(self, images: torch.Tensor, labels: torch.Tensor | None
                ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        return self.method.forward_train(images, labels)


def uses_every_parameter(method: Method) -> bool:
    """Whether every step sends gradient to every trainable parameter (DDP's fast path).

    Assumed when all trainable parameters belong to the student (zoo models use all of theirs);
    methods with extra parts (e.g. Skeptical's auxiliary heads, idle in some epochs) take DDP's
    ``find_unused_parameters`` path.
    """
    student = {id(p) for p in method.student.parameters()}
    return all(id(p) in student for p in method.parameters() if p.requires_grad)


def check_shardable(n: int, batch_size: int, world: int) -> None:
    """Every rank's shard of every batch needs 2 rows (BatchNorm in training needs two values)."""
    last = n % batch_size or min(batch_size, n)
    smallest = min(batch_size, n, last)
    if smallest < 2 * world:
        raise ValueError(f"{world} processes need at least {2 * world} rows in every batch (two per "
                         f"process, for BatchNorm): batch size {batch_size} with {n} training "
                         f"samples leaves a last batch of {last}; change optim.batch_size or the "
                         f"number of processes")


def step_function(method: Method, ctx: DistContext, device: torch.device) -> Any:
    """What a training step calls: the method's ``forward_train``, wrapped in DDP when
    distributed."""
    if not ctx.enabled:
        return method.forward_train
    return nn.parallel.DistributedDataParallel(
        ForwardTrain(method), device_ids=[device.index] if device.type == "cuda" else None,
        find_unused_parameters=not uses_every_parameter(method))
