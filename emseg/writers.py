"""Stack writers that take one slice at a time and publish the output only when it is complete.

Chosen by name in inference.json (``output_format``):

- ``tiff``: multipage TIFF, float32 (probabilities; the ISBI submission format) or uint8 (masks);
- ``png``: a folder of uint8 PNG slices (``slice_0000.png``, ...);
- ``nifti``: one ``.nii`` file with the voxel ``spacing`` (z, y, x) in micrometres (ISBI: 0.05,
  0.004, 0.004); written as it goes, since NIfTI's on-disk order of an (x, y, z) image is the
  C order of emseg's (z, y, x) slices;
- ``tiff`` with channels: a float32 (Z, C, H, W) stack of per-class probabilities.

Every writer writes to ``<name>.part`` and renames it when closed without error, so an
interrupted run leaves no output that looks complete.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from emseg.data.io import VolumeError

FORMATS = ("tiff", "png", "nifti")


def _partial(path: Path) -> Path:
    return path.with_name(path.name + ".part")


class StackWriter:
    """Base: ``with writer: writer.write(slice)`` for each slice; published on a clean exit."""

    def __init__(self, path: str | Path, dtype: str = "float32") -> None:
        self.path = Path(path)
        self.dtype = np.dtype(dtype)
        if self.dtype not in (np.dtype("float32"), np.dtype("uint8")):
            raise VolumeError(f"{self.path}: stacks are written as float32 or uint8, not {self.dtype}")
        self.count = 0

    def _check(self, image: np.ndarray) -> np.ndarray:
        image = np.asarray(image)
        if self.dtype == np.uint8 and image.dtype != np.uint8:
            if image.size and (image.min() < 0 or image.max() > 255):
                raise VolumeError(f"{self.path}: values outside 0..255 cannot be written as uint8")
        return image.astype(self.dtype, copy=False)

    def write(self, image: np.ndarray) -> None:
        self._write(self._check(image))
        self.count += 1

    def __enter__(self) -> StackWriter:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._open(_partial(self.path))
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        partial = _partial(self.path)
        try:
            self._close()
            if exc_type is None:
                if self.path.is_dir():
                    shutil.rmtree(self.path)
                os.replace(partial, self.path)
        finally:
            if partial.is_dir():
                shutil.rmtree(partial)
            elif partial.exists():
                partial.unlink()

    def _open(self, partial: Path) -> None:
        raise NotImplementedError

    def _write(self, image: np.ndarray) -> None:
        raise NotImplementedError

    def _close(self) -> None:
        pass


class TiffStackWriter(StackWriter):
    """Multipage TIFF; a 3-D slice (C, H, W) makes a (Z, C, H, W) stack."""

    def _open(self, partial: Path) -> None:
        import tifffile

        if self.path.suffix.lower() not in (".tif", ".tiff"):
            raise VolumeError(f"{self.path}: a TIFF stack needs a .tif name")
        self._tif = tifffile.TiffWriter(partial)

    def _write(self, image: np.ndarray) -> None:
        axes = "ZYX" if image.ndim == 2 else "ZCYX"
        self._tif.write(image, contiguous=True, metadata={"axes": axes})

    def _close(self) -> None:
        self._tif.close()


class PngFolderWriter(StackWriter):
    """A folder of uint8 PNG slices named ``{prefix}{index:04d}.png``."""

    def __init__(self, path: str | Path, dtype: str = "uint8", prefix: str = "slice_") -> None:
        super().__init__(path, "uint8")
        self.prefix = prefix

    def _open(self, partial: Path) -> None:
        if partial.exists():
            shutil.rmtree(partial)
        partial.mkdir(parents=True)
        self._folder = partial

    def _write(self, image: np.ndarray) -> None:
        from PIL import Image

        if image.ndim != 2:
            raise VolumeError(f"{self.path}: PNG slices are 2-D, got shape {image.shape}")
        Image.fromarray(image).save(self._folder / f"{self.prefix}{self.count:04d}.png")


class NiftiWriter(StackWriter):
    """An uncompressed ``.nii`` of ``count`` slices of ``shape`` (H, W), written as the slices come."""

    def __init__(self, path: str | Path, shape: Sequence[int], count: int, spacing: Sequence[float] = (1.0, 1.0, 1.0),
                 dtype: str = "float32") -> None:
        super().__init__(path, dtype)
        if self.path.suffix != ".nii":
            raise VolumeError(f"{self.path}: NIfTI is written uncompressed, name it .nii")
        if len(spacing) != 3:
            raise VolumeError(f"{self.path}: spacing must be (z, y, x), got {spacing}")
        self.shape, self.expected, self.spacing = tuple(shape), int(count), [float(s) for s in spacing]

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
        self._file = open(partial, "wb")
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


def stack_writer(output_format: str, path: str | Path, dtype: str = "float32", shape: Sequence[int] | None = None,
                 count: int | None = None, spacing: Sequence[float] = (1.0, 1.0, 1.0)) -> StackWriter:
    """The writer for ``output_format`` (one of :data:`FORMATS`)."""
    if output_format == "tiff":
        return TiffStackWriter(path, dtype)
    if output_format == "png":
        return PngFolderWriter(path)
    if output_format == "nifti":
        if shape is None or count is None:
            raise ValueError("a NIfTI writer needs the slice shape and count")
        return NiftiWriter(path, shape, count, spacing, dtype)
    raise ValueError(f"output_format must be one of {FORMATS}, got {output_format!r}")
