"""`emseg augment preview`: a grid of the bundle's own augmented pairs, and pairs saved as PNG."""

from __future__ import annotations

import numpy as np
from conftest import REPO_ROOT
from PIL import Image

from emseg.bundle.preview import augmented_pairs, preview_grid
from emseg.cli import main


def test_preview_grid_size(tmp_path, isbi_dir):
    out = tmp_path / "aug.png"
    assert main(["augment", "preview", "--bundle", str(REPO_ROOT / "bundles" / "unet"), "--n", "6",
                 "--columns", "3", "--out", str(out), "--dataset-dir", str(isbi_dir)]) == 0
    with Image.open(out) as grid:
        # 3 x 2 tiles of the bundle's 256x256 patches with 4-pixel gaps
        assert grid.size == (3 * 256 + 2 * 4, 2 * 256 + 4) and grid.mode == "RGB"


def test_save_writes_requested_count(tmp_path, isbi_dir):
    folder = tmp_path / "augmented"
    assert main(["augment", "preview", "--bundle", str(REPO_ROOT / "bundles" / "unet"), "--save", str(folder),
                 "--count", "10", "--dataset-dir", str(isbi_dir), "--augmentation", "keras"]) == 0
    images = sorted((folder / "images").iterdir())
    labels = sorted((folder / "labels").iterdir())
    assert len(images) == len(labels) == 10
    label = np.asarray(Image.open(labels[0]))
    assert set(np.unique(label).tolist()) <= {0, 255}


def test_pairs_come_from_the_training_pipeline(isbi_dir):
    pairs = list(augmented_pairs(REPO_ROOT / "bundles" / "unet", 3, dataset_dir=str(isbi_dir), download=False,
                                 patch_size=[64, 64], augmentation="none"))
    assert len(pairs) == 3 and all(image.shape == label.shape == (64, 64) for image, label in pairs)
    assert preview_grid(pairs, columns=2).shape == (2 * 64 + 4, 2 * 64 + 4, 3)


def test_preview_needs_an_output(capsys):
    assert main(["augment", "preview"]) == 1
    assert "--out PNG" in capsys.readouterr().err


def test_device_feed_pairs_are_the_loaders_kind(isbi_dir):
    """--feed device previews the patches the device feed trains on: the same size and label values, the same
    patches for the same seed."""
    options = dict(dataset_dir=str(isbi_dir), download=False, patch_size=[64, 64], augmentation="unet",
                   feed="device", device="$torch.device('cpu')")
    pairs = list(augmented_pairs(REPO_ROOT / "bundles" / "unet", 5, seed=3, **options))
    again = list(augmented_pairs(REPO_ROOT / "bundles" / "unet", 5, seed=3, **options))
    assert len(pairs) == 5 and all(image.shape == label.shape == (64, 64) for image, label in pairs)
    assert all(set(np.unique(label).tolist()) <= {0.0, 1.0} for _, label in pairs)
    assert all(np.array_equal(a[0], b[0]) for a, b in zip(pairs, again))
