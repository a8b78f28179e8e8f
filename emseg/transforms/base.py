"""What every augmentation preset shares: the registry of presets by name (each preset module registers itself),
the keys a preset transforms, and the pieces several presets use (flips and rotations, intensity transforms, the
elastic deformation and the context it needs)."""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from monai.config import KeysCollection
from monai.transforms import (
    MapTransform,
    RandAdjustContrastd,
    RandFlipd,
    RandGaussianNoised,
    RandGaussianSmoothd,
    RandomizableTransform,
    RandRotate90d,
    RandScaleIntensityd,
    RandShiftIntensityd,
)


@dataclass(frozen=True)
class Preset:
    """An augmentation preset by name: the function that builds its transforms, and the context (pixels on each
    side of a ``patch_size`` patch, given the preset's parameters) its deformations read, so that the random crop
    is that much larger and no padding enters the patch."""

    name: str
    build: Callable[..., list]
    margin: Callable[..., list[int]]  # (patch_size, **parameters with defaults) -> pixels per axis
    # (patch_size, **parameters with defaults) -> the same augmentation as batched operations on the device
    # (an emseg.transforms.batched.Batched), for the bundle key feed "device"
    batched: Callable | None = None


PRESETS: dict[str, Preset] = {}  # name -> entry


def no_margin(patch_size: Sequence[int], **parameters) -> list[int]:
    return [0] * len(patch_size)


def register(name: str, margin: Callable[..., list[int]] = no_margin, batched: Callable | None = None) -> Callable:
    """Decorator registering a preset function under ``name`` (with its batched form, if it has one)."""
    def add(build):
        PRESETS[name] = Preset(name, build, margin, batched)
        return build
    return add


@dataclass(frozen=True)
class PresetKeys:
    """The keys a preset transforms: images (bilinear; intensity transforms touch only these), labels
    (nearest neighbour, so they keep their class values) and weight maps (bilinear)."""

    image: tuple[str, ...] = ("image",)
    label: tuple[str, ...] = ("label",)
    weight: tuple[str, ...] = ()

    def spatial(self) -> tuple[list[str], list[str]]:
        """All keys and their interpolation modes, for spatial transforms."""
        keys = [*self.image, *self.label, *self.weight]
        modes = ["bilinear"] * len(self.image) + ["nearest"] * len(self.label) + ["bilinear"] * len(self.weight)
        return keys, modes

    def elastic_modes(self) -> list[str]:
        """Interpolation modes for :class:`ElasticDeformd`, in the order of :meth:`spatial`'s keys."""
        return ["bicubic"] * len(self.image) + ["nearest"] * len(self.label) + ["bilinear"] * len(self.weight)


def flips_and_rotations(keys: list[str], rotate90: bool) -> list:
    transforms = [RandFlipd(keys, prob=0.5, spatial_axis=0), RandFlipd(keys, prob=0.5, spatial_axis=1)]
    if rotate90:
        transforms.append(RandRotate90d(keys, prob=0.75, max_k=3))
    return transforms


