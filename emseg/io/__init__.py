"""Volume I/O: one module per format (``tiff``, ``images``, ``hdf5``, ``nifti``, ``zarr_volumes``), each declaring
its suffixes, reader and writer (:class:`~emseg.io.format.Format`), and one table of them (:mod:`emseg.io.formats`).

Reading slice by slice is the primitive (:func:`open_slices`); :func:`read_volume` builds whole volumes on it.
Writers take one slice at a time and publish the output atomically (:mod:`emseg.io.stack`).
"""

from emseg.io.formats import FORMATS, SUFFIXES, format_for_path, format_of, output_suffix
from emseg.io.images import list_slice_files, read_image
from emseg.io.readers import open_slices, read_volume, volume_spacing
from emseg.io.source import SliceSource, VolumeError, natural_key
from emseg.io.stack import StackWriter
from emseg.io.tiff import tiff_spacing
from emseg.io.writers import stack_writer, write_volume
from emseg.io.zarr_volumes import open_zarr, write_ome_zarr, zarr_spacing

__all__ = [
    "FORMATS",
    "SUFFIXES",
    "SliceSource",
    "StackWriter",
    "VolumeError",
    "format_for_path",
    "format_of",
    "list_slice_files",
    "natural_key",
    "open_slices",
    "open_zarr",
    "output_suffix",
    "read_image",
    "read_volume",
    "stack_writer",
    "tiff_spacing",
    "volume_spacing",
    "write_ome_zarr",
    "write_volume",
    "zarr_spacing",
]
