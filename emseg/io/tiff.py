"""TIFF: multipage stacks and single slices read page by page (a damaged page chain is refused), the pixel size
ImageJ or emseg states, and ImageJ hyperstacks written as the slices come (Fiji opens them with their pixel size)."""

from __future__ import annotations

import errno
import logging
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from emseg.io.format import Format
from emseg.io.source import SliceSource, VolumeError
from emseg.io.stack import StackWriter, _remove_partial


def grey_from_channels(image: np.ndarray, path: Path) -> np.ndarray:
    """Reduce a grey+alpha or grey-valued RGB(A) image (..., H, W, C) to (..., H, W)."""
    channels = image.shape[-1]
    if channels == 2:  # grey + alpha
        return image[..., 0]
    colour = image[..., :3]
    if channels in (3, 4) and np.array_equal(colour[..., 0], colour[..., 1]) and np.array_equal(
        colour[..., 0], colour[..., 2]
    ):
        return colour[..., 0]
    raise VolumeError(f"{path}: colour image with {channels} channels; EM slices must be greyscale")


def open_tiff(path: Path, key: str | None = None) -> SliceSource:
    import tifffile

    problems = _TiffProblems()
    try:
        with problems:  # tifffile reports a broken page chain by logging, not raising
            tif = tifffile.TiffFile(path)
            page_count = len(tif.pages)
            series = tif.series[0]
            shape, axes = series.shape, series.axes
    except Exception as err:  # tifffile raises TiffFileError, ValueError, struct.error ... on bad files
        raise VolumeError(f"{path}: not a readable TIFF file ({err})") from err
    if problems.messages:
        tif.close()
        raise VolumeError(f"{path}: damaged TIFF, {page_count} pages readable ({problems.messages[0]}): the file is "
                          f"truncated or corrupt; copy it again from its source")
    samples = axes.endswith("S")  # grey+alpha or RGB(A) samples per pixel
    plane_dims = 3 if samples else 2
    if len(shape) == plane_dims:
        count = 1
    elif len(shape) == plane_dims + 1:
        count = shape[0]
    else:
        tif.close()
        raise VolumeError(f"{path}: expected a (Z, H, W) grey stack, got shape {shape} ({axes})")
    plane = tuple(shape[-plane_dims:][:2])
    declared = _declared_slices(tif, plane)
    if declared is not None and declared > count:
        tif.close()
        raise VolumeError(f"{path}: declares {declared} slices but only {count} can be read: the file is truncated or "
                          f"damaged; copy it again from its source")

    try:  # tifffile reads the pages' tags here, and raises TypeError, ValueError ... on damaged ones
        pages = series.pages
        # tifffile writes a slice with an axis of length 1 as a page of another shape ((1, 2, 1): one 1 x 2 page)
        one_page_per_slice = len(pages) == count and all(
            p is not None and tuple(p.shape) == tuple(shape[-plane_dims:]) for p in pages)
    except Exception as err:
        tif.close()
        raise VolumeError(f"{path}: damaged TIFF page ({err}): the file is truncated or corrupt; copy it again from "
                          f"its source") from err
    whole: list[np.ndarray] = []  # files that keep all slices in one page are read once

    def read(index: int) -> np.ndarray:
        try:
            if one_page_per_slice:
                _check_stored(pages[index], path)
                image = pages[index].asarray()
            else:
                if not whole:
                    for page in pages:
                        _check_stored(page, path)
                    whole.append(series.asarray().reshape(count, *shape[-plane_dims:]))
                image = whole[0][index]
        except VolumeError:
            raise
        except Exception as err:
            raise VolumeError(f"{path}: slice {index} cannot be read ({err})") from err
        return grey_from_channels(image, path) if samples else image

    itemsize = series.dtype.itemsize * (shape[-1] if samples else 1)
    return SliceSource(path, count, plane, read, tif.close, itemsize=itemsize)


