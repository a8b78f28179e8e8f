"""``border_ce``: the U-Net paper's cross-entropy weighted by the border weight map, with the map itself and the
transforms that make it (before cropping, from the whole slice) and pack it into target channel 1."""

from __future__ import annotations

import math
from typing import Hashable, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from monai.config import KeysCollection
from monai.transforms import ConcatItemsd, MapTransform
from scipy import ndimage
from torch import nn

from emseg.losses.base import class_indices, dense_only, register

WEIGHT_KEY = "weight"


def border_weight_map(label: np.ndarray, w0: float = 10.0, sigma: float = 5.0) -> np.ndarray:
    """U-Net weight map w = w_c + w0 * exp(-(d1 + d2)^2 / (2 sigma^2)) for a binary (1 = interior) 2-D label.

    w_c balances the two classes of this slice (w_c = N / (2 N_class)); d1 and d2 are
    the distances of a membrane pixel to the nearest and second-nearest cell (4-connected
    interior components), from scipy's Euclidean distance transform. Interior pixels get w_c only.
    """
    label = np.asarray(label) > 0
    counts = np.array([np.count_nonzero(~label), np.count_nonzero(label)], dtype=np.float64)
    class_weight = label.size / (2 * np.maximum(counts, 1))
    weights = np.where(label, class_weight[1], class_weight[0])
    cells, count = ndimage.label(label, structure=ndimage.generate_binary_structure(2, 1))
    if count >= 2:
        nearest = np.full(label.shape, np.inf)
        second = np.full(label.shape, np.inf)
        for index, box in enumerate(ndimage.find_objects(cells), start=1):
            # distances farther than 3 sigma add less than exp(-4.5) of w0: bound the work to a margin
            margin = int(math.ceil(3 * sigma))
            window = tuple(slice(max(s.start - margin, 0), s.stop + margin) for s in box)
            distance = ndimage.distance_transform_edt(cells[window] != index)
            near, sec = nearest[window], second[window]
            second[window] = np.where(distance < near, near, np.minimum(sec, distance))
            nearest[window] = np.minimum(near, distance)
        membrane = ~label & np.isfinite(second)
        weights[membrane] += w0 * np.exp(-((nearest[membrane] + second[membrane]) ** 2) / (2 * sigma**2))
    return weights.astype(np.float32)


class BorderWeightd(MapTransform):
    """Add the U-Net border weight map of ``keys`` (channel-first binary labels) as ``weight_key``."""

    def __init__(self, keys: KeysCollection, weight_key: str = "weight", w0: float = 10.0, sigma: float = 5.0,
                 allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.weight_key, self.w0, self.sigma = weight_key, w0, sigma

    def __call__(self, data: Mapping[Hashable, np.ndarray]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            label = np.asarray(d[key])
            d[self.weight_key] = np.stack([border_weight_map(c, self.w0, self.sigma) for c in label])
        return d


def prepare() -> list:
    """Deterministic (cached) transforms: the weight map of each whole label slice as ``weight``."""
    return [BorderWeightd("label", weight_key=WEIGHT_KEY)]


def pack() -> list:
    """After cropping and augmentation: the weight map becomes target channel 1."""
    return [ConcatItemsd(["label", WEIGHT_KEY], name="label")]


@register("border_ce", sparse=False, extra_keys=(WEIGHT_KEY,), prepare=prepare, pack=pack)
class BorderWeightedCrossEntropy(nn.Module):
    """Cross-entropy weighted per pixel by the U-Net map w(x) carried in target channel 1.

    The weighted sum is divided by the sum of weights, so the loss of a perfect
    prediction is 0 and its scale does not depend on w0.
    """

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        dense_only("border_ce", target)
        if target.shape[1] < 2:
            raise ValueError("border_ce needs the weight map in target channel 1 (its Loss entry's prepare and pack transforms)")
        weight = target[:, 1]
        loss = F.cross_entropy(logits, class_indices(target), reduction="none")
        return (loss * weight).sum() / weight.sum().clamp_min(1e-8)
