"""Reading any volume: :func:`open_slices` returns a :class:`~emseg.io.source.SliceSource` that reads one slice at a
time, through the reader of the file's format (:mod:`emseg.io.formats`), so memory does not grow with the stack;
:func:`read_volume` stacks its slices into a (Z, H, W) array. Every failure raises :class:`VolumeError` naming the
file."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from emseg.io.formats import FORMATS, format_of
from emseg.io.images import open_folder
from emseg.io.source import SliceSource, VolumeError, check_fits
from emseg.io.zarr_volumes import ZARR_SUFFIX, is_zarr_store


def open_slices(path: str | Path, key: str | None = None) -> SliceSource:
    """A :class:`SliceSource` over the slices of the volume at ``path`` (``key``: HDF5 dataset or zarr array)."""
    path = Path(path)
    if not path.exists():
        raise VolumeError(f"{path}: no such file or folder")
    if path.is_dir() and not path.name.lower().endswith(ZARR_SUFFIX):
        return open_folder(path, key)
    return format_of(path).open(path, key)


def read_volume(path: str | Path, key: str | None = None) -> np.ndarray:
    """The whole volume at ``path`` as a (Z, H, W) array (a 2-D image becomes one slice); one larger than memory is
    refused before it is read."""
    with open_slices(path, key) as source:
        check_fits(source.path, len(source), source.shape, source.itemsize)
        return np.stack(list(source))


def volume_spacing(path: str | Path) -> tuple[float, ...] | None:
    """Voxel size (z, y, x) in micrometres stated by the volume at ``path`` (OME-Zarr, ImageJ or emseg TIFF), None
    where the format or the file states none."""
    path = Path(path)
    if not (path.is_file() or is_zarr_store(path)):
        return None
    for spec in FORMATS.values():
        if spec.spacing is not None and str(path).lower().endswith(tuple(spec.suffixes)):
            return spec.spacing(path)
    return None
