"""The presets as batched operations on the device: the same maps as the per-sample MONAI transforms, labels kept,
the same random draws in distribution, reproducible from a seed."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from monai.transforms import Compose

from emseg.transforms import PRESETS, ElasticDeformd, PresetKeys, augmentation, batched_augmentation, crop_size
from emseg.transforms.base import Intensity, intensity_transforms
from emseg.transforms.batched import Affine, Batched, Elastic, augment, blur, intensities

ZERO = {"keras": {"rotation_degrees": 0, "shear_degrees": 0, "shift": 0, "zoom": 0}, "unet": {"sigma": 0},
        "em": {"rotation_degrees": 0, "scale": 0, "elastic_sigma": 0}, "none": {}}


def dihedral(x: torch.Tensor) -> list[torch.Tensor]:
    """The 8 flips and quarter turns of (..., H, W)."""
    turns = [torch.rot90(x, k, dims=(-2, -1)) for k in range(4)]
    return turns + [t.flip(-1) for t in turns]


@pytest.fixture(scope="module")
def isbi_crops(isbi_volumes):
    """16 crops of 160x160 from ISBI slices: normalised images, binary labels."""
    images, labels = isbi_volumes
    rows = [(i % 30, 40 * (i % 4), 50 * (i // 4 % 4)) for i in range(16)]
    image = torch.stack([torch.from_numpy(images[s, r:r + 160, c:c + 160].astype(np.float32)) for s, r, c in rows])
    label = torch.stack([torch.from_numpy((labels[s, r:r + 160, c:c + 160] > 0).astype(np.float32))
                         for s, r, c in rows])
    return {"image": ((image - image.mean()) / image.std())[:, None], "label": label[:, None]}


@pytest.mark.parametrize("name", PRESETS)
def test_at_zero_strength_every_patch_is_a_flip_or_turn_of_the_crops_middle(name, isbi_crops):
    """With every deformation at zero, a preset's batched form moves pixels only by flips and quarter turns: labels
    exactly, images to float rounding of the sampling grid."""
    crop = crop_size(name, (96, 96), **ZERO[name])
    crops = {k: v[:, :, :crop[0], :crop[1]] for k, v in isbi_crops.items()}
    spec = dataclasses.replace(batched_augmentation(name, (96, 96), **ZERO[name]), intensity=None)  # spatial only
    out = augment(crops, spec, PresetKeys(), torch.Generator().manual_seed(1))
    start = [(c - 96) // 2 for c in crop]
    for n in range(len(out["label"])):
        middle = {k: v[n, :, start[0]:start[0] + 96, start[1]:start[1] + 96] for k, v in crops.items()}
        label_matches = [i for i, t in enumerate(dihedral(middle["label"])) if torch.equal(t, out["label"][n])]
        assert label_matches, f"{name}: patch {n}'s label is no flip or turn of its crop's middle"
        images = dihedral(middle["image"])
        assert any(torch.allclose(out["image"][n], images[i], rtol=0, atol=1e-4) for i in label_matches), name


def test_flips_and_quarter_turns_are_all_drawn_alike(isbi_crops):
    """The unet preset's flips and quarter turns reach all 8 orientations, each about 1/8 of the patches."""
    crops = {k: v[:1, :, :64, :64].expand(4000, -1, -1, -1) for k, v in isbi_crops.items()}
    spec = Batched((64, 64), flips=True, rotate90=True)
    out = augment(crops, spec, PresetKeys(), torch.Generator().manual_seed(0))
    orientations = torch.stack(dihedral(crops["label"][0]))  # (8, 1, 64, 64)
    which = (out["label"][:, None] == orientations[None]).flatten(2).all(-1).float().argmax(-1)
    counts = torch.bincount(which, minlength=8).float() / 4000
    # the labels' 8 orientations differ, so each patch matches one; 4000 draws: standard error 0.005
    assert torch.all((counts - 1 / 8).abs() < 0.025), counts


def test_elastic_deformation_reads_the_crop_where_elastic_deformd_does():
    """The batched elastic deformation of a crop is ElasticDeformd's for the same displacements."""
    crop, patch, sigma = (140, 140), (80, 80), 10.0
    image = torch.rand(1, 1, *crop, generator=torch.Generator().manual_seed(0))
    label = (torch.rand(1, 1, *crop, generator=torch.Generator().manual_seed(1)) > 0.5).float()
    spec = Batched(patch, elastic=Elastic(prob=1.0, sigma=sigma), image_mode="bicubic")
    generator = torch.Generator().manual_seed(3)
    state = generator.get_state()
    out = augment({"image": image, "label": label}, spec, PresetKeys(), generator)
    from emseg.transforms.batched import draw

    coarse = draw(spec, 1, crop, torch.Generator().set_state(state)).coarse  # what augment drew
    reference = ElasticDeformd(["image", "label"], sigma=sigma, mode=["bicubic", "nearest"], output_size=patch)
    reference._displacement = coarse[0].numpy()
    grid = reference.sampling_grid(crop)
    expected = {}
    for key, mode in (("image", "bicubic"), ("label", "nearest")):
        expected[key] = reference._middle(torch.nn.functional.grid_sample(
            {"image": image, "label": label}[key], grid, mode=mode, padding_mode="reflection", align_corners=True))
    assert float(coarse.abs().max()) > 5  # a real deformation
    torch.testing.assert_close(out["image"], expected["image"], rtol=0, atol=1e-4)
    assert (out["label"] != expected["label"]).float().mean() < 1e-3  # nearest: ties at rounding only


