"""``bce_jaccard``: TernausNet's loss (needs every pixel labelled)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from emseg.losses.base import class_indices, dense_only, register


@register("bce_jaccard", sparse=False)
class BCEJaccardLoss(nn.Module):
    """TernausNet's loss: BCE - log(soft Jaccard) of the interior probability (Iglovikov & Shvets 2018)."""

    def __init__(self, jaccard_weight: float = 1.0, eps: float = 1e-7) -> None:
        super().__init__()
        self.jaccard_weight, self.eps = jaccard_weight, eps

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        dense_only("bce_jaccard", target)
        classes = class_indices(target)
        bce = F.cross_entropy(logits, classes)
        interior = torch.softmax(logits, dim=1)[:, 1]
        truth = (classes == 1).float()
        intersection = (interior * truth).sum()
        union = interior.sum() + truth.sum() - intersection
        jaccard = (intersection + self.eps) / (union + self.eps)
        return bce - self.jaccard_weight * torch.log(jaccard)
