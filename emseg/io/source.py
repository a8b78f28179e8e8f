"""What every reader returns: a stack of 2-D slices, read one at a time, checked as it is read."""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np


class VolumeError(ValueError):
    """A volume file is missing, unreadable or has an unexpected shape or type; the message names it."""


def natural_key(name: str) -> list:
    """Sort key that orders embedded numbers numerically ("2" before "10")."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


def physical_memory() -> int | None:
    """Bytes of memory this machine has (None where the system does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


def check_fits(path: Path, count: int, shape: tuple[int, ...], itemsize: int) -> None:
    """Refuse, before anything is allocated, ``count`` slices of ``shape`` that need more than this machine's
    memory: a damaged header's size, or a volume to read block-wise (zarr) instead of whole."""
    need, memory = count * int(np.prod(shape, dtype=object)) * itemsize, physical_memory()
    if memory and need > memory:
        what = "one slice" if count == 1 else f"{count} slices"
        raise VolumeError(f"{path}: {what} of {' x '.join(map(str, shape))} pixels ({itemsize} bytes each) need "
                          f"{need / 2**30:,.0f} GiB, more than this machine's {memory / 2**30:.0f} GiB of memory: the "
                          f"file's header is damaged, or the volume is too large to read whole (convert it with "
                          f"emseg data to-zarr and segment it block-wise)")


def suffix(path: Path) -> str:
    """Lower-case suffix of ``path``, ``.nii.gz`` counted as one."""
    name = path.name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else path.suffix.lower()


class SliceSource:
    """``len(source)`` slices of ``source.shape`` (H, W), read one by one by ``read(index)``.

    Every slice is checked as it is read: 2-D, the shape of the first, an integer, float or
    boolean pixel type, the same type as the first slice, no NaN or infinite values. ``describe(index)`` names the file a
    slice came from in error messages (default: ``path`` and the slice number). A slice larger than memory (at
    ``itemsize`` bytes a pixel, as the file states) is refused before any is read.
    """

    def __init__(self, path: Path, count: int, shape: tuple[int, int], read: Callable[[int], np.ndarray],
                 close: Callable[[], None] = lambda: None, describe: Callable[[int], str] | None = None,
                 itemsize: int = 1) -> None:
        self.path, self._count, self.shape, self._read, self._close = path, count, tuple(shape), read, close
        self._describe = describe or (lambda index: f"{path}: slice {index}")
        self.dtype: np.dtype | None = None
        self.itemsize = int(itemsize)
        if count == 0 or 0 in self.shape:
            close()
            raise VolumeError(f"{path}: volume is empty ({count} slices of {self.shape})")
        try:
            check_fits(path, 1, self.shape, self.itemsize)
        except VolumeError:
            close()
            raise

    def __len__(self) -> int:
        return self._count

    def __getitem__(self, index: int) -> np.ndarray:
        if not 0 <= index < self._count:
            raise IndexError(f"{self.path}: slice {index} of {self._count}")
        image = np.asarray(self._read(index))
        where = self._describe(index)
        if image.shape != self.shape:
            raise VolumeError(f"{where} has shape {image.shape}, the first slice {self.shape}")
        if image.dtype.kind not in "uif" and image.dtype != bool:
            raise VolumeError(f"{where} has unsupported pixel type {image.dtype}")
        if image.dtype.kind == "f" and not np.isfinite(image).all():
            bad = int(image.size - np.isfinite(image).sum())
            raise VolumeError(f"{where} holds {bad} NaN or infinite pixel values; EM images must be finite: "
                              f"replace them (e.g. by the slice mean) before segmenting")
        if self.dtype is None:
            self.dtype = image.dtype
        elif image.dtype != self.dtype:
            raise VolumeError(f"{where} has pixel type {image.dtype}, the first slice {self.dtype}")
        return image

    def __iter__(self) -> Iterator[np.ndarray]:
        return (self[i] for i in range(self._count))

    def close(self) -> None:
        self._close()

    def __enter__(self) -> SliceSource:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
