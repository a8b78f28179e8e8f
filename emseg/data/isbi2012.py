"""The ISBI 2012 EM segmentation stack: files, value convention, default split, download and datalists.

``train-volume.tif`` holds 30 slices of 512x512 ssTEM; ``train-labels.tif`` marks
cell interior 255 and membrane 0; as class indices 0 is membrane and 1 cell interior.
The default split keeps slices 25-29 as a held-out test set that is never used for
training or model selection. The public copy is torch-em's HDF5 file, converted to the
two TIFF stacks on download.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from emseg.data.datalist import (
    DatasetNotFoundError,
    binary_label,
    check_pair,
    slice_datalist,
)
from emseg.data.download import download_file
from emseg.data.entry import Dataset
from emseg.data.splits import check_split
from emseg.io import VolumeError, read_volume, write_volume

logger = logging.getLogger(__name__)

IMAGE_FILE = "train-volume.tif"
LABEL_FILE = "train-labels.tif"
TEST_IMAGE_FILE = "test-volume.tif"  # challenge test slices, no labels
INTERIOR_VALUE = 255
CLASS_NAMES = ["membrane", "interior"]  # class index 0 and 1
INTERIOR_CLASS = 1
SPACING = (0.05, 0.004, 0.004)  # voxel size (z, y, x) in micrometres: 50 nm sections, 4 nm pixels
DEFAULT_SPLIT: dict[str, list[int]] = {
    "train": list(range(0, 22)),
    "validation": list(range(22, 25)),
    "test": list(range(25, 30)),
}


# torch-em's public HDF5 copy of the ISBI 2012 training volume (keys: raw, labels/membranes).
ISBI2012_URL = "https://oc.embl.de/index.php/s/h0TkwqxU0PJDdMd/download"
ISBI2012_SHA256 = "0e10fe909a1243084d91773470856993b7d40126a12e85f0f1345a7a9e512f29"
ISBI2012_RAW_KEY = "raw"
ISBI2012_LABEL_KEY = "labels/membranes"


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
    """Per-slice MONAI datalist of one split ``part`` ("train", "validation" or "test"); labels are class
    indices (0 membrane, 1 cell interior)."""
    image, label = load_isbi2012(dataset_dir, download)
    parts = check_split(split or DEFAULT_SPLIT, image.shape[0], Path(dataset_dir) / IMAGE_FILE)
    if part not in parts:
        raise ValueError(f"unknown split part '{part}'; expected one of {list(parts)}")
    if not parts[part]:
        raise VolumeError(f"{Path(dataset_dir) / IMAGE_FILE}: split '{part}' selects no slices")
    return slice_datalist(image, label, parts[part], name="isbi")


def interior_from_membrane_labels(labels: np.ndarray, source: str | Path) -> np.ndarray:
    """ISBI convention (255 = cell interior, 0 = membrane) from a binary label volume of either polarity.

    Cell interior is the majority class in ISBI (about 78% of pixels): a mask whose
    foreground is the minority marks membranes and is inverted, with a log line.
    """
    values = np.unique(labels)
    if values.size > 2:
        raise VolumeError(f"{source}: expected a binary membrane mask, found {values.size} distinct values")
    foreground = labels > values.min() if values.size == 2 else np.zeros(labels.shape, bool)
    if foreground.mean() < 0.5:
        logger.info("%s: foreground covers %.1f%% of pixels, so it marks membranes; inverting to cell interior",
                    source, 100 * foreground.mean())
        foreground = ~foreground
    return np.where(foreground, INTERIOR_VALUE, 0).astype(np.uint8)


def convert_isbi2012_hdf5(h5_path: str | Path, root: str | Path) -> tuple[Path, Path]:
    """Write ``train-volume.tif`` and ``train-labels.tif`` (ISBI layout) into ``root`` from torch-em's HDF5 file."""
    root = Path(root)
    raw = read_volume(h5_path, ISBI2012_RAW_KEY)
    labels = read_volume(h5_path, ISBI2012_LABEL_KEY)
    if raw.shape != labels.shape:
        raise VolumeError(f"{h5_path}: '{ISBI2012_RAW_KEY}' is {raw.shape} but '{ISBI2012_LABEL_KEY}' is {labels.shape}")
    if raw.dtype != np.uint8:
        raise VolumeError(f"{h5_path}: '{ISBI2012_RAW_KEY}' has type {raw.dtype}, expected uint8 EM slices")
    interior = interior_from_membrane_labels(labels, f"{h5_path}:{ISBI2012_LABEL_KEY}")
    image_path, label_path = root / IMAGE_FILE, root / LABEL_FILE
    write_volume(image_path, raw, "tiff", "uint8", SPACING)  # atomic: written to .part, then renamed
    write_volume(label_path, interior, "tiff", "uint8", SPACING)
    logger.info("wrote %s and %s (%d slices of %dx%d)", image_path, label_path, *raw.shape)
    return image_path, label_path


def download_isbi2012(
    root: str | Path, url: str = ISBI2012_URL, sha256: str | None = ISBI2012_SHA256, keep_hdf5: bool = False
) -> tuple[Path, Path]:
    """Download the ISBI 2012 training stack to ``root``, verify its sha256 and write it as TIFF stacks.

    Raises MONAI's ``HashCheckError`` (nothing is written) when the checksum differs,
    and :class:`emseg.data.download.DownloadError` when the server cannot be reached.
    """
    root = Path(root).resolve()
    created = [folder for folder in (root, *root.parents) if not folder.exists()]
    h5_path = root / "isbi2012_train.h5"
    ours = not h5_path.exists()  # a copy the user kept (--keep-hdf5) is theirs: never deleted
    try:
        download_file(url, h5_path, sha256)
        return convert_isbi2012_hdf5(h5_path, root)
    except BaseException:
        if ours:
            h5_path.unlink(missing_ok=True)
        for folder in created:  # leave nothing behind: the folders made for the download, if still empty
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
        raise
    finally:
        if ours and not keep_hdf5:
            h5_path.unlink(missing_ok=True)


def _items(dataset_dir, part, split, classes, priority, threshold, download):
    return isbi2012_datalist(dataset_dir, part, split or DEFAULT_SPLIT, download)


DATASET = Dataset(
    name="isbi2012",
    folder="isbi2012",
    title="ISBI 2012 EM segmentation challenge",
    description="Serial-section TEM of the Drosophila first instar larva ventral nerve cord, 30 slices of 512x512 at "
                "4x4x50 nm, labelled membrane and cell interior.",
    citations=[("Cardona A. et al. PLoS Biol 8(10): e1000502, 2010.", "10.1371/journal.pbio.1000502"),
               ("Arganda-Carreras I. et al. Front. Neuroanat. 9:142, 2015.", "10.3389/fnana.2015.00142")],
    spacing=SPACING,
    fixed_class_names=CLASS_NAMES,
    interior_class=INTERIOR_CLASS,
    ensure=ensure_isbi2012,
    items=_items,
    test_images=lambda dataset_dir: dataset_dir / TEST_IMAGE_FILE,
    download=lambda root, url, sha256, keep: download_isbi2012(root, url or ISBI2012_URL, sha256, keep),
    sha256=ISBI2012_SHA256,
)
