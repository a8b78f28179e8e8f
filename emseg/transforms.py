"""EM augmentation presets and the training pipeline's random part, built from MONAI dictionary transforms.

Presets (select by name with :func:`augmentation`, or call one directly to change its
parameters):

- ``keras``: the reference projects' Keras ImageDataGenerator set: rotation up to 20
  degrees, shear 0.2 degrees, shifts and zoom of 20%, horizontal and vertical flips,
  constant fill 0, every transform on every sample.
- ``unet``: the U-Net paper: flips, 90-degree rotations and elastic deformation from
  random displacements on a coarse 3x3 grid (10 px standard deviation), bicubic
  (:class:`ElasticDeformd`: the identity at zero strength, unlike MONAI's ``Rand2DElasticd``
  whose control-grid spacing also scales the image; it deforms a crop larger by
  :func:`crop_size`'s margin and cuts the patch from its middle, so no padding enters it);
  ``intensity=True`` adds the ``em`` preset's intensity transforms (:func:`intensity_transforms`).
- ``em``: spatial (flips, 90-degree rotations, affine, mild elastic) plus intensity (gamma,
  contrast, noise, blur) for EM's varying staining; its crop is larger by the affine's reach
  at full rotation and scale (:func:`affine_margin`), so no padding enters the patch either.

Images are interpolated bilinearly (bicubically by ``ElasticDeformd``), labels with nearest neighbour (so they keep their
class values), weight maps bilinearly; intensity transforms touch only images.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass
from typing import Callable, Hashable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from monai.config import KeysCollection
from monai.transforms import (
    MapTransform,
    RandAdjustContrastd,
    RandAffined,
    RandCropByLabelClassesd,
    RandFlipd,
    RandGaussianNoised,
    RandGaussianSmoothd,
    RandomizableTransform,
    RandRotate90d,
    RandScaleIntensityd,
    RandShiftIntensityd,
    RandSpatialCropSamplesd,
)

from emseg.losses import get_loss

PRESETS = ("none", "keras", "unet", "em")


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


def _flips_and_rotations(keys: list[str], rotate90: bool) -> list:
    transforms = [RandFlipd(keys, prob=0.5, spatial_axis=0), RandFlipd(keys, prob=0.5, spatial_axis=1)]
    if rotate90:
        transforms.append(RandRotate90d(keys, prob=0.75, max_k=3))
    return transforms


def keras_preset(keys: PresetKeys = PresetKeys(), patch_size: Sequence[int] = (256, 256), rotation_degrees: float = 20.0,
                 shear_degrees: float = 0.2, shift: float = 0.2, zoom: float = 0.2) -> list:
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
    return [affine, *_flips_and_rotations(keys, rotate90=False)]


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
        dense = F.interpolate(torch.as_tensor(self._displacement, dtype=torch.float32)[None], size=(height, width),
                              mode="bicubic", align_corners=True)[0]  # (2, H, W): rows, columns in pixels
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


def elastic_margin(sigma: float) -> int:
    """Pixels of context on each side that an elastic deformation of ``sigma`` needs (3 sigma)."""
    return int(math.ceil(3 * sigma))


def affine_margin(patch_size: Sequence[int], rotation_degrees: float, scale: float, sigma: float) -> list[int]:
    """Pixels of context on each side that the ``em`` preset needs so that no padded pixel reaches a
    ``patch_size`` patch: the patch and its elastic margin (:func:`elastic_margin`), rotated by up to
    ``rotation_degrees`` and scaled by up to ``1 + scale`` about the centre, plus the 2 pixels bicubic reads."""
    angle = math.radians(abs(rotation_degrees))
    half = [size / 2 + elastic_margin(sigma) for size in patch_size]
    reach = [(1 + abs(scale)) * (half[i] * math.cos(angle) + half[1 - i] * math.sin(angle)) + 2 for i in (0, 1)]
    return [max(elastic_margin(sigma), int(math.ceil(r - size / 2))) for r, size in zip(reach, patch_size)]


def intensity_transforms(images: Sequence[str], gamma: tuple[float, float] = (0.7, 1.5),
                         noise_std: float = 0.1) -> list:
    """Random gamma, contrast, brightness, Gaussian noise and blur of ``images`` (normalised to zero mean, unit
    variance), each on a fraction of samples: staining, section thickness and detector noise of other microscopes."""
    images = list(images)
    return [
        RandAdjustContrastd(images, prob=0.3, gamma=gamma),
        RandScaleIntensityd(images, factors=0.2, prob=0.3),
        RandShiftIntensityd(images, offsets=0.2, prob=0.3),
        RandGaussianNoised(images, prob=0.2, std=noise_std),
        RandGaussianSmoothd(images, prob=0.2, sigma_x=(0.5, 1.0), sigma_y=(0.5, 1.0)),
    ]


def unet_preset(keys: PresetKeys = PresetKeys(), patch_size: Sequence[int] = (256, 256), grid_points: int = 3,
                sigma: float = 10.0, prob: float = 0.9, intensity: bool = False) -> list:
    """Flips, 90-degree rotations and elastic deformation on a coarse ``grid_points`` grid with
    displacements drawn from N(0, ``sigma``) pixels (Ronneberger et al. 2015), bicubic for images;
    ``intensity``: then :func:`intensity_transforms` too."""
    elastic = ElasticDeformd(keys.spatial()[0], sigma=sigma, grid_points=grid_points, prob=prob,
                             mode=keys.elastic_modes(), output_size=patch_size)
    return [*_flips_and_rotations(keys.spatial()[0], rotate90=True), elastic,
            *(intensity_transforms(keys.image) if intensity else [])]


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
        *_flips_and_rotations(keys, rotate90=True),
        RandAffined(keys, prob=0.5, rotate_range=math.radians(rotation_degrees), scale_range=(scale, scale),
                    mode=modes, padding_mode="reflection"),
        ElasticDeformd(keys, sigma=elastic_sigma, prob=0.3, mode=elastic_modes, output_size=patch_size),
        *intensity_transforms(images, gamma=gamma, noise_std=noise_std),
    ]


_PRESET_FUNCTIONS: dict[str, Callable[..., list]] = {
    "none": lambda **kwargs: [],
    "keras": keras_preset,
    "unet": unet_preset,
    "em": em_preset,
}


def _preset_function(name: str, parameters: Mapping | None = None) -> Callable[..., list]:
    """Preset ``name``'s function, once ``name`` and the names of its ``parameters`` are known to be right."""
    if name not in _PRESET_FUNCTIONS:
        raise ValueError(f"unknown augmentation preset '{name}'; choose from {', '.join(PRESETS)} "
                         "(the bundle key augmentation chooses it, e.g. --augmentation unet)")
    function = _PRESET_FUNCTIONS[name]
    accepted = {key: p.default for key, p in inspect.signature(function).parameters.items()
                if key not in ("keys", "patch_size") and p.kind is not p.VAR_KEYWORD}
    unknown = sorted(set(parameters or ()) - set(accepted) - {"patch_size"})
    if unknown:
        example = next(iter(accepted.items()), None)
        raise ValueError(f"augmentation preset '{name}' has no parameter '{unknown[0]}'; "
                         + (f"it takes {', '.join(accepted)} (the bundle key augmentation_params passes them, "
                            f"e.g. --augmentation_params#{example[0]} {example[1]})" if example
                            else "it takes none (leave augmentation_params empty)"))
    for key, value in (parameters or {}).items():
        _check_preset_value(key, value, accepted.get(key))
    return function


