"""Augmentation presets keep images and labels aligned and labels valid; the border weight map."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from monai.transforms import (
    Compose,
    RandAdjustContrastd,
    RandAffined,
    RandFlipd,
    RandGaussianNoised,
    RandGaussianSmoothd,
    RandRotate90d,
    RandScaleIntensityd,
    RandShiftIntensityd,
)
from monai.utils import set_determinism

from emseg.losses.border_ce import BorderWeightd, border_weight_map
from emseg.transforms import (
    PRESETS,
    ElasticDeformd,
    augmentation,
    batched_augmentation,
    crop_size,
)


@pytest.fixture(scope="module")
def patch(isbi_volumes):
    label = (isbi_volumes[1][3, :128, :128] > 0).astype(np.float32)[None]
    return label


@pytest.mark.parametrize("name", [p for p in PRESETS if p != "none"])  # "none" has no spatial transform
def test_image_equal_to_label_stays_equal(name, patch):
    """Spatial presets move image and label together: an image identical to its label stays identical."""
    preset = augmentation(name, patch_size=(128, 128))
    spatial = Compose([t for t in preset if set(t.keys) >= {"image", "label"}])
    for seed in range(6):
        spatial.set_random_state(seed)
        out = spatial({"image": torch.from_numpy(patch.copy()), "label": torch.from_numpy(patch.copy())})
        # bilinear image vs nearest label differ only on interpolated edges: compare the binarised image
        agreement = ((out["image"] > 0.5) == (out["label"] > 0.5)).float().mean().item()
        assert agreement > 0.97, f"{name}, seed {seed}: {agreement:.3f}"


@pytest.mark.parametrize("name", PRESETS)
def test_labels_keep_valid_values(name, patch, isbi_volumes):
    preset = Compose(augmentation(name, patch_size=(128, 128)))
    image = isbi_volumes[0][3, :128, :128].astype(np.float32)[None] / 255
    for seed in range(6):
        preset.set_random_state(seed)
        out = preset({"image": torch.from_numpy(image), "label": torch.from_numpy(patch.copy())})
        assert set(torch.unique(out["label"]).tolist()) <= {0.0, 1.0}
        assert out["image"].shape == (1, 128, 128)


@pytest.mark.parametrize("build", [lambda: augmentation("fancy"), lambda: crop_size("fancy", (64, 64)),
                                   lambda: batched_augmentation("fancy", (64, 64))])
def test_unknown_preset(build):
    with pytest.raises(ValueError, match="unknown augmentation preset 'fancy'"):
        build()


def test_weight_map_peaks_between_touching_squares():
    label = np.zeros((40, 60), np.uint8)
    label[10:30, 10:28] = 1  # left square
    label[10:30, 30:50] = 1  # right square, 2-pixel membrane gap at columns 28-29
    w = border_weight_map(label, w0=10, sigma=5)
    assert np.unravel_index(np.argmax(w), w.shape)[1] in (28, 29)  # peak on the border between them
    n_membrane, n_interior = (label == 0).sum(), (label == 1).sum()
    w_membrane = label.size / (2 * n_membrane)
    # pixel (20, 28): nearest cell 1 px away (column 27), second-nearest 2 px away (column 30)
    assert w[20, 28] == pytest.approx(w_membrane + 10 * math.exp(-((1 + 2) ** 2) / (2 * 25)), rel=1e-5)
    assert w[20, 15] == pytest.approx(label.size / (2 * n_interior), rel=1e-5)  # interior: class weight only
    assert w[2, 2] < w[20, 28] / 2  # far from two cells: little extra weight


def test_weight_map_travels_with_the_label(patch):
    data = BorderWeightd("label")({"image": patch, "label": patch})
    assert data["weight"].shape == patch.shape and data["weight"].dtype == np.float32
    preset = Compose(augmentation("unet", weight_keys=("weight",), patch_size=(128, 128)))
    set_determinism(0)
    out = preset({"image": torch.from_numpy(patch), "label": torch.from_numpy(patch),
                  "weight": torch.from_numpy(data["weight"])})
    set_determinism(None)
    assert out["weight"].shape == (1, 128, 128)
    # weights stay high on membrane pixels and low inside cells after the same deformation
    assert out["weight"][out["label"] == 0].mean() > out["weight"][out["label"] == 1].mean()


def _ramps(size: int) -> dict:
    """Images whose values are their own row and column coordinates."""
    rows, columns = torch.meshgrid(torch.arange(size, dtype=torch.float32), torch.arange(size, dtype=torch.float32),
                                   indexing="ij")
    return {"image": rows[None].clone(), "label": columns[None].clone()}


def test_elastic_deformation_at_zero_displacement_is_the_identity():
    data = _ramps(96)
    elastic = ElasticDeformd(["image", "label"], sigma=10.0, mode=["bicubic", "bilinear"], output_size=(64, 64))
    elastic.set_random_state(0)
    elastic.randomize()
    elastic._displacement = np.zeros((2, 3, 3))  # drawn, then zeroed: resampled through the same grid path
    grid = elastic.sampling_grid((96, 96))
    moved = torch.nn.functional.grid_sample(data["image"][None], grid, mode="bicubic", align_corners=True)[0]
    assert (moved - data["image"]).abs().max() < 0.01  # coordinates move less than 0.01 px
    out = ElasticDeformd(["image", "label"], sigma=0.0, output_size=(64, 64))(data)
    assert torch.equal(out["image"], data["image"][:, 16:80, 16:80])  # sigma 0: the middle, not resampled


def test_elastic_displacement_has_the_stated_deviation():
    sigma, size = 10.0, 121  # the middle control point of the 3x3 grid sits on pixel (60, 60)
    elastic = ElasticDeformd(["image", "label"], sigma=sigma, mode="bilinear")
    elastic.set_random_state(0)
    displacements = []
    for _ in range(400):
        out = elastic(_ramps(size))
        displacements += [out["image"][0, 60, 60] - 60, out["label"][0, 60, 60] - 60]
    measured = torch.stack(displacements).std().item()
    assert abs(measured - sigma) < 0.1 * sigma, measured
    assert abs(torch.stack(displacements).mean().item()) < 0.1 * sigma


@pytest.mark.parametrize("name, zero", [("keras", {"rotation_degrees": 0, "shear_degrees": 0, "shift": 0, "zoom": 0}),
                                        ("unet", {"sigma": 0}),
                                        ("em", {"rotation_degrees": 0, "scale": 0, "elastic_sigma": 0})])
def test_every_spatial_transform_at_zero_strength_is_the_identity(name, zero, patch):
    """Flips and quarter turns aside (exact permutations), a preset at zero strength returns its input's middle."""
    crop = crop_size(name, (96, 96), **zero)
    image = torch.rand(1, *crop, generator=torch.Generator().manual_seed(0))
    label = torch.from_numpy(np.ascontiguousarray(patch[:, :crop[0], :crop[1]]))
    spatial = Compose([t for t in augmentation(name, patch_size=(96, 96), **zero)
                       if set(getattr(t, "keys", ())) >= {"image", "label"}
                       and not isinstance(t, (RandFlipd, RandRotate90d))])
    for seed in range(4):
        spatial.set_random_state(seed)
        out = spatial({"image": image.clone(), "label": label.clone()})
        start = [(c - 96) // 2 for c in crop]
        torch.testing.assert_close(torch.as_tensor(out["image"]),
                                   image[:, start[0]:start[0] + 96, start[1]:start[1] + 96], rtol=0, atol=1e-4)
        assert torch.equal(torch.as_tensor(out["label"]), label[:, start[0]:start[0] + 96, start[1]:start[1] + 96])


@pytest.mark.parametrize("degrees, scale", [(20, 0.1), (-20, 0.1), (20, -0.1), (0, 0.1)])
def test_em_rotation_and_scaling_never_reach_the_padding(degrees, scale):
    """The em preset's affine at its strongest (20 degrees, scale 1.1) on the crop crop_size gives: every patch
    pixel is read from inside the crop. Images that are their own coordinates must come out an exact affine
    function of the patch's coordinates; a pixel read from the reflection padding would fold that map."""
    patch_size = (96, 64)
    crop = crop_size("em", patch_size, elastic_sigma=0)
    rows, columns = torch.meshgrid(torch.arange(crop[0], dtype=torch.float32),
                                   torch.arange(crop[1], dtype=torch.float32), indexing="ij")
    data = {"image": rows[None].clone(), "label": columns[None].clone()}
    preset = augmentation("em", image_keys=("image", "label"), label_keys=(), patch_size=patch_size,
                          elastic_sigma=0)
    (affine,) = [t for t in preset if isinstance(t, RandAffined)]
    affine.prob = 1.0
    affine.rand_affine.rand_affine_grid.rotate_range = ((math.radians(degrees),) * 2,)
    affine.rand_affine.rand_affine_grid.scale_range = ((scale, scale), (scale, scale))
    spatial = Compose([t for t in preset if set(getattr(t, "keys", ())) >= {"image", "label"}
                       and not isinstance(t, (RandFlipd, RandRotate90d, RandAdjustContrastd, RandScaleIntensityd,
                                              RandShiftIntensityd, RandGaussianNoised, RandGaussianSmoothd))])
    out = spatial(data)
    assert out["image"].shape == (1, *patch_size)
    source = torch.stack([torch.as_tensor(out["image"])[0], torch.as_tensor(out["label"])[0]], -1).reshape(-1, 2)
    r, c = torch.meshgrid(torch.arange(patch_size[0], dtype=torch.float64),
                          torch.arange(patch_size[1], dtype=torch.float64), indexing="ij")
    design = torch.stack([r.reshape(-1), c.reshape(-1), torch.ones(r.numel(), dtype=torch.float64)], -1)
    fit = torch.linalg.lstsq(design, source.double()).solution
    assert (design @ fit - source.double()).abs().max() < 0.01
    spread = source.double().amax(0) - source.double().amin(0)  # the affine really rotated and scaled
    assert spread[0] == pytest.approx((1 + scale) * (95 * math.cos(math.radians(degrees))
                                                     + 63 * abs(math.sin(math.radians(degrees)))), rel=1e-3)


def test_elastic_presets_crop_a_margin_of_three_sigma():
    assert crop_size("unet", (256, 256)) == [316, 316]
    assert crop_size("unet", (256, 128), sigma=4) == [280, 152]
    assert crop_size("em", (256, 256)) == [408, 408]  # and the affine's reach: see the test above
    assert crop_size("keras", (256, 256)) == crop_size("none", (256, 256)) == [256, 256]


def test_unet_intensity_option_changes_image_values_only(isbi_volumes):
    """``intensity`` appends gamma/contrast/noise/blur after the spatial transforms: with the same seed the
    label and the geometry are those of the plain preset, and only some images' values change."""
    crop = crop_size("unet", (96, 96))
    image = isbi_volumes[0][3, :crop[0], :crop[1]].astype(np.float32)[None]
    image = (image - image.mean()) / image.std()
    label = (isbi_volumes[1][3, :crop[0], :crop[1]] > 0).astype(np.float32)[None]
    plain = Compose(augmentation("unet", patch_size=(96, 96)))
    with_intensity = Compose(augmentation("unet", patch_size=(96, 96), intensity=True))
    changed = 0
    for seed in range(12):
        plain.set_random_state(seed)
        with_intensity.set_random_state(seed)
        a = plain({"image": torch.from_numpy(image.copy()), "label": torch.from_numpy(label.copy())})
        b = with_intensity({"image": torch.from_numpy(image.copy()), "label": torch.from_numpy(label.copy())})
        assert torch.equal(torch.as_tensor(a["label"]), torch.as_tensor(b["label"]))
        if not torch.equal(torch.as_tensor(a["image"]), torch.as_tensor(b["image"])):
            changed += 1
            # still the same picture, not a resampled one
            correlation = np.corrcoef(np.asarray(a["image"]).ravel(), np.asarray(b["image"]).ravel())[0, 1]
            assert correlation > 0.8, (seed, correlation)
    # each of 5 transforms fires with probability 0.2-0.3: about 78% of samples change
    assert 6 <= changed <= 11, changed
