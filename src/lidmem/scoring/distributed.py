"""Data-parallel scale-out of :func:`lidmem.scoring.score_dataset` with torch.distributed conventions.

Scoring needs no gradient synchronisation: each worker scores whole shards on its own and
writes their files to a shared output folder. A worker learns who it is from the environment
variables that ``torchrun`` (ships with torch) and ``accelerate launch`` (which drives
torchrun) set:

- ``RANK``: global index of this worker, ``WORLD_SIZE``: number of workers,
- ``LOCAL_RANK``: index on this machine (picks the GPU ``cuda:LOCAL_RANK``),
- ``MASTER_ADDR`` / ``MASTER_PORT``: the rendezvous, used once at the end for a barrier so that
  rank 0 can merge the shards into one table.

Shard ``i`` goes to rank ``i % WORLD_SIZE`` (round robin: balanced, and independent of how
fast each worker is). Plain ``RANK``/``WORLD_SIZE`` without ``MASTER_ADDR`` also work (e.g. a
job array on a cluster); nobody merges then, run ``lidmem score --merge`` when all are done.
"""

from __future__ import annotations

import datetime as _dt
import os
from collections.abc import Mapping
from dataclasses import dataclass

import torch

from .._validation import check_positive_int

__all__ = ["WorkerInfo", "worker_info", "assign_shards", "default_device", "can_synchronize", "barrier"]


@dataclass(frozen=True)
class WorkerInfo:
    """Who this worker is.

    Attributes
    ----------
    rank : int
        Global index in ``[0, world_size)``.
    world_size : int
        Number of workers.
    local_rank : int
        Index on this machine.
    rendezvous : bool
        True when ``MASTER_ADDR`` and ``MASTER_PORT`` are set (a barrier is possible).
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    rendezvous: bool = False


def _env_int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise ValueError(f"environment variable {name}={raw!r} must be an integer") from exc


def worker_info(*, rank: int | None = None, world_size: int | None = None, env: Mapping[str, str] | None = None) -> WorkerInfo:
    """Read ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` (torchrun / accelerate conventions).

    Explicit ``rank`` / ``world_size`` override the environment. Without any, this is the
    single worker ``WorkerInfo(0, 1, 0)``.

    Raises
    ------
    ValueError
        If ``rank`` is not in ``[0, world_size)``.
    """
    env = os.environ if env is None else env
    ws = check_positive_int(world_size, "world_size") if world_size is not None else _env_int(env, "WORLD_SIZE", 1)
    r = check_positive_int(rank, "rank", minimum=0) if rank is not None else _env_int(env, "RANK", 0)
    if ws < 1 or not (0 <= r < ws):
        raise ValueError(f"rank={r} must lie in [0, world_size={ws}); check RANK and WORLD_SIZE")
    local = _env_int(env, "LOCAL_RANK", 0)
    return WorkerInfo(rank=r, world_size=ws, local_rank=local, rendezvous=bool(env.get("MASTER_ADDR") and env.get("MASTER_PORT")))


def assign_shards(n_shards: int, rank: int, world_size: int) -> list[int]:
    """Shard indices of ``rank``: ``i`` with ``i % world_size == rank`` (disjoint, covering all)."""
    world_size = check_positive_int(world_size, "world_size")
    if not (0 <= rank < world_size):
        raise ValueError(f"rank={rank} must lie in [0, world_size={world_size})")
    return list(range(rank, n_shards, world_size))


def default_device(info: WorkerInfo) -> torch.device:
    """``cuda:LOCAL_RANK`` when CUDA is available (one GPU per worker), else the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda", info.local_rank % torch.cuda.device_count())
    return torch.device("cpu")


def can_synchronize(info: WorkerInfo) -> bool:
    """True when the workers can meet at a barrier (a process group exists or can be formed)."""
    import torch.distributed as dist

    return info.world_size == 1 or (dist.is_available() and (dist.is_initialized() or info.rendezvous))


def barrier(info: WorkerInfo, *, timeout_s: float = 7 * 24 * 3600.0) -> None:
    """Wait until every worker got here.

    Uses the caller's process group when one is initialised (e.g. by Accelerate); otherwise
    forms a ``gloo`` group from ``MASTER_ADDR``/``MASTER_PORT`` (CPU-only, so it works on any
    machine), waits, and destroys it. ``timeout_s`` bounds the wait for slow workers.
    """
    import torch.distributed as dist

    if info.world_size == 1:
        return
    if not dist.is_available():
        raise ValueError("torch.distributed is not available in this torch build; merge with `lidmem score --merge` instead")
    if dist.is_initialized():
        dist.barrier()
        return
    if not info.rendezvous:
        raise ValueError("no rendezvous: set MASTER_ADDR and MASTER_PORT (torchrun does) or merge later with `lidmem score --merge`")
    dist.init_process_group("gloo", rank=info.rank, world_size=info.world_size, timeout=_dt.timedelta(seconds=timeout_s))
    try:
        dist.barrier()
    finally:
        dist.destroy_process_group()
