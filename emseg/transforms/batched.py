"""The augmentation presets as operations on whole batches, on the device the network trains on (the bundle key
``feed`` "device", :mod:`emseg.engine.feed`).

A preset's spatial transforms (flips, 90-degree rotations, an affine map, elastic deformation) become one sampling
grid per patch: each maps a patch pixel to the crop pixel it reads, and the composite map is resampled once with
``grid_sample`` (images with the preset's image mode, labels nearest, so they keep their class values, weight maps
bilinearly), then the intensity transforms act on the images. Every random number but the noise is drawn on the host
from one seeded ``torch.Generator``, a few per patch, so a seed gives the same patches on any device and nothing is
read back from the device; the noise is drawn on the device from a generator seeded from it.

What each preset draws is what its MONAI transforms draw (its module says; intensities from
:class:`~emseg.transforms.base.Intensity`). What differs from the per-sample path, by design: one resampling
instead of one per transform, the flips and rotations applied nearest the source (flips, rotations and the
affine's symmetric ranges make the order immaterial in distribution), a 90-degree rotation of a non-square patch
limited to 0 or 180 degrees, and blur reading reflected rather than zero pixels at the patch's edge.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from emseg.transforms.base import Intensity, PresetKeys, elastic_displacement


@dataclass(frozen=True)
class Affine:
    """A random affine map about the crop's centre, drawn for a fraction ``prob`` of patches: a rotation from
    U(-``rotation``, ``rotation``) radians, each axis scaled by 1 + U(-``scale``, ``scale``), a shear factor from
    U(-``shear``, ``shear``) and a shift from U(-t, t) pixels per axis (``translate``)."""

    prob: float
    rotation: float
    scale: float
    shear: float = 0.0
    translate: tuple[float, float] = (0.0, 0.0)


@dataclass(frozen=True)
class Elastic:
    """Elastic deformation drawn for a fraction ``prob`` of patches: displacements from N(0, ``sigma``) pixels at a
    ``grid_points`` x ``grid_points`` grid of control points spanning the crop (as
    :class:`~emseg.transforms.base.ElasticDeformd`)."""

    prob: float
    sigma: float
    grid_points: int = 3


@dataclass(frozen=True)
class Batched:
    """One preset's augmentation of crops into ``patch_size`` patches (their middle, after the deformation)."""

    patch_size: tuple[int, int]
    flips: bool = False  # each axis flipped for half the patches
    rotate90: bool = False  # 0, 90, 180 or 270 degrees alike
    affine: Affine | None = None
    elastic: Elastic | None = None
    intensity: Intensity | None = None
    image_mode: str = "bilinear"  # grid_sample's mode for images
    padding: str = "reflection"  # grid_sample's padding_mode, for any pixel beyond the crop


@dataclass
class Draw:
    """The random numbers of one batch, drawn on the host: the linear map (B, 2, 2) and shift (B, 2) about the
    crop's centre, the coarse elastic displacements (B, 2, G, G) or None, and whether any patch moves at all."""

    linear: torch.Tensor
    shift: torch.Tensor
    coarse: torch.Tensor | None
    moves: bool


def to_device(values: torch.Tensor, device, dtype: torch.dtype | None = None) -> torch.Tensor:
    """Host-drawn ``values`` on ``device`` without making the host wait for the device: to CUDA from pinned memory
    and asynchronously (a copy from ordinary memory waits for all work queued on the device)."""
    values = values.to(dtype) if dtype is not None else values
    device = torch.device(device)
    if device.type == "cuda":
        return values.pin_memory().to(device, non_blocking=True)
    return values.to(device)


def device_generator(device, seed: int) -> torch.Generator | None:
    """A generator on ``device`` seeded with ``seed``; None where the device has none of its own (``meta``, whose
    tensors hold no values: the tests make batches there to show that nothing is read back)."""
    try:
        generator = torch.Generator(device=device)
    except RuntimeError:
        return None
    return generator.manual_seed(int(seed))


def _uniform(generator: torch.Generator, size, low: float, high: float) -> torch.Tensor:
    return low + (high - low) * torch.rand(size, generator=generator, dtype=torch.float64)


def _chosen(generator: torch.Generator, count: int, prob: float) -> torch.Tensor:
    return torch.rand(count, generator=generator, dtype=torch.float64) < prob


