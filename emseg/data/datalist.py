"""Per-slice MONAI datalists built from (Z, H, W) image and label volumes."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np

from emseg.data.io import VolumeError

SPLIT_NAMES = ("train", "validation", "test")


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


def check_split(split: Mapping[str, Sequence[int]], num_slices: int, source: str | Path) -> dict[str, list[int]]:
    """Validate a {train, validation, test} -> slice indices mapping against ``num_slices``.

    Indices must lie in the volume and the three parts must not overlap, so that
    test slices are never used for training or model selection.
    """
    unknown = set(split) - set(SPLIT_NAMES)
    if unknown:
        raise ValueError(f"split has unknown parts {sorted(unknown)}; expected {SPLIT_NAMES}")
    parts = {name: [int(i) for i in split.get(name, [])] for name in SPLIT_NAMES}
    seen: dict[int, str] = {}
    for name, indices in parts.items():
        for index in indices:
            if not 0 <= index < num_slices:
                raise ValueError(f"split '{name}' names slice {index} but {source} has {num_slices} slices")
            if index in seen:
                raise ValueError(f"slice {index} is in both '{seen[index]}' and '{name}' splits")
            seen[index] = name
    return parts


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
