"""Augmentation presets keep images and labels aligned and labels valid; the border weight map."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from monai.transforms import Compose
from monai.utils import set_determinism

from emseg.transforms import PRESETS, BorderWeightd, augmentation, border_weight_map


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


def test_unknown_preset():
    with pytest.raises(ValueError, match="unknown augmentation preset 'fancy'"):
        augmentation("fancy")


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