def draw(spec: Batched, count: int, crop: Sequence[int], generator: torch.Generator) -> Draw:
    """The spatial parameters of ``count`` patches cut from crops of size ``crop`` (rows, columns), composed into
    one map each: a patch pixel p (crop coordinates) reads the crop at linear @ (p + elastic(p) - centre) + shift +
    centre, where linear = flips @ rotation by 90 degrees @ affine."""
    eye = torch.eye(2, dtype=torch.float64).expand(count, 2, 2)
    linear, shift = eye.clone(), torch.zeros(count, 2, dtype=torch.float64)
    moves = False
    if spec.affine is not None:
        a = spec.affine
        on = _chosen(generator, count, a.prob)
        angle = _uniform(generator, count, -a.rotation, a.rotation) * on
        scales = 1 + _uniform(generator, (count, 2), -a.scale, a.scale) * on[:, None]
        shear = _uniform(generator, count, -a.shear, a.shear) * on
        offset = (_uniform(generator, (count, 2), -1.0, 1.0) * torch.tensor(a.translate, dtype=torch.float64)
                  * on[:, None])
        cos, sin = torch.cos(angle), torch.sin(angle)
        rotation = torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2)
        shearing = eye.clone()
        shearing[:, 0, 1] = shear
        linear = rotation @ shearing @ torch.diag_embed(scales)
        shift = offset
        moves = moves or bool(on.any())
    if spec.rotate90:
        square = crop[0] == crop[1]
        turns = torch.randint(0, 4, (count,), generator=generator) if square else (
            2 * torch.randint(0, 2, (count,), generator=generator))
        quarter = torch.tensor([[0.0, 1.0], [-1.0, 0.0]], dtype=torch.float64)  # torch.rot90's k=1, as a read map
        powers = torch.stack([torch.linalg.matrix_power(quarter, k) for k in range(4)])[turns]
        linear, shift = powers @ linear, (powers @ shift[..., None])[..., 0]
        moves = moves or bool((turns != 0).any())
    if spec.flips:
        signs = torch.where(torch.rand(count, 2, generator=generator, dtype=torch.float64) < 0.5, -1.0, 1.0)
        linear, shift = signs[..., None] * linear, signs * shift
        moves = moves or bool((signs < 0).any())
    coarse = None
    if spec.elastic is not None and spec.elastic.sigma > 0:
        e = spec.elastic
        on = _chosen(generator, count, e.prob)
        coarse = (torch.randn(count, 2, e.grid_points, e.grid_points, generator=generator, dtype=torch.float64)
                  * e.sigma * on[:, None, None, None])
        moves = moves or bool(on.any())
        coarse = coarse if bool(on.any()) else None
    return Draw(linear, shift, coarse, moves)


