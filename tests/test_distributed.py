"""Distributed set-up without a process group: rank 0 of 1 is a no-op; shards cover a batch."""

from __future__ import annotations

import pytest
import torch

from undistill.distributed import DistContext, check_shardable, distributed_context


def test_single_process_is_rank_0_of_1_and_changes_nothing() -> None:
    ctx, dev = distributed_context(torch.device("cpu"))
    assert ctx == DistContext() and not ctx.enabled and ctx.main and dev == torch.device("cpu")
    x, y = torch.randn(5, 3), torch.arange(5)
    sx, sy, scale = ctx.shard_batch(x, y)
    assert sx is x and sy is y and scale == 1.0
    assert ctx.sum([torch.tensor(2.0), 3], dev) == [2.0, 3.0]


def test_shards_cover_the_batch_and_scales_average_to_one() -> None:
    x, y = torch.arange(10.0).unsqueeze(1), torch.arange(10)
    parts = [DistContext(r, 3).shard_batch(x, y) for r in range(3)]
    assert torch.equal(torch.cat([p[1] for p in parts]), y)
    # DDP averages the ranks' gradients: scaled shard means average to the global batch mean
    assert sum(scale * sx.mean() for sx, _, scale in parts) / 3 == pytest.approx(x.mean())
    with pytest.raises(ValueError, match="two per process"):
        check_shardable(100, 4, 3)
