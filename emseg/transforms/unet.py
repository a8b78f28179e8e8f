"""``unet``: the U-Net paper's flips, rotations and elastic deformation (optionally the ``em`` intensities)."""

from __future__ import annotations

from collections.abc import Sequence

from emseg.transforms.base import (
    ElasticDeformd,
    Intensity,
    PresetKeys,
    elastic_margin,
    flips_and_rotations,
    intensity_transforms,
    register,
)
from emseg.transforms.batched import Batched, Elastic


def unet_margin(patch_size: Sequence[int], sigma: float, **parameters) -> list[int]:
    """The elastic deformation's reach: :func:`~emseg.transforms.base.elastic_margin` of ``sigma``."""
    return [elastic_margin(sigma)] * len(patch_size)


def unet_batched(patch_size: Sequence[int], grid_points: int, sigma: float, prob: float, intensity: bool,
                 **parameters) -> Batched:
    """The same on the device: flips, rotations and the elastic deformation in one bicubic resampling."""
    return Batched(tuple(patch_size), flips=True, rotate90=True, elastic=Elastic(prob, sigma, grid_points),
                   intensity=Intensity() if intensity else None, image_mode="bicubic")


@register("unet", margin=unet_margin, batched=unet_batched)
def unet_preset(keys: PresetKeys = PresetKeys(), patch_size: Sequence[int] = (256, 256), grid_points: int = 3,
                sigma: float = 10.0, prob: float = 0.9, intensity: bool = False) -> list:
    """Flips, 90-degree rotations and elastic deformation on a coarse ``grid_points`` grid with
    displacements drawn from N(0, ``sigma``) pixels (Ronneberger et al. 2015), bicubic for images;
    ``intensity``: then :func:`intensity_transforms` too."""
    elastic = ElasticDeformd(keys.spatial()[0], sigma=sigma, grid_points=grid_points, prob=prob,
                             mode=keys.elastic_modes(), output_size=patch_size)
    return [*flips_and_rotations(keys.spatial()[0], rotate90=True), elastic,
            *(intensity_transforms(keys.image) if intensity else [])]
