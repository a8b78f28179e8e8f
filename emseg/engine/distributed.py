"""A torchrun training: each rank's device and process group, which handlers each rank runs, the sampler's epoch,
and what ranks must agree on (one process's value, broadcast to all)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.distributed as dist
from ignite.engine import Engine, Events
from monai.handlers import LrScheduleHandler


def rank() -> int:
    """This process's rank; 0 when not distributed."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def agreed(value: Any) -> Any:
    """Rank 0's ``value`` on every rank (e.g. a measured precision setting, a random run name); ``value`` itself
    when not distributed. Every rank must call it, in the same order."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def device_of_rank(rank: int) -> torch.device:
    """The GPU of ``rank`` (round robin over this machine's GPUs), or the CPU where there is none."""
    if torch.cuda.is_available():
        return torch.device("cuda", rank % torch.cuda.device_count())
    return torch.device("cpu")


def start_process_group() -> None:
    """Join torchrun's process group (NCCL on GPUs, Gloo on CPUs) unless already in it. It must run before anything
    asks for :func:`rank` (a config's ``rank``, ``device``), which is 0 outside the group."""
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")


def handlers_of_rank(handlers: Sequence, rank: int) -> list:
    """The training handlers ``rank`` runs: all on rank 0; on the others only those every rank must run to stay in
    step (the learning-rate schedule, and handlers marked ``every_rank``: validation, weight averaging)."""
    if rank == 0:
        return list(handlers)
    return [h for h in handlers if isinstance(h, LrScheduleHandler) or getattr(h, "every_rank", False)]


def reshuffle_each_epoch(trainer: Engine, sampler) -> None:
    """Give the distributed ``sampler`` the epoch at the start of each, so every epoch shuffles differently."""
    trainer.add_event_handler(Events.EPOCH_STARTED, lambda engine: sampler.set_epoch(engine.state.epoch))
