"""What every loss shares: the registry of losses by name, and reading a target whose pixels may be unlabelled.

A loss takes logits (B, C, H, W) and a channel-first target whose channel 0 holds the class index (ISBI:
0 = membrane, 1 = interior); a loss that needs more (``border_ce``: a weight map) names the extra inputs and the
transforms that make and pack them in its :class:`Loss` entry, so a bundle's training pipeline asks the loss.

Sparse labels: a target pixel of class :data:`~emseg.data.painted.UNLABELLED` (-1, not painted) enters no loss.
A loss that needs every pixel refuses a sparse target (:func:`dense_only`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from emseg.data.painted import UNLABELLED


@dataclass(frozen=True)
class Loss:
    """A loss by name: how to build it, and what its target needs beyond the class index."""

    name: str
    build: Callable[[], nn.Module]
    sparse: bool  # whether it takes painted (sparse) labels
    extra_keys: Sequence[str] = ()  # data keys carried through cropping and augmentation, packed into the target
    prepare: Callable[[], list] = field(default=list)  # deterministic transforms that make the extra keys
    pack: Callable[[], list] = field(default=list)  # transforms that pack them into the target's channels


LOSSES: dict[str, Loss] = {}  # name -> entry, in the order the loss modules register


def register(name: str, sparse: bool, **extra) -> Callable:
    """Class decorator (or factory decorator) registering a loss under ``name``."""
    def add(build):
        LOSSES[name] = Loss(name, build, sparse, **extra)
        return build
    return add


def class_indices(target: torch.Tensor) -> torch.Tensor:
    return target[:, 0].long()


def is_sparse(target: torch.Tensor) -> bool:
    """Whether ``target`` has unlabelled pixels (class :data:`UNLABELLED`)."""
    return bool((target[:, 0] < 0).any())


def dense_only(name: str, target: torch.Tensor) -> None:
    if is_sparse(target):
        sparse = ", ".join(sorted(n for n, entry in LOSSES.items() if entry.sparse))
        raise ValueError(f"loss {name} needs every pixel labelled, but the labels have unlabelled (not painted) "
                         f"pixels; choose --loss_name {sparse} for sparse labels")


def cross_entropy(logits: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over labelled pixels; 0 (with a gradient of zeros) for a batch with none labelled, e.g.
    a semi-supervised batch of unlabelled slices only."""
    if not bool((classes != UNLABELLED).any()):
        return logits.sum() * 0.0
    return F.cross_entropy(logits, classes, ignore_index=UNLABELLED)
