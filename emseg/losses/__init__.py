"""Losses by name, one module per loss, each registering itself (:data:`LOSSES`) where it is defined.

| name | module | sparse labels |
|---|---|---|
| ``ce`` | ``ce`` | yes: mean over labelled pixels |
| ``dice``, ``dice_ce`` | ``dice`` | yes: unlabelled pixels count in no sum (exactly zero gradient) |
| ``dice_ce_cldice`` | ``cldice`` | no |
| ``border_ce`` | ``border_ce`` (with its weight map and the transforms that make it) | no |
| ``bce_jaccard`` | ``bce_jaccard`` | no |

All take logits (B, C, H, W) and a channel-first target whose channel 0 holds the class index; a loss that reads
more names it in its entry (:class:`~emseg.losses.base.Loss`), and the training pipeline asks for it
(:func:`emseg.transforms.training_transforms`). A new loss is one module here and one import below.
"""

from __future__ import annotations

from typing import Sequence

from monai.losses import DeepSupervisionLoss
from torch import nn

from emseg.losses import bce_jaccard, border_ce, ce, cldice, dice  # noqa: F401  (each registers its loss)
from emseg.losses.base import LOSSES, Loss, is_sparse
from emseg.losses.bce_jaccard import BCEJaccardLoss
from emseg.losses.border_ce import BorderWeightd, BorderWeightedCrossEntropy, border_weight_map
from emseg.losses.ce import CrossEntropy
from emseg.losses.cldice import DiceCEclDice
from emseg.losses.dice import SparseDiceCE

__all__ = ["LOSSES", "BCEJaccardLoss", "BorderWeightd", "BorderWeightedCrossEntropy", "CrossEntropy",
           "DiceCEclDice", "Loss", "SparseDiceCE", "border_weight_map", "build_loss", "get_loss",
           "is_sparse"]


def get_loss(name: str) -> Loss:
    """The entry of loss ``name``; one clear error for an unknown name."""
    if name not in LOSSES:
        raise ValueError(f"unknown loss '{name}'; choose from {', '.join(sorted(LOSSES))} "
                         "(the bundle key loss_name chooses it, e.g. --loss_name dice_ce)")
    return LOSSES[name]


def build_loss(name: str, deep_supervision_weights: Sequence[float] | None = None) -> nn.Module:
    """Loss ``name`` (one of :data:`LOSSES`); with ``deep_supervision_weights`` a weighted sum over
    the network's list of outputs (MONAI's DeepSupervisionLoss, which resizes the target to each head)."""
    loss = get_loss(name).build()
    if deep_supervision_weights is not None:
        loss = DeepSupervisionLoss(loss, weight_mode="exp", weights=list(deep_supervision_weights))
    return loss
