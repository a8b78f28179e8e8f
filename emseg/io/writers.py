"""Stack writers that take one slice at a time and publish the output only when it is complete.

Chosen by name in inference.json (``output_format``):

- ``tiff``: an ImageJ hyperstack with the voxel ``spacing``, float32 (probabilities; the ISBI submission format),
  uint8 (masks, with a colour table) or labels (uint16 when they fit, else plain uint32);
- ``png``: a folder of uint8 PNG slices (``slice_0000.png``, ...);
- ``nifti``: one ``.nii`` (or gzip-compressed ``.nii.gz``) file with the voxel ``spacing``
  (z, y, x) in micrometres (ISBI: 0.05, 0.004, 0.004); written as it goes, since NIfTI's on-disk
  order of an (x, y, z) image is the C order of emseg's (z, y, x) slices;
- ``zarr``: an OME-Zarr image (``.zarr`` folder) with the voxel ``spacing``, for napari and Fiji;
- ``tiff`` (or ``zarr``) with channels: a float32 (Z, C, H, W) hyperstack of per-class probabilities.

Every writer writes to ``<name>.part`` and renames it when closed without error, so an
interrupted run leaves no output that looks complete. An existing output is replaced only with
``overwrite`` and only if it is what the writer writes (a file, or a folder of its own slices); a
write error names the file and the cause and leaves earlier outputs as they were.
:func:`write_volume` writes a whole (Z, H, W) array through the same writers.
"""

from __future__ import annotations

import gzip
import os
import re
import shutil
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from emseg.io.safety import OutputError, describe_write_error
from emseg.io.source import VolumeError, suffix
from emseg.io.zarr_volumes import is_zarr_store, replace_problem, write_image_metadata

DTYPES = (np.dtype("float32"), np.dtype("uint8"), np.dtype("uint32"))


def _partial(path: Path) -> Path:
    return path.with_name(path.name + ".part")


