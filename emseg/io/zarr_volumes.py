"""Zarr and OME-Zarr volumes: read one slice at a time, convert any readable volume to an OME-Zarr image.

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

from emseg import __version__
from emseg.io.safety import OutputError, check_not_an_input
from emseg.io.source import SliceSource, VolumeError

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


def write_image_metadata(group, spacing: Sequence[float], name: str, channels: bool = False) -> None:
    """OME-Zarr metadata for the single resolution ``s0`` of ``group``: axes (c,) z, y, x, the voxel ``spacing``
    (z, y, x) in micrometres."""
    from ome_zarr.writer import write_multiscales_metadata

    axes = ([{"name": "c", "type": "channel"}] if channels else []) + \
        [{"name": axis, "type": "space", "unit": "micrometer"} for axis in "zyx"]
    scale = ([1.0] if channels else []) + [float(s) for s in spacing]
    write_multiscales_metadata(group, [{"path": "s0", "coordinateTransformations": [{"type": "scale", "scale": scale}]}],
                               axes=axes, name=name)
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
    multiscales = _multiscales(dict(node.attrs))
    if key is None and multiscales:
        key = multiscales[0]["datasets"][0]["path"]
    arrays = sorted(name for name, _ in node.arrays())
    if key is None and len(arrays) == 1:
        key = arrays[0]
    if key is None or key not in node:
        raise VolumeError(f"{path}: give the array key, the store holds {arrays or 'no arrays'}" if key is None
                          else f"{path}: no array '{key}' (available: {', '.join(arrays) or 'none'})")
    return node[key], multiscales


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
    if len(shape) == 2:
        return SliceSource(Path(path), 1, shape, lambda i: array[lead])
    return SliceSource(Path(path), shape[0], shape[1:], lambda i: array[lead + (i,)])


def zarr_spacing(path: str | Path) -> tuple[float, ...] | None:
    """Pixel size (z, y, x) of an OME-Zarr image's full resolution, None for a plain zarr array."""
    _, multiscales = zarr_array(Path(path), None)
    if not multiscales:
        return None
    transforms = multiscales[0]["datasets"][0].get("coordinateTransformations", [])
    scale = next((t["scale"] for t in transforms if t.get("type") == "scale"), None)
    return tuple(float(s) for s in scale[-3:]) if scale else None


def write_ome_zarr(source: SliceSource, output: str | Path, spacing: Sequence[float] = (1.0, 1.0, 1.0),
                   chunk: int = 256, levels: int = 3, overwrite: bool = False) -> Path:
    """Write every slice of ``source`` to an OME-Zarr image at ``output`` (``.zarr``): chunks of one slice by
    ``chunk`` x ``chunk`` pixels, ``levels`` resolutions (each halving y and x), pixel size ``spacing`` (z, y, x)
    in micrometres. Slices are read one at a time; the image is written beside ``output`` and renamed into place
    when complete. An existing ``output`` is replaced only with ``overwrite`` and only if it is a zarr store."""
    import dask
    import dask.array as da
    import zarr
    from ome_zarr.writer import write_image

    output = Path(output)
    if output.suffix != ZARR_SUFFIX:
        raise OutputError(f"{output}: an OME-Zarr image is a folder named *.zarr; choose such a name")
    check_not_an_input(output, [source.path])
    if output.exists() or output.is_symlink():
        if not overwrite:
            raise OutputError(f"{output}: exists; choose another output, or pass --overwrite to replace it")
        problem = replace_problem(output)
        if problem:
            raise OutputError(f"{output}: {problem}")
    if len(spacing) != 3 or min(spacing) <= 0:
        raise ValueError(f"spacing must be three positive sizes (z, y, x) in micrometres, got {list(spacing)}")
    first = source[0]
    read = dask.delayed(lambda index: source[index], pure=True)
    volume = da.stack([da.from_delayed(read(i), shape=source.shape, dtype=first.dtype) for i in range(len(source))])
    volume = volume.rechunk((1, min(chunk, source.shape[0]), min(chunk, source.shape[1])))
    partial = output.with_name(output.name + ".part")
    if partial.exists():  # an earlier, interrupted conversion of this same output; anything else stays
        if not is_zarr_store(partial):
            raise OutputError(f"{partial}: exists and is not a zarr store emseg left; move it away")
        shutil.rmtree(partial)
    z, y, x = (float(s) for s in spacing)
    with dask.config.set(scheduler="synchronous"):  # one reader at a time: TIFF and HDF5 handles are not shared
        write_image(volume, zarr.open_group(str(partial), mode="w"), axes="zyx",
                    scale_factors=[2**level for level in range(1, levels)], scale={"z": z, "y": y, "x": x},
                    axes_units={axis: "micrometer" for axis in "zyx"})
        _mark(zarr.open_group(str(partial), mode="r+"))
    if output.exists():
        shutil.rmtree(output)
    partial.rename(output)
    return output
