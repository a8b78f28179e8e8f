"""Read and write EM volumes as (Z, H, W) numpy arrays.

Supported inputs: multipage TIFF, a single 2-D image (PNG/TIFF/JPEG), a folder of
2-D slices (natural sort order), HDF5 (with a dataset key) and NIfTI. Every
failure raises :class:`VolumeError` with the offending path in the message.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Sequence

import numpy as np

SLICE_SUFFIXES = (".png", ".tif", ".tiff", ".jpg", ".jpeg")
HDF5_SUFFIXES = (".h5", ".hdf5", ".hdf")
NIFTI_SUFFIXES = (".nii", ".nii.gz")


class VolumeError(ValueError):
    """A volume file is missing, unreadable or has an unexpected shape or type."""


def natural_key(name: str) -> list:
    """Sort key that orders embedded numbers numerically ("2" before "10")."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


def _suffix(path: Path) -> str:
    name = path.name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else path.suffix.lower()


def read_volume(path: str | Path, key: str | None = None) -> np.ndarray:
    """Read ``path`` as a (Z, H, W) array.

    ``key`` names the dataset inside an HDF5 file; it may be omitted when the file
    holds exactly one dataset. A 2-D image becomes a volume with one slice.
    """
    path = Path(path)
    if not path.exists():
        raise VolumeError(f"{path}: no such file or folder")
    if path.is_dir():
        volume = _read_slice_folder(path)
    else:
        suffix = _suffix(path)
        if suffix in (".tif", ".tiff"):
            volume = _read_tiff(path)
        elif suffix in HDF5_SUFFIXES:
            volume = _read_hdf5(path, key)
        elif suffix in NIFTI_SUFFIXES:
            volume = _read_nifti(path)
        elif suffix in SLICE_SUFFIXES:
            volume = _read_image(path)[None]
        else:
            raise VolumeError(
                f"{path}: unsupported file type '{suffix}' (expected TIFF, PNG, JPEG, HDF5, NIfTI or a folder of slices)"
            )
    return _as_zhw(volume, path)


def _as_zhw(volume: np.ndarray, path: Path) -> np.ndarray:
    if volume.ndim == 2:
        volume = volume[None]
    if volume.ndim != 3:
        raise VolumeError(f"{path}: expected a 2-D image or a 3-D (Z, H, W) stack, got shape {volume.shape}")
    if volume.dtype.kind not in "uif" and volume.dtype != bool:
        raise VolumeError(f"{path}: unsupported pixel type {volume.dtype}")
    if 0 in volume.shape:
        raise VolumeError(f"{path}: volume is empty (shape {volume.shape})")
    return volume


def _read_tiff(path: Path) -> np.ndarray:
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            volume, axes = series.asarray(), series.axes
    except Exception as err:  # tifffile raises several types for corrupt files
        raise VolumeError(f"{path}: not a readable TIFF file ({err})") from err
    if axes.endswith("S"):  # samples per pixel: RGB(A) or grey+alpha
        volume = _grey_from_channels(volume, path)
    return volume


def _grey_from_channels(image: np.ndarray, path: Path) -> np.ndarray:
    """Reduce a grey+alpha or grey-valued RGB(A) image (H, W, C) to (H, W)."""
    channels = image.shape[-1]
    if channels == 2:  # grey + alpha
        return image[..., 0]
    colour = image[..., :3]
    if channels in (3, 4) and np.array_equal(colour[..., 0], colour[..., 1]) and np.array_equal(
        colour[..., 0], colour[..., 2]
    ):
        return colour[..., 0]
    raise VolumeError(f"{path}: colour image with {channels} channels; EM slices must be greyscale")


def _read_image(path: Path) -> np.ndarray:
    if _suffix(path) in (".tif", ".tiff"):
        image = _read_tiff(path)
    else:
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(path) as img:
                image = np.asarray(img)
        except (UnidentifiedImageError, OSError) as err:
            raise VolumeError(f"{path}: not a readable image file ({err})") from err
    if image.ndim == 3:
        image = _grey_from_channels(image, path)
    if image.ndim != 2:
        raise VolumeError(f"{path}: expected a 2-D slice, got shape {image.shape}")
    return image


def list_slice_files(folder: Path) -> list[Path]:
    """Image files in ``folder`` in natural sort order."""
    files = [p for p in folder.iterdir() if p.is_file() and _suffix(p) in SLICE_SUFFIXES]
    return sorted(files, key=lambda p: natural_key(p.name))