class StackWriter:
    """Base: ``with writer: writer.write(slice)`` for each slice; published on a clean exit.

    Every writer takes the same arguments: the output ``path``, the pixel ``dtype`` (float32 or
    uint8), the slice ``shape`` (H, W) and ``count`` where known, the voxel ``spacing`` (z, y, x),
    ``overwrite`` (replace an existing output of the same kind) and, for class maps, a ``palette`` ((256, 3)
    uint8 colours by value: an ImageJ LUT in TIFF, a palette in PNG; the values stay class indices).
    """

    def __init__(self, path: str | Path, dtype: str = "float32", shape: Sequence[int] | None = None,
                 count: int | None = None, spacing: Sequence[float] = (1.0, 1.0, 1.0), overwrite: bool = False,
                 palette: np.ndarray | None = None) -> None:
        self.path = Path(path)
        self.overwrite = overwrite
        self.shape, self.expected = (tuple(shape) if shape is not None else None), count
        self.spacing = [float(s) for s in spacing]
        self.dtype = np.dtype(dtype)
        self.palette = None if palette is None else np.asarray(palette, np.uint8)
        if self.dtype not in DTYPES:
            raise VolumeError(f"{self.path}: stacks are written as float32, uint8 or uint32 (labels), not {self.dtype}")
        self.count = 0

    def _require_geometry(self, kind: str) -> None:
        """For writers that lay the whole volume out at the start: (z, y, x) ``spacing``, slice ``shape``, ``count``."""
        if len(self.spacing) != 3:
            raise VolumeError(f"{self.path}: spacing must be (z, y, x), got {self.spacing}")
        if self.shape is None or self.expected is None:
            raise ValueError(f"{self.path}: a {kind} writer needs the slice shape and count")

    def _check(self, image: np.ndarray) -> np.ndarray:
        image = np.asarray(image)
        if self.dtype.kind == "u" and image.dtype != self.dtype:
            top = np.iinfo(self.dtype).max
            if image.size and (image.min() < 0 or image.max() > top):
                raise VolumeError(f"{self.path}: values outside 0..{top} cannot be written as {self.dtype}")
        return image.astype(self.dtype, copy=False)

    def write(self, image: np.ndarray) -> None:
        image = self._check(image)
        try:
            self._write(image)
        except OSError as err:
            raise describe_write_error(err, self.path) from err
        self.count += 1

    def check_replaceable(self) -> None:
        """Refuse an existing output unless ``overwrite`` is set and it is what this writer writes."""
        if not self.path.exists() and not self.path.is_symlink():
            return
        if not self.overwrite:
            raise OutputError(f"{self.path}: exists; choose another output path, or set overwrite (--overwrite True)"
                              f" to replace what emseg wrote there")
        problem = self._not_replaceable()
        if problem:
            raise OutputError(f"{self.path}: {problem}")

    def _not_replaceable(self) -> str | None:
        """Why the existing output is not something this writer may replace (None: it may)."""
        return None if self.path.is_file() else "exists and is not a file; emseg replaces only files it writes"

    def __enter__(self) -> StackWriter:
        self.check_replaceable()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._open(_partial(self.path))
        except OutputError:
            raise
        except OSError as err:
            raise describe_write_error(err, self.path) from err
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        partial = _partial(self.path)
        try:
            if exc_type is not None:  # the first error is the one to report: close quietly, publish nothing
                try:
                    self._close()
                except Exception:
                    pass
                return
            try:
                self._close()
                self._publish(partial)
            except OSError as err:
                raise describe_write_error(err, self.path) from err
        finally:
            self._discard(partial)

    def _discard(self, partial: Path) -> None:
        """Remove what this writer left at its ``.part`` path (nothing once published)."""
        _remove_partial(partial)

    def _publish(self, partial: Path) -> None:
        old = None
        if self.path.is_dir() and not self.path.is_symlink():  # a folder output, checked replaceable at the start
            old = self.path.with_name(self.path.name + ".old")
            os.replace(self.path, old)
        os.replace(partial, self.path)
        if old is not None:
            self._discard(old)

    def _open(self, partial: Path) -> None:
        raise NotImplementedError

    def _write(self, image: np.ndarray) -> None:
        raise NotImplementedError

    def _close(self) -> None:
        pass


