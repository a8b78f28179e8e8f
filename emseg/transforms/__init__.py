"""EM augmentation presets (one module each, registering itself in :data:`PRESETS`) and the training pipeline's
random part, built from MONAI dictionary transforms.

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

Images are interpolated bilinearly (bicubically by ``ElasticDeformd``), labels with nearest neighbour (so they keep
their class values), weight maps bilinearly; intensity transforms touch only images. A new preset is one module here
(a function decorated with :func:`~emseg.transforms.base.register`) and one import below.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Hashable, Mapping, Sequence

import torch
from monai.transforms import MapTransform, RandCropByLabelClassesd, RandSpatialCropSamplesd

from emseg.losses import get_loss
from emseg.transforms import em, keras, none, unet  # noqa: F401  (each registers its preset)
from emseg.transforms.base import (
    PRESETS,
    ElasticDeformd,
    Intensity,
    Preset,
    PresetKeys,
    elastic_margin,
    intensity_transforms,
)
from emseg.transforms.batched import Batched
from emseg.transforms.em import affine_margin, em_preset
from emseg.transforms.keras import keras_preset
from emseg.transforms.unet import unet_preset

__all__ = ["Batched", "ElasticDeformd", "Intensity", "PRESETS", "Preset", "PresetKeys", "ScoredOneHotd",
           "affine_margin", "augmentation", "batched_augmentation", "crop_size", "crop_weights", "elastic_margin",
           "em_preset", "intensity_transforms", "keras_preset", "random_crops", "random_transforms",
           "training_transforms", "unet_preset"]


def _preset_function(name: str, parameters: Mapping | None = None) -> Callable[..., list]:
    """Preset ``name``'s function, once ``name`` and the names of its ``parameters`` are known to be right."""
    if name not in PRESETS:
        raise ValueError(f"unknown augmentation preset '{name}'; choose from {', '.join(sorted(PRESETS))} "
                         "(the bundle key augmentation chooses it, e.g. --augmentation unet)")
    function = PRESETS[name].build
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


def _parameters(name: str, kwargs: Mapping) -> dict:
    """Preset ``name``'s parameters: its defaults, with ``kwargs`` (checked) over them."""
    defaults = {k: p.default for k, p in inspect.signature(_preset_function(name, kwargs)).parameters.items()
                if p.default is not inspect.Parameter.empty and k not in ("keys", "patch_size")}
    return {**defaults, **kwargs}


def crop_size(name: str, patch_size: Sequence[int], **kwargs) -> list[int]:
    """Size of the random crop that preset ``name`` (with its parameters ``kwargs``) turns into a ``patch_size``
    patch: larger on each side by the context its deformations read (its entry's ``margin``: the elastic margin
    for ``unet``, the affine's reach for ``em``), so that no padding enters the patch."""
    parameters = _parameters(name, kwargs)  # first: it says what is wrong with an unknown name
    margin = PRESETS[name].margin(patch_size, **parameters)
    return [size + 2 * m for size, m in zip(patch_size, margin)]


def batched_augmentation(name: str, patch_size: Sequence[int], **kwargs) -> Batched:
    """Preset ``name`` (with its parameters ``kwargs``) as batched operations on the device
    (:mod:`emseg.transforms.batched`), drawing what its MONAI transforms draw."""
    parameters = _parameters(name, kwargs)
    batched = PRESETS[name].batched
    if batched is None:
        raise ValueError(f"augmentation preset '{name}' has no batched form for the device; set the bundle key "
                         "feed to \"loader\" (e.g. --feed loader)")
    return batched(list(patch_size), **parameters)


def crop_weights(ratios: str | Sequence[float], num_classes: int) -> list[float]:
    """The bundle key ``crop_ratios`` (``"uniform"`` or a weight per class) as a weight per class, checked."""
    weights = [1.0] * num_classes if ratios == "uniform" else ratios
    if isinstance(weights, str) or len(weights) != num_classes or min(weights) < 0 or sum(weights) <= 0:
        raise ValueError(f"crop_ratios must be null, \"uniform\" or {num_classes} non-negative weights (one per "
                         f"class), got {ratios!r}")
    return [float(w) for w in weights]


def random_crops(keys: Sequence[str], size: Sequence[int], num_samples: int, num_classes: int,
                 ratios: str | Sequence[float] | None = None, label_key: str = "label") -> MapTransform:
    """``num_samples`` random crops of ``size`` per slice: anywhere (``ratios`` None), or centred on a pixel of a
    class drawn with ``ratios`` (a weight per class, or ``"uniform"`` for every class alike), so that rare
    classes (EPFL's PSD: 0.04% of the pixels) reach the network (MONAI's ``RandCropByLabelClassesd``; a class
    absent from a slice is skipped there)."""
    if ratios is None:
        return RandSpatialCropSamplesd(list(keys), roi_size=list(size), num_samples=num_samples, random_size=False)
    return RandCropByLabelClassesd(list(keys), label_key=label_key, spatial_size=list(size),
                                   ratios=crop_weights(ratios, num_classes),
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

