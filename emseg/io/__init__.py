"""Volume I/O: one reader and one writer per format, chosen by a registry.

Reading slice by slice is the primitive (:func:`open_slices`); :func:`read_volume` builds whole
volumes on it. Writers take one slice at a time and publish the output atomically.
"""

from emseg.io.readers import (
    READERS,
    list_slice_files,
    open_slices,
    read_image,
    read_volume,
    tiff_spacing,
    volume_spacing,
)
from emseg.io.source import SliceSource, VolumeError, natural_key
from emseg.io.writers import FORMATS, WRITERS, StackWriter, stack_writer, write_volume
from emseg.io.zarr_volumes import open_zarr, write_ome_zarr, zarr_spacing

__all__ = [
    "FORMATS",
    "READERS",
    "WRITERS",
    "SliceSource",
    "StackWriter",
    "VolumeError",
    "list_slice_files",
    "natural_key",
    "open_zarr",
    "open_slices",
    "read_image",
    "read_volume",
    "stack_writer",
    "tiff_spacing",
    "volume_spacing",
    "write_ome_zarr",
    "write_volume",
    "zarr_spacing",
]