class TiffStackWriter(StackWriter):
    """An ImageJ hyperstack that Fiji opens with its pixel size: (Z, Y, X), or (Z, C, Y, X) for (C, H, W) slices,
    the y/x pixel size and z spacing in micrometres, a LUT for class maps (``palette``). Written as the slices come
    into a memory map of the final file, so ``shape`` and ``count`` must be known.

    ImageJ has no 32-bit integer type: uint32 labels are written as a uint16 hyperstack when the largest label
    fits (labels stay exact integers, for Fiji and napari alike), else as a plain uint32 TIFF with the same
    metadata, which Fiji opens as 32-bit without the pixel size."""

    def __init__(self, path: str | Path, dtype: str = "float32", shape: Sequence[int] | None = None,
                 count: int | None = None, spacing: Sequence[float] = (1.0, 1.0, 1.0), overwrite: bool = False,
                 palette: np.ndarray | None = None) -> None:
        super().__init__(path, dtype, shape, count, spacing, overwrite, palette)
        if self.path.suffix.lower() not in (".tif", ".tiff"):
            raise VolumeError(f"{self.path}: a TIFF stack needs a .tif name")
        self._require_geometry("TIFF")

    def _open(self, partial: Path) -> None:
        _remove_partial(partial)  # our own leftover of an interrupted run
        self._partial, self._stack, self._largest = partial, None, 0

    def _create(self, partial: Path, channels: tuple[int, ...], dtype: np.dtype) -> np.memmap:
        import tifffile

        imagej = dtype != np.uint32
        metadata = {"axes": "ZCYX" if channels else "ZYX", "spacing": self.spacing[0], "unit": "um"}
        if self.palette is not None and imagej:
            metadata["LUTs"] = [np.ascontiguousarray(self.palette.T)]
        with warnings.catch_warnings():  # files above 4 GiB are ImageJ's own "truncated" form, which it reads
            warnings.filterwarnings("ignore", "truncating ImageJ file")
            return tifffile.memmap(partial, shape=(self.expected, *channels, *self.shape), dtype=dtype,
                                   imagej=imagej, metadata=metadata,
                                   resolution=(1 / self.spacing[2], 1 / self.spacing[1]))

    def _write(self, image: np.ndarray) -> None:
        if self._stack is None:
            channels = image.shape[:-2]
            if image.shape[-2:] != self.shape or len(channels) > 1:
                raise VolumeError(f"{self.path}: slice of shape {image.shape}, expected {self.shape} or (C, *shape)")
            self._stack = self._create(self._partial, channels, self.dtype)
        if image.shape != self._stack.shape[1:]:
            raise VolumeError(f"{self.path}: slice of shape {image.shape}, the stack's is {self._stack.shape[1:]}")
        if self.count >= self.expected:
            raise VolumeError(f"{self.path}: more than the {self.expected} declared slices")
        self._stack[self.count] = image
        if image.size and self.dtype == np.uint32:
            self._largest = max(self._largest, int(image.max()))

    def _close(self) -> None:
        if self._stack is None:
            raise VolumeError(f"{self.path}: no slices written")
        self._stack.flush()
        stack, self._stack = self._stack, None
        if self.count != self.expected:
            raise VolumeError(f"{self.path}: {self.count} slices written, {self.expected} declared")
        if self.dtype == np.uint32 and self._largest <= np.iinfo(np.uint16).max:
            narrow = self._partial.with_name(self._partial.name + ".uint16")
            labels = self._create(narrow, stack.shape[1:-2], np.dtype(np.uint16))
            for index in range(len(stack)):
                labels[index] = stack[index]
            labels.flush()
            del labels, stack
            os.replace(narrow, self._partial)

    def _discard(self, partial: Path) -> None:
        _remove_partial(partial.with_name(partial.name + ".uint16"))
        _remove_partial(partial)


SLICE_PREFIX = "slice_"


def _is_slice(file: Path) -> bool:
    """A PNG slice as :class:`PngFolderWriter` names them (``slice_0000.png``)."""
    return file.is_file() and re.fullmatch(rf"{SLICE_PREFIX}\d{{4,}}\.png", file.name) is not None


def _remove_partial(partial: Path) -> None:
    """Remove what a writer left at its own ``.part`` path: a file, or a folder's ``slice_NNNN.png`` slices and
    then the folder if nothing else is in it (anything else there is not emseg's and stays)."""
    if partial.is_dir() and not partial.is_symlink():
        for file in partial.iterdir():
            if _is_slice(file):
                file.unlink()
        if not any(partial.iterdir()):
            partial.rmdir()
    elif partial.exists() or partial.is_symlink():
        partial.unlink()


