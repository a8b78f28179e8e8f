"""Fine-tuning a bundle on strokes painted over a stack in memory (the napari plugin's "Correct and fine-tune").

The strokes become a ``folders`` data set of their own: every slice with a painted pixel is written, with its
painted labels, into a new folder ``<project>/data/painted/<name>_<time>/`` (``images/``, ``labels/``; 0 = not
painted, 1 = background, 2 = the first class, as :mod:`emseg.data.painted` reads them). That folder is never
written again, so the run that trains on it can always say what it learnt from. The training itself is the
bundle's own: ``train.json`` with the ``finetune.json`` overlay, started from the chosen model (``init_from``),
through MONAI's bundle CLI in a process of its own, so it can be followed (:func:`read_losses`) and stopped.

A painted value names a class of the fine-tuned bundle, which is ``background`` followed by the parent's other
classes; :func:`painting_classes` says which parent class each value continues (``class_map``): a membrane model's
``interior`` becomes the background, so 1 = cell interior and 2 = membrane.
"""

from __future__ import annotations

import csv
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from emseg.data.painted import LABELS_FOLDER
from emseg.engine.paths import project_root
from emseg.io import VolumeError, write_volume

IMAGES = "images"
INTERIOR = "interior"


def legend(names: Sequence[str]) -> str:
    """``1 = membrane, 2 = interior``: the painted value of each class of ``names`` (0 is not painted)."""
    return ", ".join(f"{value} = {name}" for value, name in enumerate(names, start=1))


@dataclass(frozen=True)
class Painting:
    """How painted values map onto a bundle's classes when fine-tuning a parent with ``parent_classes``.

    ``classes``: the ``folders`` data set's ``--classes`` (1 = background is implicit); ``class_map``: which parent
    class each new class continues; ``names``: the parent's name of each painted value, 1 first."""

    classes: list[str]
    class_map: dict[str, str]
    names: list[str]

    def from_class_values(self, strokes: np.ndarray, parent_classes: Sequence[str]) -> np.ndarray:
        """uint8 painted values of ``strokes`` painted in the parent's classes (value ``v`` = ``parent_classes[v - 1]``,
        0 = not painted): the value of the same class here."""
        lookup = np.zeros(len(parent_classes) + 1, np.uint8)
        for value, name in enumerate(parent_classes, start=1):
            lookup[value] = self.names.index(str(name)) + 1
        strokes = np.asarray(strokes)
        low, high = int(strokes.min(initial=0)), int(strokes.max(initial=0))
        if strokes.dtype.kind not in "iub" or low < 0 or high >= len(lookup):
            raise VolumeError(f"strokes: values must be 0 (not painted) or 1..{len(parent_classes)} "
                              f"({legend(parent_classes)}); found "
                              f"{strokes.dtype} values up to {high}")
        return lookup[strokes]

    def legend(self) -> str:
        """``1 = interior, 2 = membrane`` (0 is not painted)."""
        return legend(self.names)


def painting_classes(parent_classes: Sequence[str]) -> Painting:
    """The :class:`Painting` of a parent model's classes: its ``background`` (else its cell ``interior``, else its
    first class) is painted 1, its other classes 2, 3, ... in their order."""
    parent = [str(name) for name in parent_classes]
    if len(parent) < 2:
        raise ValueError(f"a model of classes {parent} cannot be fine-tuned on strokes: it needs a background and "
                         f"at least one class")
    background = "background" if "background" in parent else INTERIOR if INTERIOR in parent else parent[0]
    classes = [name for name in parent if name != background]
    class_map = {name: name for name in classes}
    if background != "background":
        class_map["background"] = background
    return Painting(classes, class_map, [background, *classes])


def check_strokes(image: np.ndarray, strokes: np.ndarray, painting: Painting) -> list[int]:
    """The slices of ``strokes`` (painted values, 0 = not painted) holding a painted pixel; one clear error when the
    shapes differ, nothing is painted, or a value names no class."""
    image, strokes = np.asarray(image), np.asarray(strokes)
    if image.ndim == 2:
        image, strokes = image[None], strokes[None] if strokes.ndim == 2 else strokes
    if image.shape != strokes.shape or image.ndim != 3:
        raise VolumeError(f"strokes of shape {strokes.shape} do not lie on the image of shape {image.shape}; paint "
                          f"in a labels layer made for this image")
    if strokes.dtype.kind not in "iub":
        raise VolumeError(f"strokes must be a labels layer (whole numbers), got {strokes.dtype}")
    highest = int(strokes.max(initial=0))
    if highest > len(painting.names) or int(strokes.min(initial=0)) < 0:
        raise VolumeError(f"strokes: painted value {highest} names no class ({painting.legend()}, 0 = not "
                          f"painted); repaint those pixels")
    painted = [int(z) for z in np.flatnonzero(strokes.reshape(len(strokes), -1).any(axis=1))]
    if not painted:
        raise VolumeError(f"strokes: nothing is painted; paint a few strokes ({painting.legend()}) first")
    return painted


