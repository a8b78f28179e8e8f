"""The EPFL hippocampus multi-class EM data (Lucchi et al. 2012): membranes, mitochondria,
vesicles, post-synaptic densities and axons on 768x1024 FIB-SEM slices.

Layout (as shipped in ``../shared/data/epfl-hippocampus-multiclass``)::

    train/slices/training0000.png   and one mask folder per structure with the same names:
    train/membranes/ train/mitochondrion/ "train/mitochondrial boundaries"/ train/vesicles/
    train/PSD/ train/axon/          (test/ alike, 5 slices)

Class indices: 0 background, 1 membranes, 2 mitochondria (mitochondrion + mitochondrial
boundaries), 3 vesicles, 4 PSD, 5 axon. Masks are anti-aliased (binarised at 128) and may
overlap; the default priority gives small structures precedence over the large ones they
sit on: PSD > vesicles > mitochondria > membranes > axon (a PSD pixel on a membrane is PSD,
a membrane pixel inside an axon mask is membrane). Training and validation slices are drawn
from ``train/`` by fractions with a fixed seed; ``test/`` is the test part.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from emseg.data.class_masks import DEFAULT_THRESHOLD, class_mask_datalist
from emseg.data.datalist import DatasetNotFoundError
from emseg.data.entry import Dataset
from emseg.data.splits import resolve_split
from emseg.io import list_slice_files

EPFL_CLASSES: dict[str, list[str]] = {
    "membranes": ["membranes"],
    "mitochondria": ["mitochondrion", "mitochondrial boundaries"],
    "vesicles": ["vesicles"],
    "PSD": ["PSD"],
    "axon": ["axon"],
}
EPFL_PRIORITY = ["PSD", "vesicles", "mitochondria", "membranes", "axon"]
EPFL_SPLIT = {"fractions": {"train": 0.8, "validation": 0.2}, "seed": 0}
IMAGE_FOLDER = "slices"


def part_folder(dataset_dir: Path, part: str) -> Path:
    """``train/`` or ``test/`` of the data set, checked to hold images; one clear error otherwise."""
    folder = dataset_dir / ("test" if part == "test" else "train")
    images = folder / IMAGE_FOLDER
    if not images.is_dir() or not list_slice_files(images):
        raise DatasetNotFoundError(
            f"EPFL hippocampus data not found: {images} is missing or empty. Expected {dataset_dir}/train/ and "
            f"{dataset_dir}/test/, each with {IMAGE_FOLDER}/ and one mask folder per class; pass --dataset_dir"
        )
    return folder


def epfl_datalist(
    dataset_dir: str | Path,
    part: str,
    split: Mapping = EPFL_SPLIT,
    classes: Mapping[str, Sequence[str]] = EPFL_CLASSES,
    priority: Sequence[str] = EPFL_PRIORITY,
    threshold: int = DEFAULT_THRESHOLD,
) -> list[dict]:
    """Data items of ``part`` (train, validation, test) with class-index labels.

    ``split`` divides ``train/``: ``{"fractions": {"train": 0.8, "validation": 0.2}, "seed": 0}`` or explicit
    index lists ``{"train": [...], "validation": [...]}``; ``test`` is always ``test/``.
    """
    dataset_dir = Path(dataset_dir)
    folder = part_folder(dataset_dir, part)
    if part == "test":
        indices = None
    elif part in ("train", "validation"):
        n = len(list_slice_files(folder / IMAGE_FOLDER))
        indices = resolve_split(split, n, folder / IMAGE_FOLDER)[part]
    else:
        raise ValueError(f"part must be train, validation or test, got {part!r}")
    return class_mask_datalist(folder, classes, IMAGE_FOLDER, priority, threshold, indices, name=f"epfl_{folder.name}")


def _ensure(dataset_dir: Path, download: bool) -> Path:
    for part in ("train", "test"):
        part_folder(dataset_dir, part)
    return dataset_dir


def _items(dataset_dir, part, split, classes, priority, threshold, download):
    if priority is None and classes == EPFL_CLASSES:
        priority = EPFL_PRIORITY
    return epfl_datalist(dataset_dir, part, split or EPFL_SPLIT, classes, priority, threshold)


DATASET = Dataset(
    name="epfl",
    folder="epfl-hippocampus-multiclass",
    title="EPFL hippocampus CA1 FIB-SEM",
    description="FIB-SEM slices of mouse hippocampus CA1 at 5 nm isotropic, with masks of membranes, mitochondria, "
                "vesicles, post-synaptic densities and axons.",
    citations=[("Lucchi A. et al. IEEE TMI 31(2):474-486, 2012.", "10.1109/TMI.2011.2171705")],
    spacing=(0.005, 0.005, 0.005),
    default_classes=EPFL_CLASSES,
    ensure=_ensure,
    items=_items,
    test_images=lambda dataset_dir: dataset_dir / "test" / IMAGE_FOLDER,
)
