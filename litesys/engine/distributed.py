"""Tensor-parallel process groups under ``torchrun``: the world as data-parallel replicas of ``tp`` ranks.

torchrun starts one process per GPU (per CPU rank on CPU) and sets RANK / WORLD_SIZE / LOCAL_RANK /
MASTER_ADDR / MASTER_PORT in each. With ``world = replicas * tp`` processes, global ranks
``[r * tp, (r + 1) * tp)`` form replica ``r``: they hold one copy of the model between them (tensor
parallel) and generate its share of the work; replicas never talk to each other. So 8 GPUs with
``tp=2`` are 4 replicas of 2 GPUs each. Consecutive ranks share a node under torchrun, so a replica's
all-reduces stay on the node's NVLink as long as ``tp`` divides ``--nproc_per_node``.
"""
from __future__ import annotations

import atexit
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from litesys.attention.sparse.common import Heads
from litesys.models.layers import Dist

_groups: dict[int, object] = {}  # tp -> this process's replica group (new_group is collective: make each once)
_kv_groups: dict[tuple[int, int], object] = {}  # (tp, ranks per KV head) -> this process's KV-sharing group


@dataclass(frozen=True)
class Layout:
    """Where this process sits: global ``rank`` of ``world``, in replica ``replica`` at position ``tp_rank``."""

    rank: int
    world: int
    tp: int
    local_rank: int = 0

    @property
    def replica(self) -> int:
        return self.rank // self.tp

    @property
    def num_replicas(self) -> int:
        return self.world // self.tp

    @property
    def tp_rank(self) -> int:
        return self.rank % self.tp


def layout(tp: int) -> Layout:
    """This process's place for tensor-parallel size ``tp``; ValueError (one line) on a launch that cannot work."""
    if tp < 1:
        raise ValueError(f"tensor_parallel_size must be >= 1, got {tp}")
    if "WORLD_SIZE" not in os.environ and not dist.is_initialized():
        if tp > 1:
            raise ValueError(f"tensor_parallel_size={tp} needs one process per rank: launch with torchrun, e.g. "
                             f"torchrun --nproc_per_node {tp} <script> ... (WORLD_SIZE is not set)")
        return Layout(0, 1, 1)
    if dist.is_initialized():
        rank, world = dist.get_rank(), dist.get_world_size()
    else:
        rank, world = int(os.environ.get("RANK", "0")), int(os.environ["WORLD_SIZE"])
    if world % tp:
        raise ValueError(f"tensor_parallel_size {tp} does not divide the world size {world} (processes started "
                         f"by torchrun); start a multiple of {tp} processes or pick a size dividing {world}")
    return Layout(rank, world, tp, int(os.environ.get("LOCAL_RANK", "0")))


def init_tensor_parallel(tp: int, device: torch.device | str) -> Dist:
    """Join (or create) the default process group and return this rank's replica as a ``Dist``.

    nccl on CUDA, gloo on CPU. On CUDA the current device becomes ``device``'s index or LOCAL_RANK, so a plain
    ``device="cuda"`` lands each rank on its own GPU.
    """
    lay = layout(tp)
    if lay.world == 1 and "WORLD_SIZE" not in os.environ and not dist.is_initialized():
        return Dist()  # plain python, tp 1: nothing to join
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.set_device(device.index if device.index is not None else lay.local_rank)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        # a process that exits with its group alive can abort in the backend's threads at interpreter teardown
        # ("terminate called without an active exception"): tear the group down first
        atexit.register(shutdown)
    if tp == 1:
        return Dist()
    if tp not in _groups:
        if lay.num_replicas == 1:
            _groups[tp] = None  # the default group: no extra communicator
        else:
            # every rank must create every group, in the same order; each keeps its own
            for r in range(lay.num_replicas):
                g = dist.new_group(list(range(r * tp, (r + 1) * tp)))
                if r == lay.replica:
                    _groups[tp] = g
    return Dist(rank=lay.tp_rank, world=tp, group=_groups[tp])


def agree_min(d: Dist, value: int, device: torch.device | str) -> int:
    """The smallest ``value`` over the replica's ranks.

    Used for the KV pool size: GPUs of a replica can have different free memory, and ranks with different
    pools would preempt differently, run different batches, and hang in mismatched collectives.
    """
    if d.world == 1:
        return value
    t = torch.tensor([value], dtype=torch.int64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MIN, group=d.group)
    return int(t.item())


def kv_group_comm(d: Dist, share: int) -> Dist:
    """The ``share`` consecutive tp-ranks holding the same KV heads as this one (KV heads replicated when there are
    fewer than ranks: ``qwen3_dist.kv_head_shard``), as a ``Dist`` whose ``all_reduce`` sums over them only."""
    if share == d.world:
        return d  # every rank of the replica holds the same KV head: the replica's own group
    key = (d.world, share)
    if key not in _kv_groups:
        lay = layout(d.world)
        for r in range(lay.num_replicas):  # every process creates every group, in the same order
            for j in range(d.world // share):
                g = dist.new_group([r * d.world + j * share + i for i in range(share)])
                if r == lay.replica and j == d.rank // share:
                    _kv_groups[key] = g
    return Dist(rank=d.rank % share, world=share, group=_kv_groups[key])


def sparse_heads(model) -> Heads:
    """This rank's heads for the sparse methods: global offsets and, when its KV groups' query heads are spread
    over several ranks, the communicator that completes group scores over them (None at TP 1 or whole groups:
    no collective at all)."""
    cfg, d = model.cfg, model.dist
    n_q, n_kv = model.num_q_heads, model.num_kv_heads
    group = cfg.num_heads // cfg.num_kv_heads
    comm = kv_group_comm(d, group // (n_q // n_kv)) if d.world > 1 and n_q // n_kv < group else None
    return Heads(n_q, n_kv, cfg.num_layers, q_head_start=model.q_heads[0], kv_head_start=model.kv_heads[0],
                 group=comm, group_size=group)


def shutdown() -> None:
    """Destroy the process group (and replica groups) at the end of a clean run; a no-op when none exists."""
    if dist.is_initialized():
        dist.destroy_process_group()
    _groups.clear()
    _kv_groups.clear()
