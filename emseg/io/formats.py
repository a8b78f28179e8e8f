"""Every volume format emseg reads or writes, one module each, and the one table from file suffix to format.

| format | module | read from | written as |
|---|---|---|---|
| ``tiff`` | ``tiff`` | ``.tif``, ``.tiff`` (a stack or one slice) | an ImageJ hyperstack with the pixel size |
| ``png`` | ``images`` | ``.png``, ``.jpg``, ``.jpeg``; a folder of slices | a folder of PNG slices |
| ``hdf5`` | ``hdf5`` | ``.h5``, ``.hdf5``, ``.hdf`` (a dataset by key) | |
| ``nifti`` | ``nifti`` | ``.nii``, ``.nii.gz`` | a NIfTI volume with the voxel size |
| ``zarr`` | ``zarr_volumes`` | ``.zarr`` (an array or an OME-Zarr image) | an OME-Zarr image with the pixel size |

A new format is one module declaring a :class:`~emseg.io.format.Format` and one entry below.
"""

from __future__ import annotations

from pathlib import Path

from emseg.io import hdf5, images, nifti, tiff, zarr_volumes
from emseg.io.format import Format
from emseg.io.source import VolumeError, suffix

FORMATS: dict[str, Format] = {f.name: f for f in (tiff.FORMAT, images.FORMAT, hdf5.FORMAT, nifti.FORMAT,
                                                   zarr_volumes.FORMAT)}
SUFFIXES: dict[str, Format] = {s: f for f in FORMATS.values() for s in f.suffixes}  # the one suffix table
WRITTEN: dict[str, Format] = {name: f for name, f in FORMATS.items() if f.writer is not None}


def format_of(path: str | Path) -> Format:
    """The format a file is read as, by its suffix; one clear error naming the file otherwise."""
    found = SUFFIXES.get(suffix(Path(path)))
    if found is None:
        labels = ", ".join(f.label for f in FORMATS.values())
        raise VolumeError(f"{path}: unsupported file type '{suffix(Path(path))}' (expected {labels} or a folder of "
                          f"slices)")
    return found


def written_format(name: str) -> Format:
    """The format an output is written in, by name (``output_format``)."""
    if name not in WRITTEN:
        raise ValueError(f"output_format must be one of {tuple(WRITTEN)}, got {name!r}")
    return WRITTEN[name]


def format_for_path(path: str | Path) -> str:
    """The output format a file name asks for: its suffix (``.tif`` TIFF, ``.zarr`` OME-Zarr, ``.nii``/``.nii.gz``
    NIfTI), no suffix a folder of PNG slices."""
    name = suffix(Path(path))
    by_output = {s: f.name for f in WRITTEN.values() for s in f.suffixes if f.output_suffix}
    by_output.update({f.output_suffix: f.name for f in WRITTEN.values() if f.output_suffix == ""})
    if name not in by_output:
        examples = ", ".join(f.output_suffix for f in WRITTEN.values() if f.output_suffix)
        raise VolumeError(f"{path}: cannot tell the format from {name!r}; name the output {examples} or a folder "
                          f"(PNG slices)")
    return by_output[name]


def output_suffix(name: str) -> str:
    """The suffix an output of format ``name`` gets (``tiff``: ``.tif``; ``png``: none, a folder)."""
    return written_format(name).output_suffix
