"""Data sets by name (ISBI 2012, EPFL hippocampus, a lab's folders), splits, tiling, downloads, loader workers."""

from emseg.data.class_masks import class_index_map, class_mask_datalist
from emseg.data.datalist import (
    DatasetNotFoundError,
    binary_label,
    check_pair,
    slice_datalist,
)
from emseg.data.datasets import (
    DATASETS,
    class_names,
    datalist,
    dataset_classes,
    default_dataset_dir,
    ensure_dataset,
    get_dataset,
    interior_class,
    test_images,
    voxel_spacing,
)
from emseg.data.splits import check_split, resolve_split, split_by_fractions
from emseg.data.tiling import cut_grid, stitch_grid, tile_datalist
from emseg.data.workers import loader_workers

__all__ = [
    "DATASETS",
    "DatasetNotFoundError",
    "binary_label",
    "check_pair",
    "check_split",
    "class_index_map",
    "class_mask_datalist",
    "class_names",
    "cut_grid",
    "datalist",
    "dataset_classes",
    "default_dataset_dir",
    "ensure_dataset",
    "get_dataset",
    "interior_class",
    "loader_workers",
    "resolve_split",
    "slice_datalist",
    "split_by_fractions",
    "stitch_grid",
    "test_images",
    "tile_datalist",
    "voxel_spacing",
]
