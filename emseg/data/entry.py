"""What emseg knows about one data set, declared by the data set's own module (``isbi2012``, ``epfl``,
``folders``) and read by everything else: the datalists, the CLI's ``emseg data download``, the bioimage.io
export's training-data description. Adding a data set is one module declaring a :class:`Dataset` and one line in
``emseg.data.datasets.DATASETS``."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True, kw_only=True)
class Dataset:
    """A data set: where it lives, its classes, task, pixel size, citation, loaders and (if public) download."""

    name: str  # the bundle key ``dataset``
    folder: str  # its folder under ``<project>/data``
    title: str  # one line, as bioimage.io names training data
    description: str  # what the images show, for people and for bioimage.io
    citations: Sequence[tuple[str, str]] = ()  # (text, doi)
    spacing: tuple[float, float, float]  # voxel size (z, y, x) in micrometres
    default_classes: Mapping[str, Sequence[str]] | None = None  # class name -> mask folders; None: fixed or given
    fixed_class_names: Sequence[str] | None = None  # label values 0, 1, ... of a data set not built from masks
    interior_class: int | None = None  # the cell-interior class of a membrane task (challenge scores), else None
    ensure: Callable[[Path, bool], Path]  # (dataset_dir, download allowed) -> dataset_dir, checked
    items: Callable[..., list[dict]]  # (dataset_dir, part, split, classes, priority, threshold, download)
    test_images: Callable[[Path], Path]  # the unlabelled (or test) images: a bundle's default inference input
    # (root, url or None for the public one, sha256 or None to skip the check, keep the archive) -> files written
    download: Callable[..., tuple[Path, ...]] | None = field(default=None)
    sha256: str | None = None  # the published checksum of the download
