"""Download public EM data sets with MONAI's download utilities and convert them to TIFF stacks."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from emseg.data.io import VolumeError, read_volume, write_tiff

logger = logging.getLogger(__name__)

# torch-em's public HDF5 copy of the ISBI 2012 training volume (keys: raw, labels/membranes).
ISBI2012_URL = "https://oc.embl.de/index.php/s/h0TkwqxU0PJDdMd/download"
ISBI2012_SHA256 = "0e10fe909a1243084d91773470856993b7d40126a12e85f0f1345a7a9e512f29"
ISBI2012_RAW_KEY = "raw"
ISBI2012_LABEL_KEY = "labels/membranes"


class DownloadError(RuntimeError):
    """The data set's server could not be reached or sent nothing."""


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
    return np.where(foreground, 255, 0).astype(np.uint8)


def _atomic_write_tiff(path: Path, volume: np.ndarray, dtype: str) -> None:
    tmp = path.with_name(path.name + ".part")
    write_tiff(tmp, volume, dtype)
    os.replace(tmp, path)


def convert_isbi2012_hdf5(h5_path: str | Path, root: str | Path) -> tuple[Path, Path]:
    """Write ``train-volume.tif`` and ``train-labels.tif`` (ISBI layout) into ``root`` from torch-em's HDF5 file."""
    from emseg.data.isbi2012 import IMAGE_FILE, LABEL_FILE

    root = Path(root)
    raw = read_volume(h5_path, ISBI2012_RAW_KEY)
    labels = read_volume(h5_path, ISBI2012_LABEL_KEY)
    if raw.shape != labels.shape:
        raise VolumeError(f"{h5_path}: '{ISBI2012_RAW_KEY}' is {raw.shape} but '{ISBI2012_LABEL_KEY}' is {labels.shape}")
    if raw.dtype != np.uint8:
        raise VolumeError(f"{h5_path}: '{ISBI2012_RAW_KEY}' has type {raw.dtype}, expected uint8 EM slices")
    interior = interior_from_membrane_labels(labels, f"{h5_path}:{ISBI2012_LABEL_KEY}")
    image_path, label_path = root / IMAGE_FILE, root / LABEL_FILE
    _atomic_write_tiff(image_path, raw, "uint8")
    _atomic_write_tiff(label_path, interior, "uint8")
    logger.info("wrote %s and %s (%d slices of %dx%d)", image_path, label_path, *raw.shape)
    return image_path, label_path


def download_isbi2012(
    root: str | Path, url: str = ISBI2012_URL, sha256: str | None = ISBI2012_SHA256, keep_hdf5: bool = False
) -> tuple[Path, Path]:
    """Download the ISBI 2012 training stack to ``root``, verify its sha256 and write it as TIFF stacks.

    Raises MONAI's ``HashCheckError`` (nothing is written) when the checksum differs,
    and :class:`DownloadError` when the server cannot be reached.
    """
    from urllib.error import URLError

    from monai.apps.utils import download_url

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    h5_path = root / "isbi2012_train.h5"
    try:
        download_url(url=url, filepath=h5_path, hash_val=sha256, hash_type="sha256", progress=False)
    except (URLError, OSError) as err:
        raise DownloadError(f"cannot download {url}: {getattr(err, 'reason', err)}") from err
    try:
        return convert_isbi2012_hdf5(h5_path, root)
    finally:
        if not keep_hdf5:
            h5_path.unlink(missing_ok=True)
