"""Data sets by name: one function gives the datalist of any of them, so one bundle config runs each. Each data set
is declared (:class:`emseg.data.entry.Dataset`) in its own module; this one collects them.

| name | layout | classes (label values 0, 1, ...) |
|---|---|---|
| ``isbi2012`` | ``train-volume.tif``, ``train-labels.tif`` (downloaded if missing) | membrane, interior |
| ``epfl`` | ``train/`` and ``test/``, each ``slices/`` plus one mask folder per structure | background, membranes, mitochondria, vesicles, PSD, axon |
| ``folders`` | a lab's own: ``images/`` plus one mask folder per class named in ``classes``, or ``labels/`` of painted labels | background, then ``classes`` |

``folders`` with a ``labels/`` folder reads painted label images, one per image with the same name: 0 = not painted
(unlabelled: no loss, no score), 1 = background, 2 = the first class of ``classes``, ... (:mod:`emseg.data.painted`):
what napari's labels layer, Fiji or ilastik save, so a few strokes per slice train.

Binary membrane segmentation is the two-class case of the same pipeline: a data set whose
task is cell interior vs membrane names its ``interior_class`` (ISBI: 1), and evaluation adds
the ISBI challenge scores for it; per-class Dice and IoU are computed for every data set.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from emseg.data import epfl, folders, isbi2012
from emseg.data.class_masks import DEFAULT_THRESHOLD
from emseg.data.entry import Dataset
from emseg.data.tiling import tile_datalist
from emseg.errors import require_flag
from emseg.io import VolumeError

# every data set emseg knows, each declared by its own module
DATASETS: dict[str, Dataset] = {spec.name: spec for spec in (isbi2012.DATASET, epfl.DATASET, folders.DATASET)}


def get_dataset(name: str) -> Dataset:
    """The :class:`Dataset` called ``name``; a clear error for an unknown name."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; expected one of {', '.join(DATASETS)}")
    return DATASETS[name]


def dataset_classes(dataset: str, classes: Mapping[str, Sequence[str]] | None = None) -> dict[str, list[str]]:
    """Class name -> mask folders of ``dataset`` (``classes`` given, else the data set's default). A list of class
    names means one mask folder per class, named like it."""
    spec = get_dataset(dataset)
    chosen = classes if classes is not None else spec.default_classes
    if isinstance(chosen, (list, tuple)):
        chosen = {str(name): [str(name)] for name in chosen}
    if chosen is None:
        if spec.fixed_class_names is not None:
            return {}
        raise ValueError(f"dataset {dataset!r} needs its classes: set classes to {{class name: [mask folders]}}, e.g. "
                         "--classes \"{'mitochondria': ['mito_masks']}\"")
    return {name: [folders] if isinstance(folders, str) else list(folders) for name, folders in chosen.items()}


def class_names(dataset: str, classes: Mapping[str, Sequence[str]] | None = None) -> list[str]:
    """Names of the label values 0, 1, ... of ``dataset``: its fixed classes, or background then ``classes``."""
    spec = get_dataset(dataset)
    if spec.fixed_class_names is not None:
        return list(spec.fixed_class_names)
    return ["background", *dataset_classes(dataset, classes)]


def interior_class(dataset: str) -> int | None:
    """The cell-interior class index of a membrane task (ISBI: 1), None for other data sets."""
    return get_dataset(dataset).interior_class


def voxel_spacing(dataset: str) -> list[float]:
    """Voxel size (z, y, x) in micrometres of ``dataset`` (ISBI: 0.05, 0.004, 0.004; EPFL: 5 nm isotropic)."""
    return list(get_dataset(dataset).spacing)


def default_dataset_dir(dataset: str, project_root: str | Path) -> str:
    """``<project_root>/data/<folder of the data set>``."""
    return str(Path(project_root) / "data" / get_dataset(dataset).folder)


def test_images(dataset: str, dataset_dir: str | Path) -> str:
    """The unlabelled (or test) images of ``dataset``: the default input of a bundle's inference."""
    return str(get_dataset(dataset).test_images(Path(dataset_dir)))


def ensure_dataset(dataset: str, dataset_dir: str | Path, download: bool = True) -> Path:
    """Check (for ISBI 2012, download when allowed) the files of ``dataset``; one clear error if missing."""
    return get_dataset(dataset).ensure(Path(dataset_dir), require_flag(download, "download"))


def datalist(
    dataset: str,
    dataset_dir: str | Path,
    part: str,
    split: Mapping | None = None,
    classes: Mapping[str, Sequence[str]] | None = None,
    class_priority: Sequence[str] | None = None,
    mask_threshold: int = DEFAULT_THRESHOLD,
    tile_grid: Sequence[int] = (1, 1),
    download: bool = True,
    min_size: Sequence[int] | None = None,
) -> list[dict]:
    """MONAI data items ``{"image", "label" (class index), "name", "index"}`` of ``part`` (train, validation,
    test) of ``dataset``, cut into ``tile_grid`` crops.

    ``split``, ``classes`` and ``class_priority`` None mean the data set's defaults (documented in its module).
    ``min_size`` (the training patch size): refuse slices smaller than it, which random crops cannot fill.
    """
    if part not in ("train", "validation", "test"):
        raise ValueError(f"the data part must be train, validation or test, got {part!r} (the bundle keys eval_split "
                         f"and validation_split choose it; e.g. --eval_split test)")
    require_flag(download, "download")
    spec = get_dataset(dataset)
    chosen = dataset_classes(dataset, classes)
    items = tile_datalist(spec.items(Path(dataset_dir), part, split, chosen, class_priority, mask_threshold, download),
                          tile_grid)
    if min_size is not None:
        small = [item for item in items if any(s < m for s, m in zip(item["image"].shape[-2:], min_size))]
        if small:
            raise VolumeError(f"{dataset_dir}: slice {small[0]['name']} is {tuple(small[0]['image'].shape[-2:])}, "
                              f"smaller than patch_size {list(min_size)}; lower --patch_size (or --tile_grid)")
    return items