def write_painted_dataset(image: np.ndarray, strokes: np.ndarray, folder: str | Path, painting: Painting) -> Path:
    """Write the painted slices of ``image`` and ``strokes`` as a new ``folders`` data set in ``folder`` (refused
    if it exists: a run's data are never rewritten); slice ``z`` is ``slice_<z>.tif`` in ``images/`` and
    ``labels/``. Returns ``folder``."""
    folder = Path(folder)
    image, strokes = np.asarray(image), np.asarray(strokes)
    painted = check_strokes(image, strokes, painting)
    if image.ndim == 2:
        image, strokes = image[None], strokes[None]
    if folder.exists():
        raise FileExistsError(f"{folder}: already exists; painted data sets are never rewritten, choose a new folder")
    partial = folder.with_name(folder.name + ".partial")
    for z in painted:
        write_volume(partial / IMAGES / f"slice_{z:04d}.tif", image[z], dtype=str(image.dtype))
        write_volume(partial / LABELS_FOLDER / f"slice_{z:04d}.tif", strokes[z], dtype="uint8")
    partial.rename(folder)
    return folder


def painted_folder(bundle: str | Path, name: str) -> Path:
    """``<project>/data/painted/<name>_<YYYYmmdd-HHMMSS>``: where the strokes of a fine-tuning of ``bundle`` go."""
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in name) or "strokes"
    return Path(project_root(bundle)) / "data" / "painted" / f"{safe}_{time.strftime('%Y%m%d-%H%M%S')}"


def finetune_split(slices: int) -> dict[str, list[int]]:
    """Train on every painted slice but one, which validates (the last); a single painted slice trains and
    validates alone (the validation scores its own strokes: the run's record keeps that split)."""
    if slices < 1:
        raise ValueError("no painted slice to fine-tune on")
    if slices == 1:
        return {"train": [0], "validation": []}
    return {"train": list(range(slices - 1)), "validation": [slices - 1]}


def finetune_command(bundle: str | Path, dataset_dir: str | Path, init_from: str, painting: Painting,
                     run_name: str, epochs: int = 30, epoch_length: int = 10, **overrides) -> list[str]:
    """The MONAI bundle command that fine-tunes ``bundle`` (``train.json`` + ``finetune.json``) from ``init_from``
    on the painted data set ``dataset_dir``, as run ``run_name``. It does not promote: ``emseg bundle promote``
    (or the plugin's Promote) decides that. ``overrides``: more bundle keys (``batch_size=2``)."""
    configs = Path(bundle) / "configs"
    slices = len(list((Path(dataset_dir) / IMAGES).glob("*.tif")))
    values = {"dataset": "folders", "dataset_dir": str(dataset_dir), "classes": painting.classes,
              "class_map": painting.class_map, "init_from": str(init_from), "run_name": run_name, "epochs": epochs,
              "epoch_length": epoch_length, "split": finetune_split(slices), "ckpt_dir": "", "download": False,
              **overrides}
    argv = [sys.executable, "-m", "monai.bundle", "run", "training", "--config_file",
            repr([str(configs / "train.json"), str(configs / "finetune.json")])]
    for key, value in values.items():
        argv += [f"--{key}", value if isinstance(value, str) else repr(value)]
    return argv


def read_losses(run_dir: str | Path) -> list[tuple[int, float]]:
    """(epoch, training loss) of each epoch a run has finished so far (its ``metrics.csv``)."""
    path = Path(run_dir) / "metrics.csv"
    if not path.is_file():
        return []
    with path.open(newline="") as f:
        return [(int(row["epoch"]), float(row["train_loss"])) for row in csv.DictReader(f)
                if row.get("train_loss") not in (None, "")]
