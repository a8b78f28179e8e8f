"""``keras``: the reference projects' Keras ImageDataGenerator set."""

from __future__ import annotations

import math
from collections.abc import Sequence

from monai.transforms import RandAffined

from emseg.transforms.base import PresetKeys, flips_and_rotations, register
from emseg.transforms.batched import Affine, Batched


def keras_batched(patch_size: Sequence[int], rotation_degrees: float, shear_degrees: float, shift: float,
                  zoom: float, **parameters) -> Batched:
    """The same on the device: the affine and the flips in one bilinear resampling, zeros beyond the crop."""
    affine = Affine(1.0, math.radians(rotation_degrees), zoom, math.tan(math.radians(shear_degrees)),
                    (shift * patch_size[0], shift * patch_size[1]))
    return Batched(tuple(patch_size), flips=True, affine=affine, padding="zeros")


@register("keras", batched=keras_batched)
def keras_preset(keys: PresetKeys = PresetKeys(), patch_size: Sequence[int] = (256, 256),
                 rotation_degrees: float = 20.0, shear_degrees: float = 0.2, shift: float = 0.2,
                 zoom: float = 0.2) -> list:
    """Keras ImageDataGenerator(rotation_range=20, shear_range=0.2, width/height_shift_range=0.2,
    zoom_range=0.2, horizontal_flip, vertical_flip, fill_mode='constant', cval=0).

    Keras gives ``shear_range`` in degrees; it becomes the shear factor tan(angle).
    """
    keys, modes = keys.spatial()
    affine = RandAffined(
        keys,
        prob=1.0,
        rotate_range=math.radians(rotation_degrees),
        shear_range=(math.tan(math.radians(shear_degrees)), 0.0),
        translate_range=[shift * s for s in patch_size],
        scale_range=(zoom, zoom),
        mode=modes,
        padding_mode="zeros",
    )
    return [affine, *flips_and_rotations(keys, rotate90=False)]
