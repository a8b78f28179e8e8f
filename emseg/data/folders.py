"""A lab's own slices: ``images/`` plus one mask folder per class named in ``classes``, or a ``labels/`` folder of
painted label images (0 = not painted, 1 = background, 2 = the first class, ...: :mod:`emseg.data.painted`).
Slices are split into train, validation and test by fractions with a fixed seed."""

from __future__ import annotations

from pathlib import Path

from emseg.data.class_masks import class_mask_datalist
from emseg.data.datalist import DatasetNotFoundError
from emseg.data.entry import Dataset
from emseg.data.painted import LABELS_FOLDER, painted_datalist
from emseg.data.splits import resolve_split
from emseg.io import list_slice_files

IMAGES = "images"
SPLIT = {"fractions": {"train": 0.7, "validation": 0.15, "test": 0.15}, "seed": 0}


def ensure_folders(dataset_dir: Path, download: bool) -> Path:
    images = dataset_dir / IMAGES
    if not images.is_dir() or not list_slice_files(images):
        raise DatasetNotFoundError(f"{images}: missing or empty; the 'folders' data set needs {dataset_dir}/"
                                   f"{IMAGES}/ and one mask folder per class (--dataset_dir, --classes)")
    return dataset_dir


def folders_datalist(dataset_dir, part, split, classes, priority, threshold, download) -> list[dict]:
    images = ensure_folders(Path(dataset_dir), download) / IMAGES
    indices = resolve_split(split or SPLIT, len(list_slice_files(images)), images)[part]
    if (Path(dataset_dir) / LABELS_FOLDER).is_dir():
        return painted_datalist(dataset_dir, IMAGES, ["background", *classes], indices)
    return class_mask_datalist(dataset_dir, classes, IMAGES, priority, threshold, indices)


DATASET = Dataset(
    name="folders",
    folder="folders",
    title="A lab's own EM slices",
    description="EM slices with one mask folder per class or painted labels.",
    spacing=(1.0, 1.0, 1.0),
    ensure=ensure_folders,
    items=folders_datalist,
    test_images=lambda dataset_dir: dataset_dir / IMAGES,
)
