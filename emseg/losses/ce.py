"""``ce``: pixel-wise cross-entropy, mean over labelled pixels (sparse labels welcome)."""

from __future__ import annotations

import torch
from torch import nn

from emseg.losses.base import class_indices, cross_entropy, register


@register("ce", sparse=True)
class CrossEntropy(nn.Module):
    """Pixel-wise cross-entropy (binary cross-entropy for the two classes), mean over labelled pixels."""

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return cross_entropy(logits, class_indices(target))