class PngFolderWriter(StackWriter):
    """A folder of uint8 PNG slices named ``{prefix}{index:04d}.png``.

    An existing folder is replaced (with ``overwrite``) only when it holds nothing but such slices: a folder
    with any other file is never touched.
    """

    prefix = SLICE_PREFIX

    @staticmethod
    def _own_slices(folder: Path) -> bool:
        return all(_is_slice(f) for f in folder.iterdir())

    def _open(self, partial: Path) -> None:
        if partial.exists() and not (partial.is_dir() and self._own_slices(partial)):
            raise OutputError(f"{partial}: exists and holds files emseg did not write; move it away")
        _remove_partial(partial)  # our own leftover of an interrupted run
        partial.mkdir(parents=True)
        self._folder = partial

    def _not_replaceable(self) -> str | None:
        if self.path.is_dir() and not self.path.is_symlink() and self._own_slices(self.path):
            return None
        return (f"holds files emseg did not write; emseg replaces only a folder of its own {self.prefix}NNNN.png "
                f"slices: choose an empty or new output folder")

    def __init__(self, path: str | Path, dtype: str = "uint8", shape: Sequence[int] | None = None,
                 count: int | None = None, spacing: Sequence[float] = (1.0, 1.0, 1.0), overwrite: bool = False,
                 palette: np.ndarray | None = None) -> None:
        super().__init__(path, "uint8", shape, count, spacing, overwrite, palette)

    def _write(self, image: np.ndarray) -> None:
        from PIL import Image

        if image.ndim != 2:
            raise VolumeError(f"{self.path}: PNG slices are 2-D, got shape {image.shape}")
        picture = Image.fromarray(image)
        if self.palette is not None:
            picture.putpalette(self.palette.reshape(-1).tolist())
        picture.save(self._folder / f"{self.prefix}{self.count:04d}.png")


class NiftiWriter(StackWriter):
    """A ``.nii`` (or ``.nii.gz``) of ``count`` slices of ``shape`` (H, W), written as the slices come."""

    def __init__(self, path: str | Path, dtype: str = "float32", shape: Sequence[int] | None = None,
                 count: int | None = None, spacing: Sequence[float] = (1.0, 1.0, 1.0), overwrite: bool = False,
                 palette: np.ndarray | None = None) -> None:
        super().__init__(path, dtype, shape, count, spacing, overwrite, palette)
        if not self.path.name.endswith((".nii", ".nii.gz")):
            raise VolumeError(f"{self.path}: a NIfTI volume needs a .nii or .nii.gz name")
        self._require_geometry("NIfTI")

    def _open(self, partial: Path) -> None:
        import nibabel as nib

        height, width = self.shape
        header = nib.Nifti1Header()
        header.set_data_shape((width, height, self.expected))
        header.set_data_dtype(self.dtype)
        header.set_zooms((self.spacing[2], self.spacing[1], self.spacing[0]))
        header.set_xyzt_units("micron")
        header.set_qform(np.diag([self.spacing[2], self.spacing[1], self.spacing[0], 1.0]), code=1)
        header.set_sform(np.diag([self.spacing[2], self.spacing[1], self.spacing[0], 1.0]), code=1)
        # gzip streams allow the forward seek to the data offset, so both forms are written as they go
        self._file = gzip.open(partial, "wb") if self.path.name.endswith(".gz") else open(partial, "wb")
        header.write_to(self._file)
        self._file.seek(int(header["vox_offset"]))

    def _write(self, image: np.ndarray) -> None:
        if image.shape != self.shape:
            raise VolumeError(f"{self.path}: slice of shape {image.shape}, the volume's is {self.shape}")
        self._file.write(np.ascontiguousarray(image).tobytes())

    def _close(self) -> None:
        self._file.close()
        if self.count != self.expected:
            raise VolumeError(f"{self.path}: {self.count} slices written, {self.expected} declared")


