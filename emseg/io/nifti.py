"""NIfTI: volumes read slab by slab through nibabel's array proxy, and written as the slices come with the voxel
size in micrometres (NIfTI's on-disk order of an (x, y, z) image is the C order of emseg's (z, y, x) slices)."""

from __future__ import annotations

import gzip
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from emseg.io.format import Format
from emseg.io.source import SliceSource, VolumeError
from emseg.io.stack import StackWriter


def _open_nifti(path: Path, key: str | None) -> SliceSource:
    import nibabel as nib

    try:
        image = nib.load(str(path))
        proxy, itemsize, offset = image.dataobj, image.header.get_data_dtype().itemsize, image.header.get_data_offset()
        shape = proxy.shape
    except Exception as err:  # nibabel raises ImageFileError, EOFError, ...
        raise VolumeError(f"{path}: not a readable NIfTI file ({err})") from err
    _check_stored(path, shape, itemsize, offset)

    def read_all() -> np.ndarray:
        try:
            return np.asarray(proxy).T
        except Exception as err:  # a truncated file fails here
            raise VolumeError(f"{path}: the image cannot be read ({err})") from err

    if len(shape) == 4 and shape[-1] == 1:
        shape = shape[:3]
    if len(shape) == 2:
        return SliceSource(path, 1, (shape[1], shape[0]), lambda i: read_all(), itemsize=itemsize)
    if len(shape) != 3:
        raise VolumeError(f"{path}: expected a 3-D NIfTI volume, got shape {proxy.shape}")

    def read(index: int) -> np.ndarray:  # NIfTI (x, y, z) -> slice z as (y, x)
        try:
            slab = proxy[:, :, index, 0] if len(proxy.shape) == 4 else proxy[:, :, index]
        except Exception as err:  # a truncated file fails here
            raise VolumeError(f"{path}: slice {index} cannot be read ({err})") from err
        return np.asarray(slab).T

    return SliceSource(path, shape[2], (shape[1], shape[0]), read, itemsize=itemsize)


def _check_stored(path: Path, shape: tuple[int, ...], itemsize: int, offset: int) -> None:
    """Refuse, before anything is allocated, a header whose size the file cannot hold: an uncompressed ``.nii``
    must hold every byte it states, a ``.nii.gz`` at most 1032 times its size (deflate's limit)."""
    need, size = offset + int(np.prod(shape, dtype=object)) * itemsize, path.stat().st_size
    most = size * 1032 + 1024 if path.name.lower().endswith(".gz") else size
    if need > most:
        raise VolumeError(f"{path}: the header states {' x '.join(map(str, shape))} voxels ({need:,} bytes) but the "
                          f"file holds {size:,} bytes{' compressed' if most != size else ''}: it is truncated or its "
                          f"header is damaged; copy it again from its source")


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


FORMAT = Format(name="nifti", label="NIfTI", suffixes=(".nii", ".nii.gz"), open=_open_nifti, writer=NiftiWriter,
                output_suffix=".nii.gz")
