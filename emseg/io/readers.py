"""One reader per volume format, chosen by a registry; whole volumes are built on the slice reader.

:func:`open_slices` returns a :class:`~emseg.io.source.SliceSource` that reads one slice at a
time (TIFF pages, files of a folder, HDF5 rows, NIfTI slabs through nibabel's array proxy), so
memory does not grow with the stack; :func:`read_volume` stacks its slices into a (Z, H, W)
array. Supported: multipage TIFF, a folder of 2-D slices (natural sort order), a single 2-D
image (PNG/TIFF/JPEG), HDF5 with a dataset key, NIfTI, zarr arrays and OME-Zarr images
(:mod:`emseg.io.zarr_volumes`). Grey+alpha and grey-valued RGB images
become grey. Every failure raises :class:`VolumeError` naming the file.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np

from emseg.io.source import SliceSource, VolumeError, natural_key, suffix
from emseg.io.zarr_volumes import is_zarr_store, open_zarr, zarr_spacing

SLICE_SUFFIXES = (".png", ".tif", ".tiff", ".jpg", ".jpeg")


def grey_from_channels(image: np.ndarray, path: Path) -> np.ndarray:
    """Reduce a grey+alpha or grey-valued RGB(A) image (..., H, W, C) to (..., H, W)."""
    channels = image.shape[-1]
    if channels == 2:  # grey + alpha
        return image[..., 0]
    colour = image[..., :3]
    if channels in (3, 4) and np.array_equal(colour[..., 0], colour[..., 1]) and np.array_equal(
        colour[..., 0], colour[..., 2]
    ):
        return colour[..., 0]
    raise VolumeError(f"{path}: colour image with {channels} channels; EM slices must be greyscale")


def read_image(path: Path) -> np.ndarray:
    """One 2-D grey image (PNG, JPEG or single-page TIFF)."""
    if suffix(path) in (".tif", ".tiff"):
        with _open_tiff(path) as source:
            if len(source) != 1:
                raise VolumeError(f"{path}: expected a 2-D slice, the file holds {len(source)}")
            return source[0]
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            image = np.asarray(img)
    except (UnidentifiedImageError, OSError) as err:
        raise VolumeError(f"{path}: not a readable image file ({err})") from err
    if image.ndim == 3:
        image = grey_from_channels(image, path)
    if image.ndim != 2:
        raise VolumeError(f"{path}: expected a 2-D slice, got shape {image.shape}")
    return image


def list_slice_files(folder: Path) -> list[Path]:
    """Image files in ``folder`` in natural sort order."""
    files = [p for p in Path(folder).iterdir() if p.is_file() and suffix(p) in SLICE_SUFFIXES]
    return sorted(files, key=lambda p: natural_key(p.name))


def _open_folder(path: Path, key: str | None) -> SliceSource:
    files = list_slice_files(path)
    if not files:
        raise VolumeError(f"{path}: folder holds no image slices ({', '.join(SLICE_SUFFIXES)})")
    first = read_image(files[0])
    return SliceSource(path, len(files), first.shape, lambda i: read_image(files[i]),
                       describe=lambda i: f"{files[i]}: slice {files[i].name}")


def _open_image(path: Path, key: str | None) -> SliceSource:
    image = read_image(path)
    return SliceSource(path, 1, image.shape, lambda i: image)


def _open_tiff(path: Path, key: str | None = None) -> SliceSource:
    import tifffile

    problems = _TiffProblems()
    try:
        with problems:  # tifffile reports a broken page chain by logging, not raising
            tif = tifffile.TiffFile(path)
            page_count = len(tif.pages)
            series = tif.series[0]
            shape, axes = series.shape, series.axes
    except Exception as err:  # tifffile raises TiffFileError, ValueError, struct.error ... on bad files
        raise VolumeError(f"{path}: not a readable TIFF file ({err})") from err
    if problems.messages:
        tif.close()
        raise VolumeError(f"{path}: damaged TIFF, {page_count} pages readable ({problems.messages[0]}): the file is "
                          f"truncated or corrupt; copy it again from its source")
    samples = axes.endswith("S")  # grey+alpha or RGB(A) samples per pixel
    plane_dims = 3 if samples else 2
    if len(shape) == plane_dims:
        count = 1
    elif len(shape) == plane_dims + 1:
        count = shape[0]
    else:
        tif.close()
        raise VolumeError(f"{path}: expected a (Z, H, W) grey stack, got shape {shape} ({axes})")
    plane = tuple(shape[-plane_dims:][:2])
    declared = _declared_slices(tif, plane)
    if declared is not None and declared > count:
        tif.close()
        raise VolumeError(f"{path}: declares {declared} slices but only {count} can be read: the file is truncated or "
                          f"damaged; copy it again from its source")

    pages = series.pages
    one_page_per_slice = len(pages) == count and all(p is not None for p in pages)
    whole: list[np.ndarray] = []  # files that keep all slices in one page are read once

    def read(index: int) -> np.ndarray:
        try:
            if one_page_per_slice:
                image = pages[index].asarray()
            else:
                if not whole:
                    whole.append(series.asarray().reshape(count, *shape[-plane_dims:]))
                image = whole[0][index]
        except Exception as err:
            raise VolumeError(f"{path}: slice {index} cannot be read ({err})") from err
        return grey_from_channels(image, path) if samples else image

    return SliceSource(path, count, plane, read, tif.close)


class _TiffProblems(logging.Handler):
    """Collects what tifffile logs about a damaged file (invalid page offsets, corrupt metadata) while opening it."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if any(word in message for word in ("invalid", "corrupt", "truncated", "failed")):
            self.messages.append(message.split("> ", 1)[-1])

    def __enter__(self) -> _TiffProblems:
        logging.getLogger("tifffile").addHandler(self)
        return self

    def __exit__(self, *exc) -> None:
        logging.getLogger("tifffile").removeHandler(self)