def _check_preset_value(key: str, value, default) -> None:
    """A preset parameter given in the config has its default's kind: True/False for a switch, a number not below 0
    for a strength, rate or size (MONAI's CLI passes what it cannot read as a number or a bool as text)."""
    if isinstance(default, bool):
        problem = None if isinstance(value, bool) else "must be True or False"
    elif isinstance(default, (int, float)):
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        problem = None if number and value >= 0 else "must be a number not below 0"
    else:
        return
    if problem:
        raise ValueError(f"augmentation_params: {key} {problem}, got {value!r} "
                         f"(e.g. --augmentation_params#{key} {default})")


def crop_size(name: str, patch_size: Sequence[int], **kwargs) -> list[int]:
    """Size of the random crop that preset ``name`` (with its parameters ``kwargs``) turns into a ``patch_size``
    patch: larger on each side by :func:`elastic_margin` (``unet``) or :func:`affine_margin` (``em``), the
    context its deformations read, so that no padding enters the patch."""
    defaults = {k: p.default for k, p in inspect.signature(_preset_function(name, kwargs)).parameters.items()}
    value = {**defaults, **kwargs}.get
    if name == "unet":
        margin = [elastic_margin(value("sigma"))] * len(patch_size)
    elif name == "em":
        margin = affine_margin(patch_size, value("rotation_degrees"), value("scale"), value("elastic_sigma"))
    else:
        margin = [0] * len(patch_size)
    return [size + 2 * m for size, m in zip(patch_size, margin)]


