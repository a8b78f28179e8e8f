"""Writing any volume: :func:`stack_writer` gives the writer of a format (one per format module: ``tiff``, ``png``
folders, ``nifti``, ``zarr``), which takes one slice at a time and publishes the output only when it is complete
(:mod:`emseg.io.stack`); :func:`write_volume` writes a whole (Z, H, W) array through the same writers.

Chosen by name in inference.json (``output_format``):

- ``tiff``: an ImageJ hyperstack with the voxel ``spacing``, float32 (probabilities; the ISBI submission format),
  uint8 (masks, with a colour table) or labels (uint16 when they fit, else plain uint32);
- ``png``: a folder of uint8 PNG slices (``slice_0000.png``, ...);
- ``nifti``: one ``.nii`` (or gzip-compressed ``.nii.gz``) file with the voxel ``spacing`` (z, y, x) in micrometres;
- ``zarr``: an OME-Zarr image (``.zarr`` folder) with the voxel ``spacing``, for napari and Fiji;
- ``tiff`` (or ``zarr``) with channels: a float32 (Z, C, H, W) hyperstack of per-class probabilities.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from emseg.io.formats import format_for_path, written_format
from emseg.io.source import VolumeError
from emseg.io.stack import StackWriter

__all__ = ["StackWriter", "format_for_path", "stack_writer", "write_volume"]


def stack_writer(output_format: str, path: str | Path, dtype: str = "float32", shape: Sequence[int] | None = None,
                 count: int | None = None, spacing: Sequence[float] = (1.0, 1.0, 1.0),
                 overwrite: bool = False, palette: np.ndarray | None = None) -> StackWriter:
    """The writer of format ``output_format`` (``tiff``, ``png``, ``nifti``, ``zarr``)."""
    return written_format(output_format).writer(path, dtype, shape, count, spacing, overwrite, palette)


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
