"""The ISBI 2012 EM segmentation stack: files, value convention, default split and datalists.

``train-volume.tif`` holds 30 slices of 512x512 ssTEM; ``train-labels.tif`` marks
cell interior 255 and membrane 0. The default split keeps slices 25-29 as a
held-out test set that is never used for training or model selection.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from emseg.data.datalist import binary_label, check_pair, check_split, slice_datalist
from emseg.data.io import VolumeError, read_volume

logger = logging.getLogger(__name__)

IMAGE_FILE = "train-volume.tif"
LABEL_FILE = "train-labels.tif"
TEST_IMAGE_FILE = "test-volume.tif"  # challenge test slices, no labels
INTERIOR_VALUE = 255
DEFAULT_SPLIT: dict[str, list[int]] = {
    "train": list(range(0, 22)),
    "validation": list(range(22, 25)),
    "test": list(range(25, 30)),
}


class DatasetNotFoundError(FileNotFoundError):
    """The data set's files are not in the dataset folder and could not be downloaded."""


def missing_files(dataset_dir: str | Path) -> list[str]:
    """Names of the ISBI training files that ``dataset_dir`` lacks."""
    return [name for name in (IMAGE_FILE, LABEL_FILE) if not (Path(dataset_dir) / name).is_file()]


def _not_found_message(dataset_dir: Path, missing: Sequence[str], reason: str) -> str:
    return (
        f"ISBI 2012 data not found: {dataset_dir} lacks {', '.join(missing)}. "
        f"Put the challenge files {IMAGE_FILE} and {LABEL_FILE} in {dataset_dir}, "
        f"or download them with: emseg data download isbi2012 --root {dataset_dir} ({reason})"
    )


def ensure_isbi2012(dataset_dir: str | Path, download: bool = True, url: str | None = None) -> Path:
    """Make sure ``dataset_dir`` holds the ISBI training files, downloading them (from ``url``) if allowed.

    Raises :class:`DatasetNotFoundError` with one message naming the missing files,
    where to put them and the download command when they cannot be had.
    """
    dataset_dir = Path(dataset_dir).resolve()
    missing = missing_files(dataset_dir)
    if not missing:
        return dataset_dir
    if not download:
        raise DatasetNotFoundError(_not_found_message(dataset_dir, missing, "automatic download is off"))
    from emseg.data.download import ISBI2012_URL, download_isbi2012

    logger.info("ISBI 2012 files missing in %s (%s): downloading", dataset_dir, ", ".join(missing))
    try:
        download_isbi2012(dataset_dir, url=url or ISBI2012_URL)
    except Exception as err:  # URLError, OSError, HashCheckError: all mean "no data"
        raise DatasetNotFoundError(_not_found_message(dataset_dir, missing, f"automatic download failed: {err}")) from err
    return dataset_dir


def load_isbi2012(dataset_dir: str | Path, download: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Image volume (uint8) and label volume (1 = cell interior, 0 = membrane) of the ISBI training stack."""
    dataset_dir = ensure_isbi2012(dataset_dir, download)
    image_path, label_path = dataset_dir / IMAGE_FILE, dataset_dir / LABEL_FILE
    image = read_volume(image_path)
    label = read_volume(label_path)
    check_pair(image, label, image_path, label_path)
    return image, binary_label(label, label_path, foreground=INTERIOR_VALUE)


def isbi2012_datalist(
    dataset_dir: str | Path,
    part: str,
    split: Mapping[str, Sequence[int]] | None = None,
    download: bool = True,
) -> list[dict]:
    """Per-slice MONAI datalist of one split ``part`` ("train", "validation" or "test")."""
    image, label = load_isbi2012(dataset_dir, download)
    parts = check_split(split or DEFAULT_SPLIT, image.shape[0], Path(dataset_dir) / IMAGE_FILE)
    if part not in parts:
        raise ValueError(f"unknown split part '{part}'; expected one of {list(parts)}")
    if not parts[part]:
        raise VolumeError(f"{Path(dataset_dir) / IMAGE_FILE}: split '{part}' selects no slices")
    return slice_datalist(image, label, parts[part], name="isbi")
