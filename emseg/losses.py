"""Losses for two-class (membrane, interior) EM segmentation networks with softmax outputs.

All take logits (B, C, H, W) and a channel-first target whose channel 0 holds the class
index (ISBI: 0 = membrane, 1 = interior). :class:`BorderWeightedCrossEntropy` reads the U-Net
weight map from target channel 1 (see ``emseg.transforms.BorderWeightd``); the other
losses ignore extra target channels. Select one by name with :func:`build_loss`.

Sparse labels: a target pixel of class :data:`~emseg.data.painted.UNLABELLED` (-1, not painted) enters no loss.
``ce``, ``dice`` and ``dice_ce`` leave it out (cross-entropy averages over labelled pixels; Dice counts only them),
so it gets exactly zero gradient; a target with every pixel labelled gives the same value as before. The losses
that need every pixel (``border_ce``'s weight map, clDice's skeletons, ``bce_jaccard``) refuse a sparse target.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from monai.losses import DeepSupervisionLoss, DiceCELoss, DiceLoss, SoftclDiceLoss
from torch import nn

from emseg.data.painted import UNLABELLED

LOSSES = ("ce", "dice", "dice_ce", "dice_ce_cldice", "border_ce", "bce_jaccard")


def _classes(target: torch.Tensor) -> torch.Tensor:
    return target[:, 0].long()


def is_sparse(target: torch.Tensor) -> bool:
    """Whether ``target`` has unlabelled pixels (class :data:`UNLABELLED`)."""
    return bool((target[:, 0] < 0).any())


def _dense_only(name: str, target: torch.Tensor) -> None:
    if is_sparse(target):
        raise ValueError(f"loss {name} needs every pixel labelled, but the labels have unlabelled (not painted) "
                         f"pixels; choose --loss_name dice_ce, dice or ce for sparse labels")


class CrossEntropy(nn.Module):
    """Pixel-wise cross-entropy (binary cross-entropy for the two classes), mean over labelled pixels."""

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return _cross_entropy(logits, _classes(target))


def _cross_entropy(logits: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over labelled pixels; 0 (with a gradient of zeros) for a batch with none labelled, e.g.
    a semi-supervised batch of unlabelled slices only."""
    if not bool((classes != UNLABELLED).any()):
        return logits.sum() * 0.0
    return F.cross_entropy(logits, classes, ignore_index=UNLABELLED)


class SparseDiceCE(nn.Module):
    """MONAI's Dice (+ cross-entropy) over the batch for targets that may have unlabelled pixels.

    With every pixel labelled it is MONAI's ``DiceCELoss``/``DiceLoss`` itself. Otherwise the softmax and the
    one-hot target are zeroed at unlabelled pixels before MONAI's Dice (so they count in no intersection and no
    sum) and cross-entropy ignores them: their gradient is exactly zero.
    """

    def __init__(self, ce: bool = True) -> None:
        super().__init__()
        self.ce = ce
        self.dense = DiceCELoss(to_onehot_y=True, softmax=True, batch=True) if ce else \
            DiceLoss(to_onehot_y=True, softmax=True, batch=True)
        self.dice = DiceLoss(batch=True)  # on masked probabilities and one-hot targets

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        classes = target[:, :1]
        if not is_sparse(target):
            return self.dense(logits, classes)
        labelled = (classes >= 0).to(logits.dtype)
        probabilities = torch.softmax(logits, dim=1) * labelled
        onehot = F.one_hot(classes[:, 0].long().clamp_min(0), logits.shape[1]).permute(0, 3, 1, 2).to(logits.dtype)
        loss = self.dice(probabilities, onehot * labelled)
        if self.ce:
            loss = loss + _cross_entropy(logits, classes[:, 0].long())
        return loss


class BorderWeightedCrossEntropy(nn.Module):
    """Cross-entropy weighted per pixel by the U-Net map w(x) carried in target channel 1.

    The weighted sum is divided by the sum of weights, so the loss of a perfect
    prediction is 0 and its scale does not depend on w0.
    """

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        _dense_only("border_ce", target)
        if target.shape[1] < 2:
            raise ValueError("border_ce needs the weight map in target channel 1 (add BorderWeightd to the transforms)")
        weight = target[:, 1]
        loss = F.cross_entropy(logits, _classes(target), reduction="none")
        return (loss * weight).sum() / weight.sum().clamp_min(1e-8)


class BCEJaccardLoss(nn.Module):
    """TernausNet's loss: BCE - log(soft Jaccard) of the interior probability (Iglovikov & Shvets 2018)."""

    def __init__(self, jaccard_weight: float = 1.0, eps: float = 1e-7) -> None:
        super().__init__()
        self.jaccard_weight, self.eps = jaccard_weight, eps

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        _dense_only("bce_jaccard", target)
        classes = _classes(target)
        bce = F.cross_entropy(logits, classes)
        interior = torch.softmax(logits, dim=1)[:, 1]
        truth = (classes == 1).float()
        intersection = (interior * truth).sum()
        union = interior.sum() + truth.sum() - intersection
        jaccard = (intersection + self.eps) / (union + self.eps)
        return bce - self.jaccard_weight * torch.log(jaccard)


def _dice_ce() -> DiceCELoss:
    """MONAI's Dice + cross-entropy over the batch, from logits and a class-index target."""
    return DiceCELoss(to_onehot_y=True, softmax=True, batch=True)


class DiceCEclDice(nn.Module):
    """Dice + cross-entropy plus ``weight`` x clDice of the membrane class (Shit et al. 2021).

    clDice compares soft skeletons (MONAI's ``SoftclDiceLoss``): it falls where the predicted
    membrane misses the true membrane's centre line (a gap that merges two cells) or draws a
    centre line where there is no membrane (a split). ``iterations`` must reach the half-width of
    the thin membranes where gaps occur (MONAI's default 3; 5 costs twice the time, 0.24 s against
    0.13 s per batch of 8 256x256 patches on this CPU).
    """

    def __init__(self, weight: float = 0.5, iterations: int = 3) -> None:
        super().__init__()
        self.weight = weight
        self.dice_ce = _dice_ce()
        self.cldice = SoftclDiceLoss(iter_=iterations)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        _dense_only("dice_ce_cldice", target)
        classes = target[:, :1]
        membrane = torch.softmax(logits, dim=1)[:, :1]
        return self.dice_ce(logits, classes) + self.weight * self.cldice(membrane, (classes == 0).to(membrane.dtype))


def build_loss(name: str, deep_supervision_weights: Sequence[float] | None = None) -> nn.Module:
    """Loss ``name`` (one of :data:`LOSSES`); with ``deep_supervision_weights`` a weighted sum over
    the network's list of outputs (MONAI's DeepSupervisionLoss, which resizes the target to each head)."""
    losses = {
        "ce": CrossEntropy,
        "dice": lambda: SparseDiceCE(ce=False),
        "dice_ce": lambda: SparseDiceCE(ce=True),
        "dice_ce_cldice": DiceCEclDice,
        "border_ce": BorderWeightedCrossEntropy,
        "bce_jaccard": BCEJaccardLoss,
    }
    if name not in losses:
        raise ValueError(f"unknown loss '{name}'; choose from {', '.join(LOSSES)} "
                         "(the bundle key loss_name chooses it, e.g. --loss_name dice_ce)")
    loss = losses[name]()
    if deep_supervision_weights is not None:
        loss = DeepSupervisionLoss(loss, weight_mode="exp", weights=list(deep_supervision_weights))
    return loss
