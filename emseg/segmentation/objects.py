"""A table of the objects in a label stack: one row per object (or per object and slice), in physical units.

Measured by scikit-image's ``regionprops_table`` with the voxel spacing (z, y, x) in micrometres, so areas,
volumes, centroids and perimeters come out in micrometres; bounding boxes stay in pixels (slice, row, column:
first inclusive, last exclusive) to find the object in the stack. With a raw image, the mean intensity of the
object's pixels is added.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from emseg.io.files import write_csv_atomically
from emseg.io.safety import check_new_files

# regionprops_table's columns renamed for the table, in (Z, Y, X) order
_VOLUME_COLUMNS = {"area": "volume_um3", "centroid-0": "centroid_z_um", "centroid-1": "centroid_y_um",
                   "centroid-2": "centroid_x_um", "bbox-0": "first_slice", "bbox-1": "bbox_row_start",
                   "bbox-2": "bbox_column_start", "bbox-3": "end_slice", "bbox-4": "bbox_row_end",
                   "bbox-5": "bbox_column_end", "intensity_mean": "mean_intensity"}
_SLICE_COLUMNS = {"area": "area_um2", "perimeter": "perimeter_um", "centroid-0": "centroid_y_um",
                  "centroid-1": "centroid_x_um", "bbox-0": "bbox_row_start", "bbox-1": "bbox_column_start",
                  "bbox-2": "bbox_row_end", "bbox-3": "bbox_column_end", "intensity_mean": "mean_intensity"}


def _table(labels: np.ndarray, image: np.ndarray | None, spacing: Sequence[float], names: dict) -> dict:
    from skimage.measure import regionprops_table

    properties = [name for name in ("label", *dict.fromkeys(key.split("-")[0] for key in names))
                  if image is not None or name != "intensity_mean"]
    table = regionprops_table(labels, intensity_image=image, properties=properties, spacing=tuple(spacing))
    return {names.get(key, key): value for key, value in table.items()}


def object_table(labels: np.ndarray, image: np.ndarray | None = None, spacing: Sequence[float] = (1.0, 1.0, 1.0),
                 per_slice: bool = False) -> list[dict]:
    """Rows of measurements of the objects of a (Z, H, W) (or (H, W)) label stack; 0 is background.

    Per object (default): label, first_slice, end_slice, slices spanned, volume (um^3), centroid (um), bounding box
    and mean intensity. ``per_slice`` (always for a 2-D image): one row per object and slice with the slice, its
    area (um^2) and perimeter (um) instead of the volume.
    """
    labels = np.asarray(labels)
    if labels.ndim == 2:
        labels, image, per_slice = labels[None], None if image is None else np.asarray(image)[None], True
    if labels.ndim != 3:
        raise ValueError(f"object_table takes (Z, H, W) or (H, W) labels, got shape {labels.shape}")
    if labels.dtype.kind not in "iu":
        raise ValueError(f"labels must be integers, got {labels.dtype}")
    if image is not None and np.shape(image) != labels.shape:
        raise ValueError(f"the image's shape {np.shape(image)} differs from the labels' {labels.shape}")
    if len(spacing) != 3:
        raise ValueError(f"spacing must be (z, y, x), got {list(spacing)}")
    rows: list[dict] = []
    if not per_slice:
        table = _table(labels, image, spacing, _VOLUME_COLUMNS)
        table["slices"] = table["end_slice"] - table["first_slice"]
        order = ["label", "first_slice", "end_slice", "slices", "volume_um3", "centroid_z_um", "centroid_y_um",
                 "centroid_x_um", "bbox_row_start", "bbox_column_start", "bbox_row_end", "bbox_column_end"]
        rows = _rows(table, order + (["mean_intensity"] if image is not None else []))
    else:
        for z, plane in enumerate(labels):
            table = _table(plane, None if image is None else image[z], spacing[1:], _SLICE_COLUMNS)
            table["slice"] = np.full(len(table["label"]), z)
            order = ["label", "slice", "area_um2", "perimeter_um", "centroid_y_um", "centroid_x_um",
                     "bbox_row_start", "bbox_column_start", "bbox_row_end", "bbox_column_end"]
            rows += _rows(table, order + (["mean_intensity"] if image is not None else []))
    return rows


def _rows(table: dict, order: list[str]) -> list[dict]:
    return [{key: table[key][i].item() for key in order} for i in range(len(table["label"]))]


def write_object_table(rows: list[dict], path: str | Path, overwrite: bool = False) -> Path:
    """Write ``rows`` as CSV (atomically; an existing file is replaced only with ``overwrite``)."""

    path = Path(path)
    check_new_files([path], overwrite)
    return write_csv_atomically(path, rows, None if rows else ["label"])
