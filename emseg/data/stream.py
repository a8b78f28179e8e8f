"""Read a volume one slice at a time, so memory does not grow with the number of slices.

:func:`open_slices` accepts what :func:`emseg.data.read_volume` accepts (multipage TIFF,
folder of slices, single image, HDF5 with a dataset key, NIfTI) and returns a
:class:`SliceSource`: its length, the (H, W) slice shape, and an iterator of 2-D arrays
read from disk as they are needed (TIFF pages, files of a folder, HDF5 rows, NIfTI slabs
through nibabel's array proxy). Bad input raises :class:`emseg.data.VolumeError` naming the file.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from emseg.data.io import HDF5_SUFFIXES, NIFTI_SUFFIXES, SLICE_SUFFIXES, VolumeError, _read_image, _suffix, list_slice_files


class SliceSource:
    """``len(source)`` slices of ``source.shape`` (H, W), read one by one by ``read(index)``."""

    def __init__(self, path: Path, count: int, shape: tuple[int, int], read: Callable[[int], np.ndarray],
                 close: Callable[[], None] = lambda: None) -> None:
        self.path, self._count, self.shape, self._read, self._close = path, count, tuple(shape), read, close

    def __len__(self) -> int:
        return self._count

    def __getitem__(self, index: int) -> np.ndarray:
        if not 0 <= index < self._count:
            raise IndexError(f"{self.path}: slice {index} of {self._count}")
        image = np.asarray(self._read(index))
        if image.shape != self.shape:
            raise VolumeError(f"{self.path}: slice {index} has shape {image.shape}, the first {self.shape}")
        return image

    def __iter__(self) -> Iterator[np.ndarray]:
        return (self[i] for i in range(self._count))

    def close(self) -> None:
        self._close()

    def __enter__(self) -> SliceSource:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _tiff_source(path: Path) -> SliceSource:
    import tifffile

    try:
        tif = tifffile.TiffFile(path)
        series = tif.series[0]
        shape = series.shape
    except Exception as err:  # tifffile raises TiffFileError, ValueError, struct.error ... on bad files
        raise VolumeError(f"{path}: not a readable TIFF file ({err})") from err
    if len(shape) == 2:
        count, plane = 1, shape
    elif len(shape) == 3 and shape[-1] not in (3, 4):
        count, plane = shape[0], shape[1:]
    else:
        tif.close()
        raise VolumeError(f"{path}: expected a (Z, H, W) grey stack, got shape {shape} ({series.axes})")

    pages = series.pages
    one_page_per_slice = len(pages) == count and all(p is not None for p in pages)
    whole: list[np.ndarray] = []  # files that keep all slices in one page (samples) are read once

    def read(index: int) -> np.ndarray:
        try:
            if one_page_per_slice:
                return pages[index].asarray()
            if not whole:
                whole.append(series.asarray().reshape(count, *plane))
            return whole[0][index]
        except Exception as err:
            raise VolumeError(f"{path}: slice {index} cannot be read ({err})") from err

    return SliceSource(path, count, plane, read, tif.close)


def _hdf5_source(path: Path, key: str | None) -> SliceSource:
    import h5py

    try:
        handle = h5py.File(path, "r")
    except OSError as err:
        raise VolumeError(f"{path}: not a readable HDF5 file ({err})") from err
    datasets: list[str] = []
    handle.visititems(lambda name, obj: datasets.append(name) if isinstance(obj, h5py.Dataset) else None)
    if key is None and len(datasets) == 1:
        key = datasets[0]
    if key not in datasets:
        handle.close()
        raise VolumeError(f"{path}: give a dataset key (available: {', '.join(datasets) or 'none'}), got {key!r}")
    data = handle[key]
    if data.ndim != 3:
        handle.close()
        raise VolumeError(f"{path}: dataset '{key}' has shape {data.shape}, expected (Z, H, W)")
    return SliceSource(path, data.shape[0], data.shape[1:], lambda i: data[i], handle.close)


def _nifti_source(path: Path) -> SliceSource:
    import nibabel as nib

    try:
        proxy = nib.load(str(path)).dataobj
        shape = proxy.shape
    except Exception as err:  # nibabel raises ImageFileError, EOFError, ...
        raise VolumeError(f"{path}: not a readable NIfTI file ({err})") from err
    if len(shape) == 4 and shape[-1] == 1:
        shape = shape[:3]
    if len(shape) != 3:
        raise VolumeError(f"{path}: expected a 3-D NIfTI volume, got shape {proxy.shape}")

    def read(index: int) -> np.ndarray:  # NIfTI (x, y, z) -> slice z as (y, x)
        slab = proxy[:, :, index, 0] if len(proxy.shape) == 4 else proxy[:, :, index]
        return np.asarray(slab).T

    return SliceSource(path, shape[2], (shape[1], shape[0]), read)


def open_slices(path: str | Path, key: str | None = None) -> SliceSource:
    """A :class:`SliceSource` over the slices of the volume at ``path`` (``key``: HDF5 dataset)."""
    path = Path(path)
    if not path.exists():
        raise VolumeError(f"{path}: no such file or folder")
    if path.is_dir():
        files = list_slice_files(path)
        if not files:
            raise VolumeError(f"{path}: folder holds no image slices ({', '.join(SLICE_SUFFIXES)})")
        first = _read_image(files[0])
        return SliceSource(path, len(files), first.shape, lambda i: _read_image(files[i]))
    suffix = _suffix(path)
    if suffix in (".tif", ".tiff"):
        return _tiff_source(path)
    if suffix in HDF5_SUFFIXES:
        return _hdf5_source(path, key)
    if suffix in NIFTI_SUFFIXES:
        return _nifti_source(path)
    if suffix in SLICE_SUFFIXES:
        image = _read_image(path)
        return SliceSource(path, 1, image.shape, lambda i: image)
    raise VolumeError(f"{path}: unsupported file type '{suffix}'")
