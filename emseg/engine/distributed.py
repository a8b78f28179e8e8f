"""What ranks of a torchrun training must agree on: one process's value, broadcast to all."""

from __future__ import annotations

from typing import Any

import torch.distributed as dist


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
