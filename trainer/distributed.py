"""Whole-test-set computations sharded over ``torchrun`` processes: one mechanism for all of them.

    with session(device) as (ctx, dev):        # joins torchrun's process group; 1 process: a no-op
        out = map_shards(n, compute, ctx)      # compute(start, stop) -> {name: array (stop - start, ...)}
        if ctx.is_main:                        # rank 0: {name: array (n, ...)}; other ranks: None
            write(out)

``torchrun --nproc_per_node W`` starts W processes; :func:`~trainer.runtime.init_distributed`
gives each one ``cuda:LOCAL_RANK`` and the nccl backend when CUDA is available, else the CPU
and gloo. Rank ``r`` computes the contiguous index range ``[r*n//W, (r+1)*n//W)``
(:func:`shard_bounds`), so concatenating the shards in rank order is the single-process
order, and only rank 0 writes.

Gathering is point-to-point: each rank ``r > 0`` sends its arrays with ``dist.send``, and
rank 0 receives them with ``dist.recv`` straight into the rows ``[start_r, stop_r)`` of
output arrays it allocated once. Why not the alternatives:

* ``gather_object`` pickles every shard; rank 0 then holds the pickled bytes of all shards
  (padded to the largest), their unpickled copies and the concatenation: ~3x the result.
* ``all_gather`` of padded tensors leaves the whole result on *every* rank, plus padding
  and a compaction copy on rank 0.

Here rank 0 holds the full result exactly once (plus, under nccl, one shard-sized GPU
staging buffer per received array). Only the tiny per-array layout (dtype, row shape) is
exchanged as objects, with ``all_gather_object``, so that every rank can check it and fail
the same way instead of one rank waiting forever on the others.
"""
from __future__ import annotations

import contextlib
import os
from typing import Callable, Iterator

import numpy as np
import torch
import torch.distributed as dist

from trainer.runtime import Dist, init_distributed

Compute = Callable[[int, int], dict[str, np.ndarray]]


@contextlib.contextmanager
def session(device: str = "auto") -> Iterator[tuple[Dist, torch.device]]:
    """``(Dist, device)`` for this process; joins torchrun's process group (WORLD_SIZE > 1) and
    leaves it on exit. Nested sessions share the outer group (a CLI looping over run
    directories joins once), so only the outermost one destroys it."""
    if dist.is_available() and dist.is_initialized():
        yield _current()
        return
    ctx, dev = init_distributed(device)
    try:
        yield ctx, dev
    finally:
        if ctx.world > 1:
            dist.destroy_process_group()


def _current() -> tuple[Dist, torch.device]:
    local = int(os.environ.get("LOCAL_RANK", "0"))
    dev = torch.device(f"cuda:{local}") if dist.get_backend() == "nccl" else torch.device("cpu")
    return Dist(dist.get_rank(), dist.get_world_size(), local), dev


def shard_bounds(n: int, rank: int, world: int) -> tuple[int, int]:
    """Rank ``rank``'s contiguous slice ``[start, stop)`` of ``range(n)``; sizes differ by at most 1."""
    return rank * n // world, (rank + 1) * n // world


def map_shards(n: int, compute: Compute, ctx: Dist) -> dict[str, np.ndarray] | None:
    """Run ``compute(start, stop)`` on this rank's shard of ``range(n)``; gather on rank 0.

    ``compute`` returns arrays whose first dimension is ``stop - start``; every rank must
    return the same names, dtypes and row shapes. Rank 0 gets ``{name: array (n, ...)}`` in
    index order, other ranks None. A rank whose shard is empty (n < world) computes nothing.
    """
    if n <= 0:
        raise ValueError("nothing to compute: the index range is empty")
    start, stop = shard_bounds(n, ctx.rank, ctx.world)
    local = compute(start, stop) if stop > start else None
    if ctx.world == 1:
        return local
    return _gather_to_main(local, n, ctx)


def _layout(arrays: dict[str, np.ndarray] | None) -> dict[str, tuple[str, tuple[int, ...]]] | None:
    """``{name: (dtype, row shape)}`` of a shard, or None for an empty one."""
    if arrays is None:
        return None
    return {k: (np.asarray(v).dtype.str, tuple(np.shape(v)[1:])) for k, v in sorted(arrays.items())}


def _comm_device() -> torch.device:
    """Where tensors must live for the group's backend: the current GPU for nccl, else the CPU."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _gather_to_main(local: dict[str, np.ndarray] | None, n: int, ctx: Dist) -> dict[str, np.ndarray] | None:
    """Rank 0: ``{name: array (n, ...)}`` from every rank's shard (``local``: ``(stop - start, ...)``
    arrays, None for an empty shard), received in place; other ranks send theirs and get None."""
    layouts: list = [None] * ctx.world
    dist.all_gather_object(layouts, _layout(local))
    known = [x for x in layouts if x is not None]  # the last rank's shard is never empty
    if any(x != known[0] for x in known):
        raise ValueError(f"ranks computed differently shaped results: {layouts}")
    dev = _comm_device()
    if not ctx.is_main:
        for name in known[0] if local is not None else ():
            dist.send(torch.from_numpy(np.ascontiguousarray(local[name])).to(dev), dst=0)
        if dev.type == "cuda":  # nccl sends are asynchronous: finish them before the caller may leave the group
            torch.cuda.synchronize(dev)
        return None
    out = {name: np.empty((n, *shape), dtype=dtype) for name, (dtype, shape) in known[0].items()}
    for rank, layout in enumerate(layouts):
        if layout is None:
            continue
        start, stop = shard_bounds(n, rank, ctx.world)
        for name, rows in out.items():
            if rank == 0:
                rows[start:stop] = local[name]
            elif dev.type == "cpu":
                dist.recv(torch.from_numpy(rows[start:stop]), src=rank)  # straight into the result
            else:
                staging = torch.empty(rows[start:stop].shape, dtype=torch.from_numpy(rows[:0]).dtype, device=dev)
                dist.recv(staging, src=rank)
                rows[start:stop] = staging.cpu().numpy()
    return out
