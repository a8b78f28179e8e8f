"""Painted (sparse) labels: label images in which only some pixels are labelled.

A lab that paints a few strokes across membranes and cells in napari's labels layer, Fiji or ilastik saves one
label image per slice in which **0 means not painted** and a painted value ``v`` (1, 2, ...) means the class
``v - 1`` of the bundle's ``class_names`` (for the ``folders`` data set: 1 = background, 2 = the first class of
``classes``, ...). Dense labels are the case where every pixel is painted.

Inside emseg a class-index label map holds :data:`UNLABELLED` (-1) where nothing was painted. Those pixels enter no
loss (:mod:`emseg.losses`) and no score (:mod:`emseg.evaluation`): they give exactly zero gradient.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from emseg.io import VolumeError, list_slice_files, read_image

UNLABELLED = -1  # the class index of a pixel nobody labelled
LABELS_FOLDER = "labels"


def painted_to_classes(painted: np.ndarray, num_classes: int, path: str | Path) -> np.ndarray:
    """int16 class-index map of a painted label image: 0 -> :data:`UNLABELLED`, ``v`` -> class ``v - 1``. A value
    above ``num_classes`` is an error naming ``path``."""
    painted = np.asarray(painted)
    if painted.dtype.kind == "f" and not np.array_equal(painted, np.round(painted)):
        raise VolumeError(f"{path}: painted labels must be whole numbers (0 = not painted, 1.. = class), found "
                          f"fractions; save the labels layer, not a probability or an anti-aliased mask")
    values = np.unique(painted)
    wrong = [int(v) for v in values if v < 0 or v > num_classes]
    if wrong:
        raise VolumeError(f"{path}: painted value {wrong[-1]} but there are {num_classes} classes (0 = not painted, "
                          f"1..{num_classes} = class 1..{num_classes}); fix the labels or --classes")
    return painted.astype(np.int16) - 1


def classes_to_painted(classes: np.ndarray) -> np.ndarray:
    """uint8 painted label image of a class-index map: :data:`UNLABELLED` -> 0, class ``c`` -> ``c + 1``."""
    return (np.asarray(classes).astype(np.int16) + 1).astype(np.uint8)


def painted_datalist(root: str | Path, image_folder: str, class_names: Sequence[str],
                     indices: Sequence[int] | None = None, name: str | None = None) -> list[dict]:
    """MONAI data items ``{"image": (1, H, W) float32, "label": (1, H, W) float32 class index or UNLABELLED, "name",
    "index"}`` of ``root/image_folder`` and ``root/labels`` (painted, same file names)."""
    root = Path(root)
    image_dir, label_dir = root / image_folder, root / LABELS_FOLDER
    files = list_slice_files(image_dir)
    if not files:
        raise VolumeError(f"{image_dir}: folder holds no images")
    items = []
    for index in range(len(files)) if indices is None else indices:
        image_file = files[index]
        label_file = next((p for p in sorted(label_dir.glob(image_file.stem + ".*")) if p.is_file()), None)
        if label_file is None:
            raise VolumeError(f"{label_dir / image_file.name}: painted labels missing for image {image_file} (paint "
                              f"it, or leave the slice out of the split)")
        image, label = read_image(image_file), painted_to_classes(read_image(label_file), len(class_names), label_file)
        if label.shape != image.shape:
            raise VolumeError(f"{label_file}: labels of shape {label.shape} for image {image_file} of {image.shape}")
        items.append({"image": image[None].astype(np.float32), "label": label[None].astype(np.float32),
                      "name": f"{name or root.name}_{image_file.stem}", "index": int(index)})
    return items
