"""``dice_ce_cldice``: Dice + cross-entropy plus clDice of the membrane class (needs every pixel labelled)."""

from __future__ import annotations

import torch
from monai.losses import DiceCELoss, SoftclDiceLoss
from torch import nn

from emseg.losses.base import dense_only, register


@register("dice_ce_cldice", sparse=False)
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
        self.dice_ce = DiceCELoss(to_onehot_y=True, softmax=True, batch=True)
        self.cldice = SoftclDiceLoss(iter_=iterations)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        dense_only("dice_ce_cldice", target)
        classes = target[:, :1]
        membrane = torch.softmax(logits, dim=1)[:, :1]
        return self.dice_ce(logits, classes) + self.weight * self.cldice(membrane, (classes == 0).to(membrane.dtype))