def _declared_slices(tif, plane: tuple[int, ...]) -> int | None:
    """How many slices the file's own metadata (tifffile's shape, ImageJ's image count) says it holds."""
    try:
        if tif.is_shaped and tif.shaped_metadata:
            shape = tif.shaped_metadata[0].get("shape")
            if shape:
                return int(np.prod(shape)) // int(np.prod(plane)) // (shape[-1] if len(shape) > 2 and
                                                                       shape[-1] in (2, 3, 4) else 1)
        if tif.is_imagej and tif.imagej_metadata:
            return int(tif.imagej_metadata.get("images", 0)) or None
    except Exception:  # metadata we cannot read is not a reason to refuse the pixels
        return None
    return None


def _open_hdf5(path: Path, key: str | None) -> SliceSource:
    import h5py

    try:
        handle = h5py.File(path, "r")
    except OSError as err:
        raise VolumeError(f"{path}: not a readable HDF5 file ({err})") from err
    datasets: list[str] = []
    handle.visititems(lambda name, obj: datasets.append(name) if isinstance(obj, h5py.Dataset) else None)
    if key is None and len(datasets) == 1:
        key = datasets[0]
    if key is None or key not in datasets:
        handle.close()
        if key is None:
            raise VolumeError(f"{path}: give the dataset key, the file holds {datasets or 'no datasets'}")
        raise VolumeError(f"{path}: no dataset '{key}' (available: {', '.join(datasets) or 'none'})")
    data = handle[key]
    if data.ndim == 2:
        return SliceSource(path, 1, data.shape, lambda i: data[()], handle.close)
    if data.ndim != 3:
        handle.close()
        raise VolumeError(f"{path}: dataset '{key}' has shape {data.shape}, expected (Z, H, W)")
    return SliceSource(path, data.shape[0], data.shape[1:], lambda i: data[i], handle.close)


