"""``none``: no augmentation (the crops alone)."""

from __future__ import annotations

from emseg.transforms.base import register


@register("none")
def no_augmentation(**parameters) -> list:
    return []
