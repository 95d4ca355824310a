"""torch.distributed, as torchrun starts it: one process per GPU (NCCL) or per CPU share (gloo).

A single process is world size 1 and nothing here does any communication.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from ..errors import UserError


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.size > 1


def init_world(device_setting: str) -> tuple[World, str]:
    """Join torchrun's process group when launched by it; return the world and this process's device."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return World(), device_setting
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = device_setting.startswith("cuda") or (device_setting == "auto" and torch.cuda.is_available())
    if use_cuda:
        if not torch.cuda.is_available():
            raise UserError(f"device: got {device_setting!r} under torchrun, but no CUDA GPU is usable here")
        torch.cuda.set_device(local_rank)
        device_setting = f"cuda:{local_rank}"
    else:
        local_size = int(os.environ.get("LOCAL_WORLD_SIZE", size))
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // local_size))  # share the cores, do not fight
        device_setting = "cpu"
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return World(rank, size, local_rank), device_setting


def sum_across(world: World, values: list[float], device) -> list[float]:
    if not world.active:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def broadcast_object(world: World, value):
    if not world.active:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier(world: World) -> None:
    """Every rank waits here until all have arrived (e.g. until rank 0 has written best.pt)."""
    if world.active:
        dist.barrier()


def sync_buffers(world: World, model) -> None:
    """BatchNorm running statistics drift apart on each rank's own data: take rank 0's before evaluating."""
    if world.active:
        for buffer in model.buffers():
            dist.broadcast(buffer, src=0)


def ranks_agree(world: World, model) -> bool:
    """Do all ranks hold the same weights? A cheap checksum, gathered to every rank."""
    if not world.active:
        return True
    local = torch.stack([p.detach().double().sum() for p in model.parameters()]).sum().item()
    gathered = [None] * world.size
    dist.all_gather_object(gathered, local)
    return all(g == gathered[0] for g in gathered)


def shutdown(world: World) -> None:
    if world.active and dist.is_initialized():
        dist.destroy_process_group()
