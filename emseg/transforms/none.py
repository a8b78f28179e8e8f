"""``none``: no augmentation (the crops alone)."""

from __future__ import annotations

from emseg.transforms.base import register
from emseg.transforms.batched import Batched


def no_augmentation_batched(patch_size, **parameters) -> Batched:
    return Batched(tuple(patch_size))


@register("none", batched=no_augmentation_batched)
def no_augmentation(**parameters) -> list:
    return []
