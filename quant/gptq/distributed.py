"""torch.distributed for GPTQ: which rank owns which module, and sharing the results.

Launched by `torchrun --nproc-per-node N quantgate quantize --method gptq ...`: torchrun sets
RANK / WORLD_SIZE / MASTER_ADDR; the process group is gloo on CPU, NCCL when CUDA is there.
Every rank runs the layer's forward on every calibration row (so routing, and every Hessian,
sees its rows in the same order whatever N is); the quantizable modules of the layer, in groups
that read the same input (quant.gptq.run.input_groups), are dealt over the ranks by estimated
cost (costliest first, to the least loaded rank), each rank
accumulates Hessians and runs GPTQ for its own only, and the results are all-gathered so every
rank can run the quantized layer forward. Rank 0 writes the checkpoint.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Ranks:
    rank: int
    world: int

    @property
    def writer(self) -> bool:
        return self.rank == 0

    def owners(self, costs: list[float]) -> list[int]:
        """The rank of each work item (in their order): the costliest first, each to the least loaded rank
        (the lowest on a tie). Deterministic in the costs and the world size only."""
        load = [0.0] * self.world
        owner = [0] * len(costs)
        for item in sorted(range(len(costs)), key=lambda i: (-costs[i], i)):
            rank = min(range(self.world), key=lambda r: (load[r], r))
            owner[item] = rank
            load[rank] += costs[item]
        return owner

    def deal(self, costs: list[float]) -> list[bool]:
        """Which of the work items (in their order) this rank takes (`owners`)."""
        return [o == self.rank for o in self.owners(costs)]

    def gather(self, mine: dict) -> dict:
        """Merge every rank's dict (keys are disjoint) into one, on every rank."""
        if self.world == 1:
            return dict(mine)
        parts: list[dict | None] = [None] * self.world
        dist.all_gather_object(parts, mine)
        merged: dict = {}
        for part in parts:
            merged.update(part or {})
        return merged

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()

    def broadcast(self, value: object) -> object:
        """Rank 0's value on every rank (e.g. an error message)."""
        if self.world == 1:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]


def init_ranks() -> Ranks:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Ranks(rank=0, world=1)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return Ranks(rank=dist.get_rank(), world=dist.get_world_size())


def close_ranks(ranks: Ranks) -> None:
    if ranks.world > 1 and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