def random_crops(keys: Sequence[str], size: Sequence[int], num_samples: int, num_classes: int,
                 ratios: str | Sequence[float] | None = None, label_key: str = "label") -> MapTransform:
    """``num_samples`` random crops of ``size`` per slice: anywhere (``ratios`` None), or centred on a pixel of a
    class drawn with ``ratios`` (a weight per class, or ``"uniform"`` for every class alike), so that rare
    classes (EPFL's PSD: 0.04% of the pixels) reach the network (MONAI's ``RandCropByLabelClassesd``; a class
    absent from a slice is skipped there)."""
    if ratios is None:
        return RandSpatialCropSamplesd(list(keys), roi_size=list(size), num_samples=num_samples, random_size=False)
    if ratios == "uniform":
        ratios = [1.0] * num_classes
    if isinstance(ratios, str) or len(ratios) != num_classes or min(ratios) < 0 or sum(ratios) <= 0:
        raise ValueError(f"crop_ratios must be null, \"uniform\" or {num_classes} non-negative weights (one per "
                         f"class), got {ratios!r}")
    return RandCropByLabelClassesd(list(keys), label_key=label_key, spatial_size=list(size), ratios=list(ratios),
                                   num_classes=num_classes, num_samples=num_samples, warn=False)


def augmentation(name: str, image_keys: Sequence[str] = ("image",), label_keys: Sequence[str] = ("label",),
                 weight_keys: Sequence[str] = (), **kwargs) -> list:
    """The transforms of preset ``name`` (one of :data:`PRESETS`) for the given keys; ``kwargs`` (``patch_size``
    and the preset's parameters) go to the preset function."""
    keys = PresetKeys(tuple(image_keys), tuple(label_keys), tuple(weight_keys))
    return _preset_function(name, kwargs)(keys=keys, **kwargs)


def random_transforms(preset: str, patch_size: Sequence[int], crops_per_slice: int, num_classes: int,
                      crop_ratios: str | Sequence[float] | None = None, augmentation_params: Mapping | None = None,
                      loss_name: str = "dice_ce") -> list:
    """A bundle's random training transforms: ``crops_per_slice`` crops per slice (:func:`random_crops`, as large
    as preset ``preset`` needs for a ``patch_size`` patch), then the preset (:func:`augmentation`), carrying
    whatever extra inputs the loss ``loss_name`` reads (``border_ce``: its weight map) with the label."""
    params = dict(augmentation_params or {})
    extra = list(get_loss(loss_name).extra_keys)
    crops = random_crops(["image", "label", *extra], crop_size(preset, patch_size, **params), crops_per_slice,
                         num_classes, crop_ratios)
    return [crops, *augmentation(preset, patch_size=patch_size, weight_keys=extra, **params)]


def training_transforms(loss_name: str, deterministic: Sequence, random: Sequence) -> list:
    """The whole training pipeline: ``deterministic`` (cached), what loss ``loss_name`` prepares from whole slices
    (cached too), ``random``, and what the loss packs into the target."""
    loss = get_loss(loss_name)
    return [*deterministic, *loss.prepare(), *random, *loss.pack()]


class ScoredOneHotd(MapTransform):
    """One-hot ``pred`` (the argmax of its channels) and ``label`` (a class-index channel) for the scores, with
    unlabelled pixels (class -1, not painted) left out of both: their one-hot vectors are all zero, so they count
    in no class's Dice or IoU. With every pixel labelled it gives what MONAI's ``AsDiscreted(argmax, to_onehot)``
    gives."""

    def __init__(self, num_classes: int, pred_key: str = "pred", label_key: str = "label") -> None:
        super().__init__([pred_key, label_key])
        self.num_classes, self.pred_key, self.label_key = int(num_classes), pred_key, label_key

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict:
        d = dict(data)
        pred, label = d[self.pred_key], d[self.label_key]
        classes = torch.as_tensor(label)[0].long()  # (H, W)
        labelled = (classes >= 0).to(pred.dtype)
        channels = torch.arange(self.num_classes, device=pred.device)[:, None, None]
        d[self.pred_key] = (pred.argmax(0, keepdim=True) == channels).to(pred.dtype) * labelled
        d[self.label_key] = (classes.to(pred.device)[None] == channels).to(pred.dtype)
        return d

