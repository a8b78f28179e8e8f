"""``em``: spatial and intensity augmentation for EM's varying staining, sections and detectors."""

from __future__ import annotations

import math
from collections.abc import Sequence

from monai.transforms import RandAffined

from emseg.transforms.base import (
    ElasticDeformd,
    Intensity,
    PresetKeys,
    elastic_margin,
    flips_and_rotations,
    intensity_transforms,
    register,
)
from emseg.transforms.batched import Affine, Batched, Elastic


def affine_margin(patch_size: Sequence[int], rotation_degrees: float, scale: float, sigma: float) -> list[int]:
    """Pixels of context on each side that the ``em`` preset needs so that no padded pixel reaches a
    ``patch_size`` patch: the patch and its elastic margin (:func:`elastic_margin`), rotated by up to
    ``rotation_degrees`` and scaled by up to ``1 + scale`` about the centre, plus the 2 pixels bicubic reads."""
    angle = math.radians(abs(rotation_degrees))
    half = [size / 2 + elastic_margin(sigma) for size in patch_size]
    reach = [(1 + abs(scale)) * (half[i] * math.cos(angle) + half[1 - i] * math.sin(angle)) + 2 for i in (0, 1)]
    return [max(elastic_margin(sigma), int(math.ceil(r - size / 2))) for r, size in zip(reach, patch_size)]


def em_margin(patch_size: Sequence[int], rotation_degrees: float, scale: float, elastic_sigma: float,
              **parameters) -> list[int]:
    """The affine's reach at full rotation and scale, with the elastic margin."""
    return affine_margin(patch_size, rotation_degrees, scale, elastic_sigma)


def em_batched(patch_size: Sequence[int], rotation_degrees: float, scale: float, elastic_sigma: float,
               gamma: tuple[float, float], noise_std: float, **parameters) -> Batched:
    """The same on the device: flips, rotations, affine and elastic deformation in one bilinear resampling (the
    affine's mode), then the intensities."""
    return Batched(tuple(patch_size), flips=True, rotate90=True,
                   affine=Affine(0.5, math.radians(rotation_degrees), scale), elastic=Elastic(0.3, elastic_sigma),
                   intensity=Intensity(tuple(gamma), noise_std))


@register("em", margin=em_margin, batched=em_batched)
def em_preset(keys: PresetKeys = PresetKeys(), patch_size: Sequence[int] = (256, 256), rotation_degrees: float = 20.0,
              scale: float = 0.1, elastic_sigma: float = 5.0, gamma: tuple[float, float] = (0.7, 1.5),
              noise_std: float = 0.1) -> list:
    """Spatial (flips, 90-degree rotations, affine, mild elastic) and intensity (gamma, contrast,
    brightness, Gaussian noise, blur) augmentation for EM slices normalised to zero mean, unit variance.
    Expects a crop larger than ``patch_size`` by :func:`affine_margin` on each side (:func:`crop_size`), so the
    rotation and scaling never reach the crop's padding."""
    images, elastic_modes = list(keys.image), keys.elastic_modes()
    keys, modes = keys.spatial()
    return [
        *flips_and_rotations(keys, rotate90=True),
        RandAffined(keys, prob=0.5, rotate_range=math.radians(rotation_degrees), scale_range=(scale, scale),
                    mode=modes, padding_mode="reflection"),
        ElasticDeformd(keys, sigma=elastic_sigma, prob=0.3, mode=elastic_modes, output_size=patch_size),
        *intensity_transforms(images, gamma=gamma, noise_std=noise_std),
    ]
