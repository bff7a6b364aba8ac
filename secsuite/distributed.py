"""Sharded evaluation over `torch.distributed` (torchrun): which batches a rank owns, and merging results back.

The unit of sharding is the batch, not the example: attacks seed their random generator once per
`attack()` call, so a batch evaluated on any rank draws exactly the noise it draws in a
single-process run. Batch i belongs to rank i % world_size; the merged, reordered result is
therefore bitwise the single-process result (same hardware and thread settings).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, TypeVar

import torch

T = TypeVar("T")


@dataclass
class World:
    rank: int = 0
    world_size: int = 1
    owns_group: bool = False

    @classmethod
    def from_env(cls) -> "World":
        """Join the process group torchrun describes (RANK, WORLD_SIZE, MASTER_ADDR/PORT), or an existing one."""
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            return cls(dist.get_rank(), dist.get_world_size())
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        if world_size <= 1:
            return cls()
        dist.init_process_group("gloo")
        world = cls(dist.get_rank(), dist.get_world_size(), owns_group=True)
        if not world.is_main:
            # One progress display and one log, from rank 0.
            os.environ["SECSUITE_PROGRESS"] = "0"
        return world

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def device(self) -> str | None:
        """This rank's GPU under torchrun (LOCAL_RANK), else None for the default device."""
        if self.distributed and torch.cuda.is_available():
            return f"cuda:{int(os.environ.get('LOCAL_RANK', '0')) % torch.cuda.device_count()}"
        return None

    def mine(self, items: list[T]) -> list[T]:
        return items[self.rank :: self.world_size]

    def gather(self, part: dict) -> dict:
        """Union of every rank's dict, on every rank."""
        if not self.distributed:
            return part
        import torch.distributed as dist

        parts: list[Any] = [None] * self.world_size
        dist.all_gather_object(parts, part)
        return {key: value for p in parts for key, value in p.items()}

    def broadcast(self, obj: T) -> T:
        """Rank 0's value, on every rank."""
        if not self.distributed:
            return obj
        import torch.distributed as dist

        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def share_weights(self, module: torch.nn.Module) -> None:
        """Give every rank rank 0's parameters and buffers, so all ranks evaluate the very same model."""
        if not self.distributed:
            return
        import torch.distributed as dist

        # Through CPU copies: gloo is the one backend that works on every machine, with or without GPUs.
        for tensor in module.state_dict().values():
            host = tensor.detach().cpu()
            dist.broadcast(host, src=0)
            tensor.copy_(host)

    def close(self) -> None:
        if self.owns_group:
            import torch.distributed as dist

            dist.destroy_process_group()
            self.owns_group = False
            self.world_size = 1
