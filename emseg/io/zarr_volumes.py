"""Zarr and OME-Zarr volumes: read one slice at a time, write OME-Zarr images (one writer), convert any readable
volume to one.

An OME-Zarr image (NGFF multiscales, written by ``ome-zarr``) is read at its full resolution, with its pixel
size (:func:`zarr_spacing`); a plain zarr array, or an array of a group chosen by key, is read as it is.
:func:`write_ome_zarr` streams a volume slice by slice into an OME-Zarr image with axes z, y, x in
micrometres and a pyramid halving y and x (EM sections are anisotropic: z is never downsampled), which napari
(napari-ome-zarr) and Fiji (n5-viewer / MoBIE) show at the right scale. The output appears only when complete.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from emseg import __version__
from emseg.io.format import Format
from emseg.io.safety import OutputError, check_not_an_input
from emseg.io.source import SliceSource, VolumeError
from emseg.io.stack import StackWriter, _remove_partial

ZARR_SUFFIX = ".zarr"


def is_zarr_store(folder: str | Path) -> bool:
    """Whether ``folder`` is a zarr store (v3 ``zarr.json`` or v2 ``.zattrs``), not any other folder."""
    folder = Path(folder)
    return folder.is_dir() and not folder.is_symlink() and (
        (folder / "zarr.json").is_file() or (folder / ".zattrs").is_file())


MARK = "emseg"  # group attribute of every store emseg writes: only those are replaced with overwrite


def replace_problem(folder: str | Path) -> str | None:
    """Why the existing ``folder`` may not be replaced by an emseg output (None: it may): only zarr stores that
    emseg wrote are, never a user's other data."""
    if not is_zarr_store(folder):
        return "exists and is not a zarr store; emseg replaces only stores it writes"
    import zarr

    try:
        ours = MARK in zarr.open_group(str(folder), mode="r").attrs
    except Exception:  # a zarr array, or a store zarr cannot open
        ours = False
    return None if ours else "is a zarr store emseg did not write; emseg replaces only stores it writes"


def _mark(group) -> None:

    group.attrs[MARK] = {"version": __version__}


def create_image(group, shape: Sequence[int], chunks: Sequence[int], dtype, fill_value=None):
    """The full-resolution array ``s0`` of a new OME-Zarr image in ``group``: (C,) Z, Y, X of ``shape``."""
    return group.create_array("s0", shape=tuple(shape), chunks=tuple(chunks), dtype=dtype, fill_value=fill_value)


