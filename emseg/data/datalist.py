"""Per-slice MONAI datalists built from (Z, H, W) image and label volumes."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import numpy as np

from emseg.io import VolumeError


class DatasetNotFoundError(FileNotFoundError):
    """The data set's files are not in the dataset folder and could not be downloaded."""


def check_pair(image: np.ndarray, label: np.ndarray, image_path: str | Path, label_path: str | Path) -> None:
    """Raise :class:`VolumeError` unless ``label`` matches ``image`` slice for slice."""
    if image.shape[0] != label.shape[0]:
        raise VolumeError(
            f"{label_path}: {label.shape[0]} label slices but {image_path} has {image.shape[0]} image slices"
        )
    if image.shape[1:] != label.shape[1:]:
        raise VolumeError(
            f"{label_path}: label slices are {label.shape[1:]} but {image_path} slices are {image.shape[1:]}"
        )


def binary_label(label: np.ndarray, path: str | Path, foreground: int = 255) -> np.ndarray:
    """Map a {0, foreground} label volume to {0, 1}; any other value is an error naming ``path``."""
    values = np.unique(label)
    allowed = {0, foreground, 1} if foreground != 1 else {0, 1}
    unexpected = [v for v in values.tolist() if v not in allowed]
    if unexpected:
        raise VolumeError(
            f"{path}: a binary label must hold only 0 and {foreground}; found {unexpected[:5]}"
            f"{' ...' if len(unexpected) > 5 else ''}"
        )
    return (label > 0).astype(np.uint8)


def slice_datalist(
    image: np.ndarray, label: np.ndarray | None, indices: Iterable[int], name: str = "slice"
) -> list[dict]:
    """One MONAI data item per slice: ``{"image": (1, H, W) float32, "label": (1, H, W) float32, "name", "index"}``."""
    items = []
    for index in indices:
        item = {
            "image": image[index][None].astype(np.float32),
            "name": f"{name}_{index:03d}",
            "index": int(index),
        }
        if label is not None:
            item["label"] = label[index][None].astype(np.float32)
        items.append(item)
    return items