def _open_nifti(path: Path, key: str | None) -> SliceSource:
    import nibabel as nib

    try:
        proxy = nib.load(str(path)).dataobj
        shape = proxy.shape
    except Exception as err:  # nibabel raises ImageFileError, EOFError, ...
        raise VolumeError(f"{path}: not a readable NIfTI file ({err})") from err
    if len(shape) == 4 and shape[-1] == 1:
        shape = shape[:3]
    if len(shape) == 2:
        return SliceSource(path, 1, (shape[1], shape[0]), lambda i: np.asarray(proxy).T)
    if len(shape) != 3:
        raise VolumeError(f"{path}: expected a 3-D NIfTI volume, got shape {proxy.shape}")

    def read(index: int) -> np.ndarray:  # NIfTI (x, y, z) -> slice z as (y, x)
        try:
            slab = proxy[:, :, index, 0] if len(proxy.shape) == 4 else proxy[:, :, index]
        except Exception as err:  # a truncated file fails here
            raise VolumeError(f"{path}: slice {index} cannot be read ({err})") from err
        return np.asarray(slab).T

    return SliceSource(path, shape[2], (shape[1], shape[0]), read)


MICROMETRES = {"um": 1.0, "micron": 1.0, "microns": 1.0, "\u00b5m": 1.0, "\\u00B5m": 1.0, "nm": 1e-3, "mm": 1e3}


def tiff_spacing(path: str | Path) -> tuple[float, float, float] | None:
    """Voxel size (z, y, x) in micrometres that a TIFF states (ImageJ's ``unit`` and ``spacing`` with the
    resolution tags, or tifffile's shaped metadata as emseg writes it), None where it states none."""
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            metadata = tif.imagej_metadata or (tif.shaped_metadata[0] if tif.is_shaped else None) or {}
            resolution = tif.pages[0].resolution
    except Exception as err:
        raise VolumeError(f"{path}: not a readable TIFF file ({err})") from err
    scale = MICROMETRES.get(str(metadata.get("unit", "")).strip())
    if scale is None or not all(resolution):
        return None
    z = float(metadata.get("spacing", 1.0))
    return (z * scale, scale / resolution[1], scale / resolution[0])


def volume_spacing(path: str | Path) -> tuple[float, ...] | None:
    """Voxel size (z, y, x) in micrometres stated by the volume at ``path`` (OME-Zarr, ImageJ or emseg TIFF), None
    where the format or the file states none."""

    path = Path(path)
    if is_zarr_store(path):
        return zarr_spacing(path)
    if suffix(path) in (".tif", ".tiff") and path.is_file():
        return tiff_spacing(path)
    return None


READERS: dict[str, Callable[[Path, str | None], SliceSource]] = {
    ".tif": _open_tiff,
    ".tiff": _open_tiff,
    ".png": _open_image,
    ".jpg": _open_image,
    ".jpeg": _open_image,
    ".h5": _open_hdf5,
    ".hdf5": _open_hdf5,
    ".hdf": _open_hdf5,
    ".nii": _open_nifti,
    ".nii.gz": _open_nifti,
    ".zarr": lambda path, key: open_zarr(path, key),  # a folder: a zarr array or an OME-Zarr image
}


def open_slices(path: str | Path, key: str | None = None) -> SliceSource:
    """A :class:`SliceSource` over the slices of the volume at ``path`` (``key``: HDF5 dataset)."""
    path = Path(path)
    if not path.exists():
        raise VolumeError(f"{path}: no such file or folder")
    if path.is_dir() and suffix(path) != ".zarr":
        return _open_folder(path, key)
    reader = READERS.get(suffix(path))
    if reader is None:
        raise VolumeError(f"{path}: unsupported file type '{suffix(path)}' (expected TIFF, PNG, JPEG, HDF5, "
                          f"NIfTI, zarr or a folder of slices)")
    return reader(path, key)


def read_volume(path: str | Path, key: str | None = None) -> np.ndarray:
    """The whole volume at ``path`` as a (Z, H, W) array (a 2-D image becomes one slice)."""
    with open_slices(path, key) as source:
        return np.stack(list(source))
