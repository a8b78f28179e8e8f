"""Class-index label maps from one binary mask folder per class.

A common layout for multi-class EM annotation (the EPFL hippocampus data, the TernausNet
reference project's originals/labels) is a folder of images plus, per structure, a folder of
masks with the same file names. :func:`class_mask_datalist` turns such a layout into MONAI
data items with one class-index label map per slice:

- 0 is background, class ``i`` of ``classes`` (in order) is ``i + 1``;
- a class may gather several mask folders (e.g. mitochondria and their boundaries);
- anti-aliased masks are binarised at ``threshold`` (mask value >= threshold is inside);
- where masks overlap, the class that comes first in ``priority`` wins;
- an empty mask is simply absent from the label map.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from emseg.io import VolumeError, list_slice_files, read_image

DEFAULT_THRESHOLD = 128


def read_mask(path: str | Path, threshold: int = DEFAULT_THRESHOLD) -> np.ndarray:
    """Boolean (H, W) mask from a grey (or grey+alpha) image: value >= ``threshold``."""
    return read_image(Path(path)) >= threshold


def class_index_map(masks: Mapping[str, np.ndarray], classes: Sequence[str], priority: Sequence[str]) -> np.ndarray:
    """uint8 (H, W) map: 0 background, ``classes.index(name) + 1`` inside ``masks[name]``;
    on overlaps the class listed first in ``priority`` wins."""
    if sorted(priority) != sorted(classes):
        raise ValueError(f"priority {list(priority)} must list each class of {list(classes)} once")
    shape = next(iter(masks.values())).shape
    label = np.zeros(shape, dtype=np.uint8)
    for name in reversed(priority):  # paint the lowest priority first, so higher ones overwrite it
        label[masks[name]] = classes.index(name) + 1
    return label


def _mask_file(root: Path, folder: str, image_file: Path) -> Path:
    directory = root / folder
    if not directory.is_dir():
        raise VolumeError(f"{directory}: mask folder not found (named in the class definition)")
    path = directory / image_file.name
    if not path.is_file():
        raise VolumeError(f"{path}: mask missing for image {image_file}")
    return path


def class_mask_datalist(
    root: str | Path,
    classes: Mapping[str, Sequence[str]],
    image_folder: str = "slices",
    priority: Sequence[str] | None = None,
    threshold: int = DEFAULT_THRESHOLD,
    indices: Sequence[int] | None = None,
    name: str | None = None,
) -> list[dict]:
    """MONAI data items ``{"image": (1, H, W) float32, "label": (1, H, W) float32 class index, "name", "index"}``.

    Args:
        root: folder holding ``image_folder`` and the mask folders.
        classes: class name -> mask folders (relative to ``root``), in class-index order.
        image_folder: folder of the images; masks are found by the same file name.
        priority: class names, highest priority first (default: the order of ``classes``).
        threshold: binarisation threshold of the anti-aliased masks.
        indices: which images (in natural file-name order) to load; default all.
        name: prefix of the item names (default: the folder name of ``root``).
    """
    root = Path(root)
    image_dir = root / image_folder
    if not image_dir.is_dir():
        raise VolumeError(f"{image_dir}: image folder not found")
    files = list_slice_files(image_dir)
    if not files:
        raise VolumeError(f"{image_dir}: folder holds no images")
    names = list(classes)
    priority = list(priority) if priority is not None else names
    prefix = name or root.name
    items = []
    for index in range(len(files)) if indices is None else indices:
        image_file = files[index]
        image = read_image(image_file)
        masks = {}
        for cls, folders in classes.items():
            mask = np.zeros(image.shape, dtype=bool)
            for folder in [folders] if isinstance(folders, str) else folders:
                path = _mask_file(root, folder, image_file)
                part = read_mask(path, threshold)
                if part.shape != image.shape:
                    raise VolumeError(f"{path}: mask shape {part.shape} differs from image {image_file} {image.shape}")
                mask |= part
            masks[cls] = mask
        label = class_index_map(masks, names, priority)
        items.append({"image": image[None].astype(np.float32), "label": label[None].astype(np.float32),
                      "name": f"{prefix}_{image_file.stem}", "index": int(index)})
    return items