# The most a page's stored bytes can decode to, by TIFF compression: none, PackBits (2 bytes -> 128), LZW (12-bit
# codes of at most 4096 bytes), deflate (1032:1); other codecs are not bounded here.
_MOST_DECODED = {1: 1, 32773: 64, 5: 4096 * 8 // 12, 8: 1032, 32946: 1032}


def _check_stored(page, path: Path) -> None:
    """Refuse, before its pixels are allocated, a page whose stated size its stored bytes cannot hold (a damaged
    ImageWidth/ImageLength or a truncated strip table)."""
    if page is None:
        return
    ratio = _MOST_DECODED.get(int(page.compression))
    stored = sum(int(n) for n in page.databytecounts)
    need = int(np.prod(page.shape, dtype=object)) * page.dtype.itemsize
    if ratio is not None and need > stored * ratio + 1024:
        raise VolumeError(f"{path}: page {page.index} states {' x '.join(map(str, page.shape))} pixels ({need:,} "
                          f"bytes) but stores {stored:,} bytes: the header is damaged or the file truncated; copy it "
                          f"again from its source")


class _TiffProblems(logging.Handler):
    """Collects what tifffile logs about a damaged file (invalid page offsets, corrupt metadata) while opening it."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if any(word in message for word in ("invalid", "corrupt", "truncated", "failed")):
            self.messages.append(message.split("> ", 1)[-1])

    def __enter__(self) -> _TiffProblems:
        logging.getLogger("tifffile").addHandler(self)
        return self

    def __exit__(self, *exc) -> None:
        logging.getLogger("tifffile").removeHandler(self)


def _declared_slices(tif, plane: tuple[int, ...]) -> int | None:
    """How many slices the file's own metadata (tifffile's shape, ImageJ's image count) says it holds."""
    try:
        if tif.is_shaped and tif.shaped_metadata:
            shape = tif.shaped_metadata[0].get("shape")
            if shape:
                return int(np.prod(shape)) // int(np.prod(plane)) // (shape[-1] if len(shape) > 2 and
                                                                       shape[-1] in (2, 3, 4) else 1)
        if tif.is_imagej and tif.imagej_metadata:
            return int(tif.imagej_metadata.get("images", 0)) or None
    except Exception:  # metadata we cannot read is not a reason to refuse the pixels
        return None
    return None


MICROMETRES = {"um": 1.0, "micron": 1.0, "microns": 1.0, "\u00b5m": 1.0, "\\u00B5m": 1.0, "nm": 1e-3, "mm": 1e3}


def tiff_spacing(path: str | Path) -> tuple[float, float, float] | None:
    """Voxel size (z, y, x) in micrometres that a TIFF states (ImageJ's ``unit`` and ``spacing`` with the
    resolution tags, or tifffile's shaped metadata as emseg writes it), None where it states none."""
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            metadata = tif.imagej_metadata or (tif.shaped_metadata[0] if tif.is_shaped else None) or {}
            resolution = tif.pages[0].resolution
    except Exception as err:
        raise VolumeError(f"{path}: not a readable TIFF file ({err})") from err
    scale = MICROMETRES.get(str(metadata.get("unit", "")).strip())
    if scale is None or not all(resolution):
        return None
    z = float(metadata.get("spacing", 1.0))
    return (z * scale, scale / resolution[1], scale / resolution[0])


def _reserve(path: Path) -> None:
    """Allocate the disk blocks of the (sparse) file at ``path`` now. A memory-mapped page written where the disk
    has no block left kills the process with SIGBUS, without a message and with the partial file left behind; a
    full disk is then an ENOSPC error here instead. File systems without ``fallocate`` are left as they are."""
    if not hasattr(os, "posix_fallocate"):
        return
    with open(path, "r+b") as f:
        try:
            os.posix_fallocate(f.fileno(), 0, os.fstat(f.fileno()).st_size)
        except OSError as err:
            if err.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
                raise