class OmeZarrWriter(StackWriter):
    """An OME-Zarr image (a ``.zarr`` folder) with the voxel ``spacing`` in micrometres, one chunk per slice by
    256 x 256 pixels, written as the slices come: (Z, Y, X) for 2-D slices, (C, Z, Y, X) for (C, H, W) ones (the
    axis order the OME-Zarr specification prescribes). An existing output is replaced only if it is a zarr store."""

    chunk = 256

    def __init__(self, path: str | Path, dtype: str = "float32", shape: Sequence[int] | None = None,
                 count: int | None = None, spacing: Sequence[float] = (1.0, 1.0, 1.0), overwrite: bool = False,
                 palette: np.ndarray | None = None) -> None:
        super().__init__(path, dtype, shape, count, spacing, overwrite, palette)
        if self.path.suffix != ".zarr":
            raise VolumeError(f"{self.path}: an OME-Zarr image is a folder named *.zarr; choose such a name")
        self._require_geometry("OME-Zarr")

    def _not_replaceable(self) -> str | None:
        return replace_problem(self.path)

    def _open(self, partial: Path) -> None:
        import zarr

        if partial.exists() and not is_zarr_store(partial):
            raise OutputError(f"{partial}: exists and is not a zarr store emseg left; move it away")
        self._discard(partial)  # our own leftover of an interrupted run
        self._group, self._array = zarr.open_group(str(partial), mode="w"), None

    def _write(self, image: np.ndarray) -> None:
        if self._array is None:
            channels = image.shape[:-2]
            if image.shape[-2:] != self.shape or len(channels) > 1:
                raise VolumeError(f"{self.path}: slice of shape {image.shape}, expected {self.shape} or (C, *shape)")
            shape = (*channels, self.expected, *self.shape)
            chunks = (*channels, 1, min(self.chunk, self.shape[0]), min(self.chunk, self.shape[1]))
            self._array = self._group.create_array("s0", shape=shape, chunks=chunks, dtype=self.dtype)
        if image.ndim == 3:
            self._array[:, self.count] = image
        else:
            self._array[self.count] = image

    def _close(self) -> None:
        if self.count != self.expected:
            raise VolumeError(f"{self.path}: {self.count} slices written, {self.expected} declared")
        write_image_metadata(self._group, self.spacing, self.path.stem,
                             channels=self._array is not None and self._array.ndim == 4)

    def _discard(self, partial: Path) -> None:
        if is_zarr_store(partial):
            shutil.rmtree(partial)
        else:
            _remove_partial(partial)


WRITERS: dict[str, type[StackWriter]] = {"tiff": TiffStackWriter, "png": PngFolderWriter, "nifti": NiftiWriter,
                                         "zarr": OmeZarrWriter}
FORMATS = tuple(WRITERS)


def stack_writer(output_format: str, path: str | Path, dtype: str = "float32", shape: Sequence[int] | None = None,
                 count: int | None = None, spacing: Sequence[float] = (1.0, 1.0, 1.0),
                 overwrite: bool = False, palette: np.ndarray | None = None) -> StackWriter:
    """The writer registered for ``output_format`` (one of :data:`FORMATS`)."""
    if output_format not in WRITERS:
        raise ValueError(f"output_format must be one of {FORMATS}, got {output_format!r}")
    return WRITERS[output_format](path, dtype, shape, count, spacing, overwrite, palette)


def format_for_path(path: str | Path) -> str:
    """The output format a file name asks for: ``.tif``/``.tiff`` TIFF, ``.zarr`` OME-Zarr, ``.nii``/``.nii.gz``
    NIfTI, no suffix a folder of PNG slices."""

    formats = {".tif": "tiff", ".tiff": "tiff", ".zarr": "zarr", ".nii": "nifti", ".nii.gz": "nifti", "": "png"}
    name = suffix(Path(path))
    if name not in formats:
        raise VolumeError(f"{path}: cannot tell the format from {name!r}; name the output .tif, .zarr, .nii.gz or a "
                          f"folder (PNG slices)")
    return formats[name]


def write_volume(path: str | Path, volume: np.ndarray, output_format: str = "tiff", dtype: str = "float32",
                 spacing: Sequence[float] = (1.0, 1.0, 1.0), overwrite: bool = False) -> Path:
    """Write a whole (Z, H, W) ``volume`` (a 2-D image is one slice) through :func:`stack_writer`."""
    volume = np.asarray(volume)
    if volume.ndim == 2:
        volume = volume[None]
    if volume.ndim != 3:
        raise VolumeError(f"{path}: can only write (Z, H, W) volumes, got shape {volume.shape}")
    with stack_writer(output_format, path, dtype, volume.shape[1:], len(volume), spacing, overwrite) as writer:
        for image in volume:
            writer.write(image)
    return Path(path)
