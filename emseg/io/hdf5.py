"""HDF5: a (Z, H, W) or (H, W) dataset chosen by key (the only one when the file holds one), read row by row."""

from __future__ import annotations

from pathlib import Path

from emseg.io.format import Format
from emseg.io.source import SliceSource, VolumeError


def _open_hdf5(path: Path, key: str | None) -> SliceSource:
    import h5py

    try:
        handle = h5py.File(path, "r")
    except OSError as err:
        raise VolumeError(f"{path}: not a readable HDF5 file ({err})") from err
    try:
        return _dataset_slices(path, handle, key)
    except VolumeError:
        handle.close()
        raise
    except Exception as err:  # h5py raises KeyError, RuntimeError, OSError ... on a damaged file
        handle.close()
        raise VolumeError(f"{path}: damaged HDF5 file ({err}); copy it again from its source") from err


def _dataset_slices(path: Path, handle, key: str | None) -> SliceSource:
    import h5py

    datasets: list[str] = []
    handle.visititems(lambda name, obj: datasets.append(name) if isinstance(obj, h5py.Dataset) else None)
    if key is None and len(datasets) == 1:
        key = datasets[0]
    if key is None or key not in datasets:
        if key is None:
            raise VolumeError(f"{path}: give the dataset key, the file holds {datasets or 'no datasets'}")
        raise VolumeError(f"{path}: no dataset '{key}' (available: {', '.join(datasets) or 'none'})")
    data = handle[key]

    def read(index: int):
        try:
            return data[()] if data.ndim == 2 else data[index]
        except Exception as err:  # a damaged chunk or a truncated file fails here
            raise VolumeError(f"{path}: slice {index} of dataset '{key}' cannot be read ({err})") from err

    if data.ndim == 2:
        return SliceSource(path, 1, data.shape, read, handle.close, itemsize=data.dtype.itemsize)
    if data.ndim != 3:
        raise VolumeError(f"{path}: dataset '{key}' has shape {data.shape}, expected (Z, H, W)")
    return SliceSource(path, data.shape[0], data.shape[1:], read, handle.close, itemsize=data.dtype.itemsize)

FORMAT = Format(name="hdf5", label="HDF5", suffixes=(".h5", ".hdf5", ".hdf"), open=_open_hdf5)
