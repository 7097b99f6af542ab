"""Many processes, one scan: torch.distributed shares the units, the store keeps them.

`torchrun` starts the processes and sets RANK, WORLD_SIZE, LOCAL_RANK and LOCAL_WORLD_SIZE;
`Ranks.from_env` joins the group (NCCL on GPUs, Gloo on the CPU). Each process computes its
fixed share of the units still missing and writes them to the shared store; rank 0 alone
shows progress, then merges and writes the run folder. Nothing here decides a number: the
units are the same whatever the number of processes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch

from ..errors import LangheadsError

# Ranks that finish their share wait at a barrier for the slowest one: allow a long scan.
WAIT = timedelta(hours=float(os.environ.get("LANGHEADS_WAIT_HOURS", "48")))


@dataclass
class Ranks:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    local_world: int = 1
    joined: bool = False  # this object initialised the process group (and will destroy it)

    @property
    def main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_env(cls, device: str = "cpu") -> Ranks:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world == 1:
            return cls()
        import torch.distributed as dist

        ranks = cls(
            int(os.environ["RANK"]),
            world,
            int(os.environ.get("LOCAL_RANK", "0")),
            int(os.environ.get("LOCAL_WORLD_SIZE", "1")),
        )
        if not dist.is_initialized():
            backend = "nccl" if device.startswith("cuda") else "gloo"
            dist.init_process_group(backend, timeout=WAIT)
            ranks.joined = True
        return ranks

    def close(self) -> None:
        if self.joined:
            import torch.distributed as dist

            dist.destroy_process_group()
            self.joined = False

    def barrier(self) -> None:
        if self.world > 1:
            import torch.distributed as dist

            dist.barrier()

    def from_main(self, value):
        """Rank 0's `value` on every rank (any picklable object)."""
        if self.world == 1:
            return value
        import torch.distributed as dist

        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def share(self, costs: list[float]) -> range:
        """This rank's contiguous share of items with these costs, cut so each rank gets about
        the same total (contiguous: consecutive units of one batch share its trace)."""
        total, bounds, acc, k = sum(costs), [0], 0.0, 1
        for i, c in enumerate(costs):
            acc += c
            while k < self.world and acc >= total * k / self.world:
                bounds.append(i + 1)
                k += 1
        bounds += [len(costs)] * (self.world + 1 - len(bounds))
        return range(bounds[self.rank], bounds[self.rank + 1])

    def device(self, device: str) -> str:
        """One GPU per process: rank r of a machine takes cuda:r (LOCAL_RANK)."""
        if device == "cuda" and self.world > 1:
            if torch.cuda.device_count() < self.local_world:
                raise LangheadsError(
                    f"{self.local_world} processes on this machine but {torch.cuda.device_count()} "
                    "GPUs: start at most one process per GPU, or use --device-map auto"
                )
            torch.cuda.set_device(self.local_rank)
            return f"cuda:{self.local_rank}"
        return device

    def gpu_group(self) -> list[int]:
        """With --device-map auto: the GPUs this process's replica may spread over. A machine's
        GPUs are cut into LOCAL_WORLD_SIZE equal consecutive groups: 8 GPUs and 2 processes
        per machine give ranks 0 and 1 the GPUs 0-3 and 4-7."""
        n = torch.cuda.device_count()
        if n == 0:
            return []
        if n < self.local_world:
            raise LangheadsError(
                f"{self.local_world} processes on this machine but {n} GPUs: start at most one process per GPU"
            )
        size = n // self.local_world
        group = list(range(self.local_rank * size, (self.local_rank + 1) * size))
        torch.cuda.set_device(group[0])  # where NCCL puts this process's messages
        return group
