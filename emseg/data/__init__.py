"""Data I/O, datalists and data set definitions."""

from emseg.data.class_masks import class_index_map, class_mask_datalist
from emseg.data.datalist import binary_label, check_pair, check_split, slice_datalist
from emseg.data.io import VolumeError, read_volume, write_nifti, write_slice_folder, write_tiff
from emseg.data.datasets import DATASETS, dataset_class_names, dataset_datalist, ensure_dataset
from emseg.data.epfl import EPFL_CLASSES, EPFL_PRIORITY, class_names, epfl_datalist
from emseg.data.isbi2012 import DatasetNotFoundError, ensure_isbi2012, isbi2012_datalist, load_isbi2012
from emseg.data.splits import resolve_split, split_by_fractions
from emseg.data.tiling import cut_grid, stitch_grid, tile_datalist

__all__ = [
    "DATASETS",
    "EPFL_CLASSES",
    "EPFL_PRIORITY",
    "DatasetNotFoundError",
    "VolumeError",
    "binary_label",
    "check_pair",
    "check_split",
    "class_index_map",
    "class_mask_datalist",
    "class_names",
    "cut_grid",
    "dataset_class_names",
    "dataset_datalist",
    "ensure_dataset",
    "epfl_datalist",
    "ensure_isbi2012",
    "isbi2012_datalist",
    "load_isbi2012",
    "read_volume",
    "resolve_split",
    "split_by_fractions",
    "slice_datalist",
    "stitch_grid",
    "tile_datalist",
    "write_nifti",
    "write_slice_folder",
    "write_tiff",
]
