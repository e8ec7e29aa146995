"""Tensor parallelism's process side: this rank's place, the process groups under torchrun, the launch checks,
and the agreements the ranks of a replica must reach (pool size, heads for the sparse methods).

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

from litesys.attention.sparse.common import AttnShape

_groups: dict[int, object] = {}  # tp -> this process's replica group (new_group is collective: make each once)
_kv_groups: dict[tuple[int, int], object] = {}  # (tp, ranks per KV head) -> this process's KV-sharing group


@dataclass
class Dist:
    """Tensor-parallel position of this process in its replica. ``world == 1``: no collectives at all."""

    rank: int = 0
    world: int = 1
    group: object = None

    def all_reduce(self, x: torch.Tensor) -> torch.Tensor:
        if self.world > 1:
            dist.all_reduce(x, group=self.group)
        return x

    def all_gather_last(self, x: torch.Tensor) -> torch.Tensor:
        """Concatenate each rank's ``x`` along the last dim (rank order)."""
        if self.world == 1:
            return x
        parts = [torch.empty_like(x) for _ in range(self.world)]
        dist.all_gather(parts, x.contiguous(), group=self.group)
        return torch.cat(parts, dim=-1)

    def broadcast_first(self, x: torch.Tensor) -> torch.Tensor:
        """tp-rank 0's ``x`` on every rank, in place (sampled tokens: one decision for the whole replica)."""
        if self.world > 1:
            dist.broadcast(x, group=self.group, group_src=0)
        return x

    def split(self, n: int, what: str) -> tuple[int, int]:
        """[start, stop) of this rank's share of ``n`` items (heads, features, vocab rows)."""
        if n % self.world:
            raise ValueError(f"{what} ({n}) is not divisible by the tensor-parallel size {self.world}; "
                             "pick a tensor-parallel size that divides it")
        per = n // self.world
        return self.rank * per, (self.rank + 1) * per


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


def check_launch(tp: int, world: int | None, flag: str = "tensor_parallel_size", script: str = "<script>") -> None:
    """The launch checks of every tensor-parallel entry point (``LLM``, the ``*_dist.py`` scripts): a ValueError
    of one line naming ``flag``. ``world``: the processes torchrun started, None when not under torchrun."""
    if tp < 1:
        raise ValueError(f"{flag} must be >= 1, got {tp}")
    if world is None:
        if tp > 1:
            raise ValueError(f"{flag} {tp} needs one process per rank: launch with torchrun --nproc_per_node {tp} "
                             f"{script} ...")
        return
    if world % tp:
        raise ValueError(f"{flag} {tp} does not divide the world size {world} (processes started by torchrun); "
                         f"start a multiple of {tp} processes (--nproc_per_node x nodes) or pick a {flag} "
                         f"dividing {world}")


def layout(tp: int) -> Layout:
    """This process's place for tensor-parallel size ``tp``; ValueError (one line) on a launch that cannot work."""
    launched = "WORLD_SIZE" in os.environ or dist.is_initialized()
    if not launched:
        check_launch(tp, None)
        return Layout(0, 1, 1)
    if dist.is_initialized():
        rank, world = dist.get_rank(), dist.get_world_size()
    else:
        rank, world = int(os.environ.get("RANK", "0")), int(os.environ["WORLD_SIZE"])
    check_launch(tp, world)
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
    fewer than ranks: ``models.tp.kv_head_shard``), as a ``Dist`` whose ``all_reduce`` sums over them only."""
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


def sparse_heads(model) -> AttnShape:
    """This rank's heads for the sparse methods: global offsets and, when its KV groups' query heads are spread
    over several ranks, the communicator that completes group scores over them (None at TP 1 or whole groups:
    no collective at all). A single-device executor has no ``dist``: all heads, one rank."""
    cfg, d = model.cfg, getattr(model, "dist", None) or Dist()
    n_q, n_kv = model.num_q_heads, model.num_kv_heads
    group = cfg.num_heads // cfg.num_kv_heads
    comm = kv_group_comm(d, group // (n_q // n_kv)) if d.world > 1 and n_q // n_kv < group else None
    return AttnShape(n_q, n_kv, cfg.num_layers, q_head_start=model.q_heads[0], kv_head_start=model.kv_heads[0],
                 group=comm, group_size=group)


def shutdown() -> None:
    """Destroy the process group (and replica groups) at the end of a clean run; a no-op when none exists."""
    if dist.is_initialized():
        dist.destroy_process_group()
    _groups.clear()
    _kv_groups.clear()
