"""Data I/O, datalists and data set definitions."""

from emseg.data.datalist import binary_label, check_pair, check_split, slice_datalist
from emseg.data.io import VolumeError, read_volume, write_nifti, write_slice_folder, write_tiff
from emseg.data.isbi2012 import DatasetNotFoundError, ensure_isbi2012, isbi2012_datalist, load_isbi2012

__all__ = [
    "DatasetNotFoundError",
    "VolumeError",
    "binary_label",
    "check_pair",
    "check_split",
    "ensure_isbi2012",
    "isbi2012_datalist",
    "load_isbi2012",
    "read_volume",
    "slice_datalist",
    "write_nifti",
    "write_slice_folder",
    "write_tiff",
]
