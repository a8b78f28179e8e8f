"""File > Open Sample > emseg: the ISBI 2012 training slices with their labels and the EPFL hippocampus test slices
with their classes, at their pixel size, from a local copy: ``$EMSEG_DATA/<data set folder>`` (default
``~/emseg-data``; ``isbi2012/`` holds ``train-volume.tif`` and ``train-labels.tif``, ``epfl-hippocampus-multiclass/``
the EPFL folders). Nothing is downloaded from the viewer: where the files are missing, the message names the folder
and the command that fetches them.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from emseg.data import class_names
from emseg.data.datalist import DatasetNotFoundError
from emseg.data.datasets import get_dataset
from emseg.data.isbi2012 import CLASS_NAMES, load_isbi2012

DATA_SETTING = "EMSEG_DATA"


def data_folder(dataset: str) -> Path:
    """Where the local copy of ``dataset`` is looked for (see the module docstring)."""
    root = Path(os.environ.get(DATA_SETTING) or Path.home() / "emseg-data").expanduser()
    return root / get_dataset(dataset).folder


def _missing(folder: Path, err: Exception) -> DatasetNotFoundError:
    return DatasetNotFoundError(f"{str(err).splitlines()[0].rstrip('.')}; or set {DATA_SETTING} to the folder that "
                                f"holds {folder.name}/")


def isbi2012() -> list[tuple]:
    """The 30 ISBI 2012 training slices and their labels (1 = membrane, 2 = cell interior: the painted-label
    convention of ``emseg evaluate --painted``)."""
    folder = data_folder("isbi2012")
    try:
        volume, labels = load_isbi2012(folder, download=False)
    except (DatasetNotFoundError, FileNotFoundError) as err:
        raise _missing(folder, err) from err
    spacing = get_dataset("isbi2012").spacing
    classes = (np.asarray(labels) + 1).astype(np.uint8)  # load_isbi2012: 0 = membrane, 1 = interior
    return [(volume, {"name": "ISBI 2012", "scale": spacing}, "image"),
            (classes, {"name": "ISBI 2012 labels", "scale": spacing,
                       "metadata": {"class_names": CLASS_NAMES}}, "labels")]


def epfl() -> list[tuple]:
    """The EPFL hippocampus test slices and their class index (0 = background, 1 = membranes, ...)."""
    folder = data_folder("epfl")
    entry = get_dataset("epfl")
    try:
        items = entry.items(folder, "test", None, entry.default_classes, None, 128, False)
    except (DatasetNotFoundError, FileNotFoundError) as err:
        raise _missing(folder, err) from err
    image = np.stack([item["image"][0] for item in items])
    label = np.stack([item["label"][0] for item in items]).astype(np.uint8)
    return [(image, {"name": "EPFL hippocampus", "scale": entry.spacing}, "image"),
            (label, {"name": "EPFL classes", "scale": entry.spacing,
                     "metadata": {"class_names": class_names("epfl", None)}}, "labels")]