def finish_image(group, spacing: Sequence[float], name: str, levels: int = 1) -> None:
    """Make ``group`` (with its ``s0`` written) a complete OME-Zarr image: ``levels`` resolutions, each halving y and
    x (EM sections are anisotropic: z is never downsampled), each resized from ``s0`` by ome-zarr's own
    ``dask_utils.resize`` with the arguments of its default method (linear, anti-aliased), one stored chunk at a
    time; the multiscales metadata with axes (c,) z, y, x and the voxel ``spacing`` (z, y, x) in micrometres;
    emseg's mark (so ``overwrite`` may replace it)."""
    import dask
    import dask.array as da
    from ome_zarr.dask_utils import resize
    from ome_zarr.writer import write_multiscales_metadata

    full = group["s0"]
    channels = full.ndim == 4
    source = da.from_zarr(full)
    for level in range(1, levels):
        factor = 2**level
        shape = (*full.shape[:-2], full.shape[-2] // factor, full.shape[-1] // factor)
        chunks = (*full.chunks[:-2], min(full.chunks[-2], shape[-2]) or 1, min(full.chunks[-1], shape[-1]) or 1)
        lower = group.create_array(f"s{level}", shape=shape, chunks=chunks, dtype=full.dtype)
        resized = resize(source, shape, order=1, mode="reflect", anti_aliasing=True, preserve_range=True)
        resized = resized.round() if full.dtype.kind in "iu" else resized
        with dask.config.set(scheduler="synchronous"):  # one writer: chunks of ``lower`` are never shared
            da.store(resized.astype(full.dtype).rechunk(chunks), lower, lock=False)
    axes = ([{"name": "c", "type": "channel"}] if channels else []) + \
        [{"name": axis, "type": "space", "unit": "micrometer"} for axis in "zyx"]
    scales = [([1.0] if channels else []) + [float(spacing[0]), float(spacing[1]) * 2**level,
                                             float(spacing[2]) * 2**level] for level in range(levels)]
    datasets = [{"path": f"s{level}", "coordinateTransformations": [{"type": "scale", "scale": scale}]}
                for level, scale in enumerate(scales)]
    write_multiscales_metadata(group, datasets, axes=axes, name=name)
    _mark(group)


def _multiscales(attrs: dict) -> list | None:
    return attrs.get("multiscales") or attrs.get("ome", {}).get("multiscales")  # NGFF 0.4, 0.5


def zarr_array(path: Path, key: str | None):
    """The zarr array at ``path`` (an array, the full resolution of an OME-Zarr image, or ``key`` of a group) and
    the image's multiscales metadata (None for a plain array)."""
    import zarr

    try:
        node = zarr.open(str(path), mode="r")
    except Exception as err:  # zarr raises several types for a folder that is not a store
        raise VolumeError(f"{path}: not a readable zarr store ({err})") from err
    if isinstance(node, zarr.Array):
        return node, None
    try:
        multiscales = _multiscales(dict(node.attrs))
        if key is None and multiscales:
            key = multiscales[0]["datasets"][0]["path"]
        arrays = sorted(name for name, _ in node.arrays())
        found = key is not None and key in node
    except Exception as err:  # damaged metadata: wrong types, missing entries
        raise VolumeError(f"{path}: damaged zarr metadata ({type(err).__name__}: {err}); copy it again from its "
                          f"source") from err
    if key is None and len(arrays) == 1:
        key, found = arrays[0], True
    if not found:
        raise VolumeError(f"{path}: give the array key, the store holds {arrays or 'no arrays'}" if key is None
                          else f"{path}: no array '{key}' (available: {', '.join(arrays) or 'none'})")
    try:
        return node[key], multiscales
    except Exception as err:
        raise VolumeError(f"{path}: array '{key}' cannot be opened ({type(err).__name__}: {err})") from err


def open_zarr(path: Path, key: str | None = None) -> SliceSource:
    """A :class:`SliceSource` over a zarr array or OME-Zarr image: (Z, Y, X), or (Y, X) as one slice; leading axes
    of length 1 (t, c) are dropped."""
    array, _ = zarr_array(Path(path), key)
    shape = tuple(array.shape)
    while len(shape) > 3 and shape[0] == 1:
        shape = shape[1:]
    if len(shape) not in (2, 3):
        raise VolumeError(f"{path}: array of shape {tuple(array.shape)}; expected (Z, Y, X) or (Y, X)")
    lead = (0,) * (array.ndim - len(shape))

    def read(index: int) -> np.ndarray:
        try:
            return array[lead] if len(shape) == 2 else array[lead + (index,)]
        except Exception as err:  # a damaged or truncated chunk fails here
            raise VolumeError(f"{path}: slice {index} cannot be read ({type(err).__name__}: {err})") from err

    itemsize = np.dtype(array.dtype).itemsize if isinstance(array.dtype, np.dtype) else 1
    if len(shape) == 2:
        return SliceSource(Path(path), 1, shape, read, itemsize=itemsize)
    return SliceSource(Path(path), shape[0], shape[1:], read, itemsize=itemsize)


def zarr_spacing(path: str | Path) -> tuple[float, ...] | None:
    """Pixel size (z, y, x) of an OME-Zarr image's full resolution, None for a plain zarr array."""
    _, multiscales = zarr_array(Path(path), None)
    if not multiscales:
        return None
    try:
        transforms = multiscales[0]["datasets"][0].get("coordinateTransformations", [])
        scale = next((t["scale"] for t in transforms if t.get("type") == "scale"), None)
        return tuple(float(s) for s in scale[-3:]) if scale else None
    except Exception as err:  # damaged multiscales metadata: wrong types, missing entries
        raise VolumeError(f"{path}: damaged OME-Zarr pixel size ({type(err).__name__}: {err}); copy it again from "
                          f"its source") from err


def write_ome_zarr(source: SliceSource, output: str | Path, spacing: Sequence[float] = (1.0, 1.0, 1.0),
                   chunk: int = 256, levels: int = 3, overwrite: bool = False) -> Path:
    """Write every slice of ``source`` to an OME-Zarr image at ``output`` (``.zarr``) through
    :class:`OmeZarrWriter`: chunks of one slice by ``chunk`` x ``chunk`` pixels, ``levels`` resolutions (each halving
    y and x), pixel size ``spacing`` (z, y, x) in micrometres. Slices are read one at a time; the image appears only
    when complete. An existing ``output`` is replaced only with ``overwrite`` and only if it is a zarr store emseg
    wrote."""
    output = Path(output)
    if output.suffix != ZARR_SUFFIX:
        raise OutputError(f"{output}: an OME-Zarr image is a folder named *.zarr; choose such a name")
    check_not_an_input(output, [source.path])
    if (output.exists() or output.is_symlink()) and not overwrite:
        raise OutputError(f"{output}: exists; choose another output, or pass --overwrite to replace it")
    if len(spacing) != 3 or min(spacing) <= 0:
        raise ValueError(f"spacing must be three positive sizes (z, y, x) in micrometres, got {list(spacing)}")
    first = source[0]
    with OmeZarrWriter(output, first.dtype, source.shape, len(source), spacing, overwrite, levels=levels,
                       chunk=chunk) as writer:
        for image in source:
            writer.write(image)
    return output


class OmeZarrWriter(StackWriter):
    """An OME-Zarr image (a ``.zarr`` folder) with the voxel ``spacing`` in micrometres, one chunk per slice by
    256 x 256 pixels, written as the slices come: (Z, Y, X) for 2-D slices, (C, Z, Y, X) for (C, H, W) ones (the
    axis order the OME-Zarr specification prescribes), then ``levels`` resolutions (:func:`finish_image`). An
    existing output is replaced only if it is a zarr store emseg wrote. The one writer of OME-Zarr images: the
    conversion (:func:`write_ome_zarr`) writes through it, block-wise inference lays its store out with the same
    :func:`create_image` and :func:`finish_image`."""

    def __init__(self, path: str | Path, dtype: str = "float32", shape: Sequence[int] | None = None,
                 count: int | None = None, spacing: Sequence[float] = (1.0, 1.0, 1.0), overwrite: bool = False,
                 palette: np.ndarray | None = None, levels: int = 1, chunk: int = 256) -> None:
        super().__init__(path, dtype, shape, count, spacing, overwrite, palette)
        self.levels, self.chunk = int(levels), int(chunk)
        if self.path.suffix != ".zarr":
            raise VolumeError(f"{self.path}: an OME-Zarr image is a folder named *.zarr; choose such a name")
        self._require_geometry("OME-Zarr")

    def _not_replaceable(self) -> str | None:
        return replace_problem(self.path)

    def _open(self, partial: Path) -> None:
        import zarr

        if partial.exists() and not is_zarr_store(partial):
            raise OutputError(f"{partial}: exists and is not a zarr store emseg left; move it away")
        self._discard(partial)  # our own leftover of an interrupted run
        self._group, self._array = zarr.open_group(str(partial), mode="w"), None

    def _write(self, image: np.ndarray) -> None:
        if self._array is None:
            channels = image.shape[:-2]
            if image.shape[-2:] != self.shape or len(channels) > 1:
                raise VolumeError(f"{self.path}: slice of shape {image.shape}, expected {self.shape} or (C, *shape)")
            shape = (*channels, self.expected, *self.shape)
            chunks = (*channels, 1, min(self.chunk, self.shape[0]), min(self.chunk, self.shape[1]))
            self._array = create_image(self._group, shape, chunks, self.dtype)
        if image.ndim == 3:
            self._array[:, self.count] = image
        else:
            self._array[self.count] = image

    def _close(self) -> None:
        if self.count != self.expected:
            raise VolumeError(f"{self.path}: {self.count} slices written, {self.expected} declared")
        finish_image(self._group, self.spacing, self.path.stem, self.levels)

    def _discard(self, partial: Path) -> None:
        if is_zarr_store(partial):
            shutil.rmtree(partial)
        else:
            _remove_partial(partial)


FORMAT = Format(name="zarr", label="zarr", suffixes=(ZARR_SUFFIX,), open=open_zarr, writer=OmeZarrWriter,
                output_suffix=ZARR_SUFFIX, spacing=zarr_spacing)  # a folder: a zarr array or an OME-Zarr image