def _read_slice_folder(folder: Path) -> np.ndarray:
    files = list_slice_files(folder)
    if not files:
        raise VolumeError(f"{folder}: folder holds no image slices ({', '.join(SLICE_SUFFIXES)})")
    slices = []
    for file in files:
        image = _read_image(file)
        if slices and image.shape != slices[0].shape:
            raise VolumeError(f"{file}: slice shape {image.shape} differs from {files[0].name} {slices[0].shape}")
        if slices and image.dtype != slices[0].dtype:
            raise VolumeError(f"{file}: pixel type {image.dtype} differs from {files[0].name} {slices[0].dtype}")
        slices.append(image)
    return np.stack(slices)


def _read_hdf5(path: Path, key: str | None) -> np.ndarray:
    import h5py

    try:
        handle = h5py.File(path, "r")
    except OSError as err:
        raise VolumeError(f"{path}: not a readable HDF5 file ({err})") from err
    with handle:
        datasets: list[str] = []
        handle.visititems(lambda name, obj: datasets.append(name) if isinstance(obj, h5py.Dataset) else None)
        if key is None:
            if len(datasets) != 1:
                raise VolumeError(f"{path}: give the dataset key, the file holds {datasets or 'no datasets'}")
            key = datasets[0]
        if key not in datasets:
            raise VolumeError(f"{path}: no dataset '{key}' (available: {', '.join(datasets) or 'none'})")
        return np.asarray(handle[key])


def _read_nifti(path: Path) -> np.ndarray:
    import nibabel as nib

    try:
        data = np.asanyarray(nib.load(str(path)).dataobj)
    except Exception as err:  # nibabel raises ImageFileError, EOFError, ...
        raise VolumeError(f"{path}: not a readable NIfTI file ({err})") from err
    if data.ndim == 2:
        return data.T[None]
    if data.ndim == 4 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise VolumeError(f"{path}: expected a 3-D NIfTI volume, got shape {data.shape}")
    # NIfTI stores (x, y, z); emseg volumes are (z, y, x).
    return np.ascontiguousarray(data.transpose(2, 1, 0))


def _check_writable(volume: np.ndarray, dtype: np.dtype, path: Path) -> np.ndarray:
    volume = np.asarray(volume)
    if volume.ndim == 2:
        volume = volume[None]
    if volume.ndim != 3:
        raise VolumeError(f"{path}: can only write (Z, H, W) volumes, got shape {volume.shape}")
    if dtype == np.uint8 and volume.dtype != np.uint8:
        if volume.size and (volume.min() < 0 or volume.max() > 255):
            raise VolumeError(f"{path}: values outside 0..255 cannot be written as uint8")
    return volume.astype(dtype, copy=False)


def write_tiff(path: str | Path, volume: np.ndarray, dtype: str | np.dtype = "float32") -> Path:
    """Write a (Z, H, W) volume as an ImageJ-compatible multipage TIFF of ``dtype`` (float32 or uint8)."""
    import tifffile

    path = Path(path)
    dtype = np.dtype(dtype)
    if dtype not in (np.dtype("float32"), np.dtype("uint8")):
        raise VolumeError(f"{path}: TIFF stacks are written as float32 or uint8, not {dtype}")
    volume = _check_writable(volume, dtype, path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(path, volume, imagej=True, metadata={"axes": "ZYX"})
    return path


def write_nifti(
    path: str | Path, volume: np.ndarray, spacing: Sequence[float] = (1.0, 1.0, 1.0), dtype: str | np.dtype = "float32"
) -> Path:
    """Write a (Z, H, W) volume as NIfTI with voxel ``spacing`` given as (z, y, x)."""
    import nibabel as nib

    path = Path(path)
    volume = _check_writable(volume, np.dtype(dtype), path)
    if len(spacing) != 3:
        raise VolumeError(f"{path}: spacing must be (z, y, x), got {spacing}")
    affine = np.diag([spacing[2], spacing[1], spacing[0], 1.0])
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.ascontiguousarray(volume.transpose(2, 1, 0)), affine), str(path))
    return path


def write_slice_folder(folder: str | Path, volume: np.ndarray, prefix: str = "slice_") -> list[Path]:
    """Write a uint8 (Z, H, W) volume as one PNG per slice, numbered from 0."""
    from PIL import Image

    folder = Path(folder)
    volume = _check_writable(volume, np.dtype("uint8"), folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index, image in enumerate(volume):
        target = folder / f"{prefix}{index}.png"
        Image.fromarray(image).save(target)
        paths.append(target)
    return paths
