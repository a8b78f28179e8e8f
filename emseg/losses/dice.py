"""``dice`` and ``dice_ce``: MONAI's Dice (+ cross-entropy) over the batch, unlabelled pixels left out."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from monai.losses import DiceCELoss, DiceLoss
from torch import nn

from emseg.losses.base import cross_entropy, is_sparse, register


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
            loss = loss + cross_entropy(logits, classes[:, 0].long())
        return loss


register("dice", sparse=True)(lambda: SparseDiceCE(ce=False))
register("dice_ce", sparse=True)(lambda: SparseDiceCE(ce=True))
