"""Class-balanced crops (crop_ratios) bring EPFL's rare classes into the training batches."""

from __future__ import annotations

import pytest
import torch
from conftest import REPO_ROOT
from monai.utils import set_determinism

from emseg.engine.paths import load_config
from emseg.transforms import random_crops

RARE = {"mitochondria": 2, "vesicles": 3, "PSD": 4}


def _batches(epfl_dir, ratios) -> list[torch.Tensor]:
    """Labels of 3 epochs of ternausnet11's own training batches (8 patches of 128x128, no augmentation)."""
    set_determinism(0)
    parser = load_config(REPO_ROOT / "bundles" / "ternausnet11" / "configs" / "train.json",
                         {"dataset_dir": str(epfl_dir), "download": False, "crop_ratios": ratios,
                          "patch_size": [128, 128], "augmentation": "none"})
    loader = parser.get_parsed_content("train#dataloader")
    labels = [batch["label"] for _ in range(3) for batch in loader]
    set_determinism(None)
    return labels


def test_balanced_crops_put_rare_classes_in_most_batches(epfl_dir):
    balanced, anywhere = _batches(epfl_dir, "uniform"), _batches(epfl_dir, None)
    for name, index in RARE.items():
        share = sum(bool((labels == index).any()) for labels in balanced) / len(balanced)
        assert share >= 0.9, f"{name}: in {share:.0%} of the batches"
    psd = [sum((labels == RARE["PSD"]).sum().item() for labels in batches) / sum(labels.numel() for labels in batches)
           for batches in (balanced, anywhere)]
    assert psd[0] > 2 * psd[1], psd


def test_crop_ratios_must_be_one_weight_per_class():
    with pytest.raises(ValueError, match='crop_ratios must be null, "uniform" or 6 non-negative weights'):
        random_crops(["image", "label"], [64, 64], 2, 6, [1, 1])
    with pytest.raises(ValueError, match="crop_ratios must be"):
        random_crops(["image", "label"], [64, 64], 2, 2, "balanced")
