"""File > Open: every stack emseg reads becomes an image layer at its pixel size (z, y, x in micrometres, where the
file states one). TIFF stacks, folders of slices, HDF5 and NIfTI are read whole through :mod:`emseg.io`; a zarr
array or OME-Zarr image is opened lazily as dask arrays (every resolution of an OME-Zarr pyramid), so a volume
larger than memory opens at once and napari reads only what it shows. An HDF5 file with several (Z, H, W) datasets
gives one layer each. A file emseg cannot read is declined (napari then tries its other readers); a file it
accepted but finds broken is one error naming it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import dask.array as da
import h5py
import numpy as np

from emseg.io import SUFFIXES, VolumeError, list_slice_files, read_volume, volume_spacing
from emseg.io.source import suffix
from emseg.io.zarr_volumes import is_zarr_store, open_zarr, zarr_array

LayerData = tuple[object, dict, str]


def get_reader(path: str | list[str]) -> Callable[[str], list[LayerData]] | None:
    """napari's reader hook: :func:`read` for one path emseg reads, else None (napari tries other readers)."""
    if isinstance(path, list):
        if len(path) != 1:
            return None
        path = path[0]
    found = Path(path)
    if is_zarr_store(found) or (found.is_dir() and list_slice_files(found)):
        return read
    return read if found.is_file() and suffix(found) in SUFFIXES else None


def _metadata(path: Path, name: str | None = None, ndim: int = 3) -> dict:
    spacing = volume_spacing(path) or (1.0, 1.0, 1.0)
    return {"name": name or path.name, "scale": tuple(spacing)[-ndim:],
            "metadata": {"emseg_path": str(path), "spacing": tuple(spacing)}}


def _zarr_layers(path: Path) -> list[LayerData]:
    """The image of a zarr store, lazily: refused at once (naming it) where emseg's reader would refuse it, a slice
    larger than memory included; dask blocks of about dask's own size, so a store of tiny chunks does not make a
    graph of millions."""
    array, multiscales = zarr_array(path, None)
    with open_zarr(path) as source:  # the checks of emseg's reader: shape, a slice that fits in memory
        if not (isinstance(array.dtype, np.dtype) and (array.dtype.kind in "uif" or array.dtype == bool)):
            raise VolumeError(f"{path}: unsupported pixel type {array.dtype}")
        shape = (len(source), *source.shape) if array.ndim > 2 else source.shape
    if not multiscales:
        data = da.from_zarr(array, chunks="auto").reshape(shape)
        return [(data, _metadata(path, ndim=data.ndim), "image")]
    import zarr

    try:
        group = zarr.open(str(path), mode="r")
        levels = [da.from_zarr(group[level["path"]], chunks="auto") for level in multiscales[0]["datasets"]]
        levels = [level.reshape(level.shape[-3:]) if level.ndim > 3 else level for level in levels]
    except Exception as err:  # damaged multiscales metadata
        raise VolumeError(f"{path}: damaged OME-Zarr metadata ({type(err).__name__}: {err}); copy it again from its "
                          f"source") from err
    return [(levels if len(levels) > 1 else levels[0], {**_metadata(path, ndim=levels[0].ndim),
                                                         "multiscale": len(levels) > 1}, "image")]


def _hdf5_layers(path: Path) -> list[LayerData]:
    try:
        with h5py.File(path, "r") as handle:
            keys = []
            handle.visititems(lambda key, node: keys.append(key) if isinstance(node, h5py.Dataset)
                              and node.ndim in (2, 3) else None)
    except Exception as err:  # h5py raises OSError, RuntimeError, KeyError ... on a damaged file
        raise VolumeError(f"{path}: not a readable HDF5 file ({err})") from err
    if not keys:
        raise VolumeError(f"{path}: holds no (Z, H, W) or (H, W) dataset to show")
    return [(read_volume(path, key), _metadata(path, f"{path.name} {key}" if len(keys) > 1 else path.name), "image")
            for key in keys]


def read(path: str | list[str]) -> list[LayerData]:
    """The layers of ``path`` (see the module docstring)."""
    path = Path(path[0] if isinstance(path, list) else path)
    if is_zarr_store(path):
        return _zarr_layers(path)
    if path.is_file() and suffix(path) in (".h5", ".hdf5"):
        return _hdf5_layers(path)
    volume = read_volume(path)
    return [(volume[0] if len(volume) == 1 else volume, _metadata(path, ndim=2 if len(volume) == 1 else 3), "image")]