class ElasticDeformd(RandomizableTransform, MapTransform):
    """Elastic deformation of 2-D channel-first arrays (Ronneberger et al. 2015), then the middle ``output_size``.

    Displacements drawn from N(0, ``sigma``) pixels at a ``grid_points`` x ``grid_points`` grid of control points
    spanning the input are interpolated bicubically to every pixel; each key is resampled at the displaced
    coordinates with its ``mode`` (``bicubic`` for images, ``nearest`` for labels, ``bilinear`` for weight
    maps). With ``sigma`` 0, or when the transform is not drawn (``prob``), the output is the input's middle,
    not resampled. Give an input larger than ``output_size`` by :func:`elastic_margin` on each side and no
    padded pixel reaches the output (reflection covers the rare displacement beyond it).
    """

    def __init__(self, keys: KeysCollection, sigma: float = 10.0, grid_points: int = 3, prob: float = 1.0,
                 mode: str | Sequence[str] = "bicubic", output_size: Sequence[int] | None = None,
                 allow_missing_keys: bool = False) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        RandomizableTransform.__init__(self, prob)
        if grid_points < 2:
            raise ValueError(f"grid_points must be at least 2, got {grid_points}")
        self.sigma, self.grid_points = float(sigma), int(grid_points)
        self.modes = [mode] * len(self.keys) if isinstance(mode, str) else list(mode)
        self.output_size = tuple(output_size) if output_size is not None else None
        self._displacement: np.ndarray | None = None

    def randomize(self, data=None) -> None:
        super().randomize(None)
        self._displacement = (self.R.normal(0.0, self.sigma, (2, self.grid_points, self.grid_points))
                              if self._do_transform and self.sigma > 0 else None)

    def sampling_grid(self, shape: Sequence[int]) -> torch.Tensor | None:
        """grid_sample's (1, H, W, 2) grid for the last drawn displacement, None for the identity."""
        if self._displacement is None:
            return None
        height, width = shape
        dense = elastic_displacement(torch.as_tensor(self._displacement, dtype=torch.float32)[None], shape)[0]
        rows = torch.arange(height, dtype=torch.float32)[:, None] + dense[0]
        columns = torch.arange(width, dtype=torch.float32)[None, :] + dense[1]
        # align_corners=True: -1 and 1 are the centres of the first and last pixels
        return torch.stack([2 * columns / max(width - 1, 1) - 1, 2 * rows / max(height - 1, 1) - 1], -1)[None]

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict:
        d = dict(data)
        self.randomize()
        grid = None
        for key, mode in self.key_iterator(d, self.modes):
            image = torch.as_tensor(d[key])
            image = image.as_tensor() if hasattr(image, "as_tensor") else image
            if grid is None:
                grid = self.sampling_grid(image.shape[-2:])
            if grid is not None:
                image = F.grid_sample(image[None].float(), grid, mode=mode, padding_mode="reflection",
                                      align_corners=True)[0].to(image.dtype)
            d[key] = self._middle(image)
        return d

    def _middle(self, image: torch.Tensor) -> torch.Tensor:
        if self.output_size is None:
            return image
        starts = [(size - out) // 2 for size, out in zip(image.shape[-2:], self.output_size)]
        if min(starts) < 0:
            raise ValueError(f"ElasticDeformd: input {tuple(image.shape[-2:])} is smaller than output_size "
                             f"{self.output_size}")
        return image[..., starts[0]:starts[0] + self.output_size[0], starts[1]:starts[1] + self.output_size[1]]


def elastic_displacement(coarse: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """Dense displacements (B, 2, H, W) in pixels (rows, columns) from ``coarse`` ones (B, 2, G, G) at a grid of
    control points spanning an input of ``shape`` (H, W), interpolated bicubically: the U-Net paper's smooth
    deformation field, for :class:`ElasticDeformd` and the batched augmentation on the device alike."""
    return F.interpolate(coarse, size=tuple(shape), mode="bicubic", align_corners=True)


def elastic_margin(sigma: float) -> int:
    """Pixels of context on each side that an elastic deformation of ``sigma`` needs (3 sigma)."""
    return int(math.ceil(3 * sigma))


@dataclass(frozen=True)
class Intensity:
    """What :func:`intensity_transforms` draws, one home for it and its batched form on the device: each transform
    on a fraction of samples (its ``*_prob``); gamma from ``gamma``, intensities scaled by 1 + U(-``scale``,
    ``scale``) and shifted by U(-``shift``, ``shift``), Gaussian noise of a standard deviation from
    U(0, ``noise_std``), blur of a sigma per axis from ``blur_sigma``."""

    gamma: tuple[float, float] = (0.7, 1.5)
    noise_std: float = 0.1
    contrast_prob: float = 0.3
    scale: float = 0.2
    scale_prob: float = 0.3
    shift: float = 0.2
    shift_prob: float = 0.3
    noise_prob: float = 0.2
    blur_sigma: tuple[float, float] = (0.5, 1.0)
    blur_prob: float = 0.2


def intensity_transforms(images: Sequence[str], gamma: tuple[float, float] = (0.7, 1.5),
                         noise_std: float = 0.1) -> list:
    """Random gamma, contrast, brightness, Gaussian noise and blur of ``images`` (normalised to zero mean, unit
    variance), each on a fraction of samples (:class:`Intensity`): staining, section thickness and detector noise
    of other microscopes."""
    images, p = list(images), Intensity(tuple(gamma), noise_std)
    return [
        RandAdjustContrastd(images, prob=p.contrast_prob, gamma=p.gamma),
        RandScaleIntensityd(images, factors=p.scale, prob=p.scale_prob),
        RandShiftIntensityd(images, offsets=p.shift, prob=p.shift_prob),
        RandGaussianNoised(images, prob=p.noise_prob, std=p.noise_std),
        RandGaussianSmoothd(images, prob=p.blur_prob, sigma_x=p.blur_sigma, sigma_y=p.blur_sigma),
    ]
