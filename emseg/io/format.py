"""What emseg knows about one volume format, declared by the format's own module (``tiff``, ``images``, ``hdf5``,
``nifti``, ``zarr_volumes``) and collected in :mod:`emseg.io.formats`: its names and suffixes, its reader, its
writer and the pixel size it states."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, kw_only=True)
class Format:
    """A volume format: ``name`` (``output_format`` in inference.json), a ``label`` for messages, the file
    ``suffixes`` it is read from, its reader ``open(path, key)`` (a :class:`~emseg.io.source.SliceSource`), its
    stack ``writer`` class and the ``output_suffix`` an output of it gets ("" for a folder), and ``spacing(path)``:
    the voxel size it states, if it can state one."""

    name: str
    label: str
    suffixes: Sequence[str]
    open: Callable
    writer: type | None = None
    output_suffix: str | None = None
    spacing: Callable[[Path], tuple[float, ...] | None] | None = None