def sampling_grid(parameters: Draw, crop: Sequence[int], patch: Sequence[int], device) -> torch.Tensor:
    """grid_sample's (B, Ph, Pw, 2) grid (align_corners=True) reading ``patch``-sized patches from the middle of
    ``crop``-sized crops through the drawn maps, computed on ``device``."""
    height, width = crop
    starts = [(c - p) // 2 for c, p in zip(crop, patch)]
    rows = torch.arange(patch[0], device=device, dtype=torch.float32) + starts[0]
    columns = torch.arange(patch[1], device=device, dtype=torch.float32) + starts[1]
    points = torch.stack(torch.meshgrid(rows, columns, indexing="ij"), -1)[None]  # (1, Ph, Pw, 2): rows, columns
    if parameters.coarse is not None:
        dense = elastic_displacement(to_device(parameters.coarse, device, torch.float32), crop)
        dense = dense[:, :, starts[0]:starts[0] + patch[0], starts[1]:starts[1] + patch[1]]
        points = points + dense.permute(0, 2, 3, 1)
    centre = ((height - 1) / 2, (width - 1) / 2)  # plain numbers: nothing to copy to the device
    centred = torch.stack([points[..., 0] - centre[0], points[..., 1] - centre[1]], -1)
    linear = to_device(parameters.linear, device, torch.float32)
    shift = to_device(parameters.shift, device, torch.float32)
    read = torch.einsum("bij,bhwj->bhwi", linear, centred) + shift[:, None, None, :]
    rows, columns = read[..., 0] + centre[0], read[..., 1] + centre[1]
    return torch.stack([2 * columns / max(width - 1, 1) - 1, 2 * rows / max(height - 1, 1) - 1], -1)


def middle(x: torch.Tensor, patch: Sequence[int]) -> torch.Tensor:
    """The middle ``patch`` of (B, C, H, W) crops."""
    starts = [(size - p) // 2 for size, p in zip(x.shape[-2:], patch)]
    return x[..., starts[0]:starts[0] + patch[0], starts[1]:starts[1] + patch[1]]


def augment(crops: Mapping[str, torch.Tensor], spec: Batched, keys: PresetKeys, generator: torch.Generator,
            noise: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    """``spec``'s augmentation of a batch of crops (each key (B, C, H, W), on one device) into its patches: images
    (``keys.image``) resampled with ``spec.image_mode`` and then their intensities changed, labels
    (``keys.label``) nearest and weight maps (``keys.weight``) bilinearly. ``generator`` (on the host) draws every
    parameter, ``noise`` (on the crops' device; a fresh one seeded from ``generator`` when None) the noise."""
    out = dict(crops)
    reference = crops[keys.image[0]]
    count, crop, device = reference.shape[0], tuple(reference.shape[-2:]), reference.device
    parameters = draw(spec, count, crop, generator)
    grid = sampling_grid(parameters, crop, spec.patch_size, device) if parameters.moves else None
    modes = {**{k: spec.image_mode for k in keys.image}, **{k: "nearest" for k in keys.label},
             **{k: "bilinear" for k in keys.weight}}
    for key, mode in modes.items():
        if key not in crops:
            continue
        x = crops[key]
        if grid is None:
            out[key] = middle(x, spec.patch_size)
        else:
            out[key] = F.grid_sample(x.float(), grid, mode=mode, padding_mode=spec.padding,
                                     align_corners=True).to(x.dtype)
    if spec.intensity is not None:
        if noise is None:
            noise = device_generator(device, int(torch.randint(0, 2**62, (), generator=generator)))
        for key in keys.image:
            out[key] = intensities(out[key], spec.intensity, generator, noise)
    return out


def intensities(x: torch.Tensor, p: Intensity, generator: torch.Generator,
                noise: torch.Generator | None) -> torch.Tensor:
    """:func:`~emseg.transforms.base.intensity_transforms` on a batch (B, C, H, W): gamma, scaling, shift, noise,
    blur, in that order, each for its fraction of patches (patches not drawn keep their values exactly)."""
    count, device = x.shape[0], x.device

    def per_patch(values: torch.Tensor) -> torch.Tensor:
        return to_device(values, device, torch.bool if values.dtype == torch.bool else x.dtype).view(count, 1, 1, 1)

    on = _chosen(generator, count, p.contrast_prob)
    gamma = _uniform(generator, count, *p.gamma)
    if bool(on.any()):
        low = x.amin(dim=(1, 2, 3), keepdim=True)
        span = x.amax(dim=(1, 2, 3), keepdim=True) - low
        adjusted = ((x - low) / (span + 1e-7)).clamp_min(0) ** per_patch(gamma) * span + low
        x = torch.where(per_patch(on), adjusted, x)
    on = _chosen(generator, count, p.scale_prob)
    x = x * per_patch(1 + _uniform(generator, count, -p.scale, p.scale) * on)
    on = _chosen(generator, count, p.shift_prob)
    x = x + per_patch(_uniform(generator, count, -p.shift, p.shift) * on)
    on = _chosen(generator, count, p.noise_prob)
    std = _uniform(generator, count, 0.0, p.noise_std) * on
    if bool(on.any()):
        x = x + torch.randn(x.shape, generator=noise, device=device, dtype=x.dtype) * per_patch(std)
    on = _chosen(generator, count, p.blur_prob)
    sigmas = _uniform(generator, (count, 2), *p.blur_sigma)
    if bool(on.any()):
        x = torch.where(per_patch(on), blur(x, sigmas), x)
    return x


def blur(x: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
    """Gaussian blur of each patch of (B, C, H, W) with its own sigma per axis (``sigmas`` (B, 2), rows and
    columns, on the host): separable, each kernel weight the Gaussian's integral over its pixel (MONAI's ``erf``
    kernel, as its ``GaussianSmooth``), truncated at 4 sigma, edges reflected."""
    count, channels, height, width = x.shape
    radius = int(math.ceil(4 * float(sigmas.max())))  # read on the host, before the sigmas go to the device
    sigmas = to_device(sigmas, x.device)
    offsets = torch.arange(-radius, radius + 1, device=x.device, dtype=torch.float32)[None, None, :]
    scale = (0.5**0.5) / sigmas.float()[:, :, None]
    kernels = 0.5 * (torch.erf(scale * (offsets + 0.5)) - torch.erf(scale * (offsets - 0.5)))
    kernels = (kernels / kernels.sum(-1, keepdim=True)).to(x.dtype)  # (B, 2, K)
    kernels = kernels.repeat_interleave(channels, 0)  # (B*C, 2, K)
    y = x.reshape(1, count * channels, height, width)
    groups = count * channels
    y = F.conv2d(F.pad(y, (0, 0, radius, radius), mode="reflect"), kernels[:, 0, None, :, None], groups=groups)
    y = F.conv2d(F.pad(y, (radius, radius, 0, 0), mode="reflect"), kernels[:, 1, None, None, :], groups=groups)
    return y.reshape(count, channels, height, width)
