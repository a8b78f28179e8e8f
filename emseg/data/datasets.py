"""Data sets by name, so that one bundle config can switch between them with ``--dataset``.

``isbi2012``: binary, label 0 membrane, 1 cell interior. ``epfl``: the EPFL hippocampus
classes (or any classes given as mask folders, see :mod:`emseg.data.epfl`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from emseg.data.class_masks import DEFAULT_THRESHOLD
from emseg.data.epfl import EPFL_CLASSES, EPFL_PRIORITY, EPFL_SPLIT, _folder, class_names, epfl_datalist
from emseg.data.isbi2012 import DEFAULT_SPLIT, ensure_isbi2012, isbi2012_datalist

DATASETS = ("isbi2012", "epfl")
ISBI_CLASS_NAMES = ["membrane", "interior"]


def _check(dataset: str) -> None:
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; expected one of {DATASETS}")


def dataset_class_names(dataset: str, classes: Mapping[str, Sequence[str]] = EPFL_CLASSES) -> list[str]:
    """Names of the label values 0, 1, ... of ``dataset``."""
    _check(dataset)
    return list(ISBI_CLASS_NAMES) if dataset == "isbi2012" else class_names(classes)


def ensure_dataset(dataset: str, dataset_dir: str | Path, download: bool = True) -> Path:
    """Check (and for ISBI 2012, download when allowed) the files of ``dataset``; one clear error if missing."""
    _check(dataset)
    if dataset == "isbi2012":
        return ensure_isbi2012(dataset_dir, download)
    for part in ("train", "test"):
        _folder(Path(dataset_dir), part)
    return Path(dataset_dir)


def dataset_datalist(
    dataset: str,
    dataset_dir: str | Path,
    part: str,
    split: Mapping | None = None,
    classes: Mapping[str, Sequence[str]] = EPFL_CLASSES,
    priority: Sequence[str] = EPFL_PRIORITY,
    threshold: int = DEFAULT_THRESHOLD,
    tile_grid: Sequence[int] = (1, 1),
    download: bool = True,
) -> list[dict]:
    """Data items of ``part`` of ``dataset`` with class-index labels (``split`` None: the data set's default)."""
    _check(dataset)
    if dataset == "isbi2012":
        items = isbi2012_datalist(dataset_dir, part, split or DEFAULT_SPLIT, download)
        for item in items:  # 255 = interior in the files, 1 after isbi2012_datalist; as class index 1
            item["label"] = (item["label"] > 0).astype(np.float32)
        return items
    return epfl_datalist(dataset_dir, part, split or EPFL_SPLIT, classes, priority, threshold, tile_grid)