def test_keras_affine_reaches_the_padding_as_often_as_monai(isbi_crops):
    """The keras preset pads with zeros beyond the crop: the share of padded pixels over many patches, a measure of
    the rotation, shear, zoom and shift drawn, is MONAI's RandAffined's."""
    patch = (96, 96)
    ones = torch.ones(400, 1, *patch)
    spec = batched_augmentation("keras", patch)
    batched = augment({"image": ones, "label": ones}, spec, PresetKeys(), torch.Generator().manual_seed(0))
    batched_share = float((batched["label"] == 0).float().mean())
    monai = Compose(augmentation("keras", patch_size=patch))
    monai.set_random_state(0)
    shares = [float((torch.as_tensor(monai({"image": ones[0], "label": ones[0]})["label"]) == 0).float().mean())
              for _ in range(400)]
    monai_share = float(np.mean(shares))
    assert 0.02 < monai_share < 0.5
    # 400 patches each: the spread of the mean share is about 0.006
    assert abs(batched_share - monai_share) < 0.025, (batched_share, monai_share)


def test_intensities_change_as_many_patches_as_monai():
    """The em intensities leave a patch unchanged with the probability MONAI's transforms do ((0.7^3)(0.8^2))."""
    images = torch.randn(1, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    many = images.expand(3000, -1, -1, -1).contiguous()
    out = intensities(many, Intensity(), torch.Generator().manual_seed(0), torch.Generator().manual_seed(1))
    batched_unchanged = float((out == images).flatten(1).all(-1).float().mean())
    monai = Compose(intensity_transforms(["image"]))
    monai.set_random_state(0)
    monai_unchanged = np.mean([bool(torch.equal(torch.as_tensor(monai({"image": images[0]})["image"]), images[0]))
                               for _ in range(3000)])
    expected = 0.7**3 * 0.8**2
    assert abs(monai_unchanged - expected) < 0.03 and abs(batched_unchanged - expected) < 0.03


def test_blur_is_monais_gaussian_smoothing_with_each_patchs_own_sigma():
    """Away from the edges (where this blur reflects and MONAI's pads zeros) each patch is blurred as MONAI's
    GaussianSmooth blurs it with that patch's sigma per axis."""
    from monai.transforms import GaussianSmooth

    x = torch.randn(3, 1, 48, 40, generator=torch.Generator().manual_seed(0))
    sigmas = torch.tensor([[0.5, 1.0], [1.0, 0.6], [0.7, 0.7]])
    y = blur(x, sigmas)
    for n in range(3):
        expected = torch.as_tensor(GaussianSmooth(sigma=sigmas[n].tolist())(x[n]))
        torch.testing.assert_close(y[n, :, 5:-5, 5:-5], expected[:, 5:-5, 5:-5], rtol=0, atol=1e-4)


@pytest.mark.parametrize("name", PRESETS)
def test_labels_keep_their_values_unlabelled_included(name, isbi_crops):
    label = isbi_crops["label"].clone()
    label[:, :, ::7, ::5] = -1  # unpainted pixels
    crop = crop_size(name, (96, 96))
    crops = {"image": isbi_crops["image"][:, :, :crop[0], :crop[1]], "label": label[:, :, :crop[0], :crop[1]]}
    out = augment(crops, batched_augmentation(name, (96, 96)), PresetKeys(), torch.Generator().manual_seed(0))
    assert out["image"].shape == out["label"].shape == (16, 1, 96, 96)
    assert set(out["label"].unique().tolist()) <= {-1.0, 0.0, 1.0}
    if name != "keras":  # keras pads with zeros; the others never read beyond the crop
        assert set(out["label"].unique().tolist()) == {-1.0, 0.0, 1.0}


def test_a_seed_gives_the_same_patches_and_another_seed_others(isbi_crops):
    spec = batched_augmentation("em", (96, 96))
    crop = crop_size("em", (96, 96))
    crops = {k: torch.nn.functional.pad(v, (0, crop[1] - 160, 0, crop[0] - 160), mode="reflect")
             for k, v in isbi_crops.items()}

    def run(seed):
        return augment(crops, spec, PresetKeys(), torch.Generator().manual_seed(seed))

    first, again, other = run(5), run(5), run(6)
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert not torch.equal(first["image"], other["image"])


def test_affine_and_elastic_draw_for_their_share_of_patches():
    from emseg.transforms.batched import draw

    spec = Batched((64, 64), affine=Affine(0.5, 0.3, 0.1), elastic=Elastic(0.3, 5.0))
    parameters = draw(spec, 4000, (100, 100), torch.Generator().manual_seed(0))
    affine = (parameters.linear - torch.eye(2, dtype=torch.float64)).abs().flatten(1).amax(1) > 0
    elastic = parameters.coarse.abs().flatten(1).amax(1) > 0
    assert abs(float(affine.double().mean()) - 0.5) < 0.03 and abs(float(elastic.double().mean()) - 0.3) < 0.03
    angles = torch.atan2(parameters.linear[affine, 1, 0], parameters.linear[affine, 0, 0] / 1.0)
    assert float(angles.abs().max()) <= 0.3 + 1e-9 and float(angles.abs().max()) > 0.29