class TiffStackWriter(StackWriter):
    """An ImageJ hyperstack that Fiji opens with its pixel size: (Z, Y, X), or (Z, C, Y, X) for (C, H, W) slices,
    the y/x pixel size and z spacing in micrometres, a LUT for class maps (``palette``). Written as the slices come
    into a memory map of the final file, so ``shape`` and ``count`` must be known.

    ImageJ has no 32-bit integer type: uint32 labels are written as a uint16 hyperstack when the largest label
    fits (labels stay exact integers, for Fiji and napari alike), else as a plain uint32 TIFF with the same
    metadata, which Fiji opens as 32-bit without the pixel size."""

    def __init__(self, path: str | Path, dtype: str = "float32", shape: Sequence[int] | None = None,
                 count: int | None = None, spacing: Sequence[float] = (1.0, 1.0, 1.0), overwrite: bool = False,
                 palette: np.ndarray | None = None) -> None:
        super().__init__(path, dtype, shape, count, spacing, overwrite, palette)
        if self.path.suffix.lower() not in (".tif", ".tiff"):
            raise VolumeError(f"{self.path}: a TIFF stack needs a .tif name")
        self._require_geometry("TIFF")

    def _open(self, partial: Path) -> None:
        _remove_partial(partial)  # our own leftover of an interrupted run
        self._partial, self._stack, self._largest = partial, None, 0

    def _create(self, partial: Path, channels: tuple[int, ...], dtype: np.dtype) -> np.memmap:
        import tifffile

        imagej = dtype != np.uint32
        metadata = {"axes": "ZCYX" if channels else "ZYX", "spacing": self.spacing[0], "unit": "um"}
        if self.palette is not None and imagej:
            metadata["LUTs"] = [np.ascontiguousarray(self.palette.T)]
        with warnings.catch_warnings():  # files above 4 GiB are ImageJ's own "truncated" form, which it reads
            warnings.filterwarnings("ignore", "truncating ImageJ file")
            stack = tifffile.memmap(partial, shape=(self.expected, *channels, *self.shape), dtype=dtype,
                                    imagej=imagej, metadata=metadata,
                                    resolution=(1 / self.spacing[2], 1 / self.spacing[1]))
        _reserve(partial)
        return stack

    def _write(self, image: np.ndarray) -> None:
        if self._stack is None:
            channels = image.shape[:-2]
            if image.shape[-2:] != self.shape or len(channels) > 1:
                raise VolumeError(f"{self.path}: slice of shape {image.shape}, expected {self.shape} or (C, *shape)")
            self._stack = self._create(self._partial, channels, self.dtype)
        if image.shape != self._stack.shape[1:]:
            raise VolumeError(f"{self.path}: slice of shape {image.shape}, the stack's is {self._stack.shape[1:]}")
        if self.count >= self.expected:
            raise VolumeError(f"{self.path}: more than the {self.expected} declared slices")
        self._stack[self.count] = image
        if image.size and self.dtype == np.uint32:
            self._largest = max(self._largest, int(image.max()))

    def _close(self) -> None:
        if self._stack is None:
            raise VolumeError(f"{self.path}: no slices written")
        self._stack.flush()
        stack, self._stack = self._stack, None
        if self.count != self.expected:
            raise VolumeError(f"{self.path}: {self.count} slices written, {self.expected} declared")
        if self.dtype == np.uint32 and self._largest <= np.iinfo(np.uint16).max:
            narrow = self._partial.with_name(self._partial.name + ".uint16")
            labels = self._create(narrow, stack.shape[1:-2], np.dtype(np.uint16))
            for index in range(len(stack)):
                labels[index] = stack[index]
            labels.flush()
            del labels, stack
            os.replace(narrow, self._partial)

    def _discard(self, partial: Path) -> None:
        _remove_partial(partial.with_name(partial.name + ".uint16"))
        _remove_partial(partial)


FORMAT = Format(name="tiff", label="TIFF", suffixes=(".tif", ".tiff"), open=open_tiff,
                writer=TiffStackWriter, output_suffix=".tif", spacing=tiff_spacing)
