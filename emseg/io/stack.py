"""What every stack writer shares: take one slice at a time, write to ``<name>.part``, publish the output only
when it is complete (renamed into place), replace an existing output only with ``overwrite`` and only if it is
what the writer writes, let one job at a time write an output (:class:`~emseg.io.safety.OutputLock`), and name the
file and the cause of a write error."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from emseg.io.safety import OutputError, OutputLock, describe_write_error
from emseg.io.source import VolumeError

DTYPES = (np.dtype("float32"), np.dtype("uint8"), np.dtype("uint32"))


def _partial(path: Path) -> Path:
    return path.with_name(path.name + ".part")


class StackWriter:
    """Base: ``with writer: writer.write(slice)`` for each slice; published on a clean exit.

    Every writer takes the same arguments: the output ``path``, the pixel ``dtype`` (float32 or
    uint8), the slice ``shape`` (H, W) and ``count`` where known, the voxel ``spacing`` (z, y, x),
    ``overwrite`` (replace an existing output of the same kind) and, for class maps, a ``palette`` ((256, 3)
    uint8 colours by value: an ImageJ LUT in TIFF, a palette in PNG; the values stay class indices).
    """

    def __init__(self, path: str | Path, dtype: str = "float32", shape: Sequence[int] | None = None,
                 count: int | None = None, spacing: Sequence[float] = (1.0, 1.0, 1.0), overwrite: bool = False,
                 palette: np.ndarray | None = None) -> None:
        self.path = Path(path)
        self.overwrite = overwrite
        self.shape, self.expected = (tuple(shape) if shape is not None else None), count
        self.spacing = [float(s) for s in spacing]
        self.dtype = np.dtype(dtype)
        self.palette = None if palette is None else np.asarray(palette, np.uint8)
        if self.dtype not in DTYPES:
            raise VolumeError(f"{self.path}: stacks are written as float32, uint8 or uint32 (labels), not {self.dtype}")
        self.count = 0

    def _require_geometry(self, kind: str) -> None:
        """For writers that lay the whole volume out at the start: (z, y, x) ``spacing``, slice ``shape``, ``count``."""
        if len(self.spacing) != 3:
            raise VolumeError(f"{self.path}: spacing must be (z, y, x), got {self.spacing}")
        if self.shape is None or self.expected is None:
            raise ValueError(f"{self.path}: a {kind} writer needs the slice shape and count")

    def _check(self, image: np.ndarray) -> np.ndarray:
        image = np.asarray(image)
        if self.dtype.kind == "u" and image.dtype != self.dtype:
            top = np.iinfo(self.dtype).max
            if image.size and (image.min() < 0 or image.max() > top):
                raise VolumeError(f"{self.path}: values outside 0..{top} cannot be written as {self.dtype}")
        return image.astype(self.dtype, copy=False)

    def write(self, image: np.ndarray) -> None:
        image = self._check(image)
        try:
            self._write(image)
        except OSError as err:
            raise describe_write_error(err, self.path) from err
        self.count += 1

    def check_replaceable(self) -> None:
        """Refuse an existing output unless ``overwrite`` is set and it is what this writer writes."""
        if not self.path.exists() and not self.path.is_symlink():
            return
        if not self.overwrite:
            raise OutputError(f"{self.path}: exists; choose another output path, or set overwrite (--overwrite True)"
                              f" to replace what emseg wrote there")
        problem = self._not_replaceable()
        if problem:
            raise OutputError(f"{self.path}: {problem}")

    def _not_replaceable(self) -> str | None:
        """Why the existing output is not something this writer may replace (None: it may)."""
        return None if self.path.is_file() else "exists and is not a file; emseg replaces only files it writes"

    def __enter__(self) -> StackWriter:
        self._lock = OutputLock(self.path).__enter__()  # a second job writing this output is refused meanwhile
        try:
            self.check_replaceable()
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._open(_partial(self.path))
        except OutputError:
            self._lock.__exit__(None, None, None)
            raise
        except OSError as err:
            self._lock.__exit__(None, None, None)
            raise describe_write_error(err, self.path) from err
        except BaseException:
            self._lock.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        partial = _partial(self.path)
        try:
            if exc_type is not None:  # the first error is the one to report: close quietly, publish nothing
                try:
                    self._close()
                except Exception:
                    pass
                return
            try:
                self._close()
                self._publish(partial)
            except OSError as err:
                raise describe_write_error(err, self.path) from err
        finally:
            self._discard(partial)
            self._lock.__exit__(None, None, None)

    def _discard(self, partial: Path) -> None:
        """Remove what this writer left at its ``.part`` path (nothing once published)."""
        _remove_partial(partial)

    def _publish(self, partial: Path) -> None:
        old = None
        if self.path.is_dir() and not self.path.is_symlink():  # a folder output, checked replaceable at the start
            old = self.path.with_name(self.path.name + ".old")
            os.replace(self.path, old)
        os.replace(partial, self.path)
        if old is not None:
            self._discard(old)

    def _open(self, partial: Path) -> None:
        raise NotImplementedError

    def _write(self, image: np.ndarray) -> None:
        raise NotImplementedError

    def _close(self) -> None:
        pass


SLICE_PREFIX = "slice_"


def _is_slice(file: Path) -> bool:
    """A PNG slice as :class:`PngFolderWriter` names them (``slice_0000.png``)."""
    return file.is_file() and re.fullmatch(rf"{SLICE_PREFIX}\d{{4,}}\.png", file.name) is not None


def _remove_partial(partial: Path) -> None:
    """Remove what a writer left at its own ``.part`` path: a file, or a folder's ``slice_NNNN.png`` slices and
    then the folder if nothing else is in it (anything else there is not emseg's and stays)."""
    if partial.is_dir() and not partial.is_symlink():
        for file in partial.iterdir():
            if _is_slice(file):
                file.unlink()
        if not any(partial.iterdir()):
            partial.rmdir()
    elif partial.exists() or partial.is_symlink():
        partial.unlink()
