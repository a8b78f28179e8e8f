"""Valid volume files built from small random arrays, and the ways the fuzz tests damage them.

:func:`volumes` draws (Z, H, W) arrays of the pixel types a format holds; :func:`write` writes one as a real file of
that format with its own library (tifffile, Pillow, h5py, nibabel, zarr, emseg's OME-Zarr writer); :func:`damages`
draws a damage (truncation, flipped bits, a header field rewritten, a metadata value replaced) and :func:`apply`
applies it to a written file or store.
"""

from __future__ import annotations

import json
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from hypothesis import strategies as st

# format -> the pixel types it is written with (what a lab's files hold)
KINDS = {
    "tiff": ("uint8", "uint16", "int16", "float32"),
    "tiff_zlib": ("uint8", "uint16", "float32"),
    "png": ("uint8", "uint16"),
    "folder": ("uint8",),
    "hdf5": ("uint8", "uint16", "int32", "float32", "float64", "bool"),
    "nifti": ("uint8", "int16", "uint16", "float32"),
    "nifti_gz": ("uint8", "float32"),
    "zarr": ("uint8", "uint16", "float32", "bool"),
    "zarr_raw": ("uint8", "int16", "float32"),
    "ome_zarr": ("uint8", "float32"),
}
SPARSE = {"hdf5", "zarr", "zarr_raw", "ome_zarr"}
NAMES = {"tiff": "v.tif", "tiff_zlib": "v.tif", "png": "v.png", "folder": "slices", "hdf5": "v.h5",
         "nifti": "v.nii", "nifti_gz": "v.nii.gz", "zarr": "v.zarr", "zarr_raw": "v.zarr", "ome_zarr": "v.zarr"}
ONE_SLICE = {"png"}


def volumes(kind: str, max_side: int = 24, max_slices: int = 4):
    """Strategy: a (Z, H, W) array that format ``kind`` holds, finite, with random pixel values."""
    slices = st.just(1) if kind in ONE_SLICE else st.integers(1, max_slices)
    shapes = st.tuples(slices, st.integers(1, max_side), st.integers(1, max_side))
    return st.tuples(st.sampled_from(KINDS[kind]), shapes, st.integers(0, 2**32 - 1)).map(lambda a: _array(*a))


def _array(dtype: str, shape: tuple[int, int, int], seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if dtype == "bool":
        return rng.random(shape) > 0.5
    if np.dtype(dtype).kind == "f":
        return (rng.standard_normal(shape) * 100).astype(dtype)
    info = np.iinfo(dtype)
    return rng.integers(info.min, info.max, size=shape, endpoint=True, dtype=dtype)


def write(kind: str, volume: np.ndarray, folder: Path) -> Path:
    """``volume`` written as a file (or folder, store) of format ``kind`` in ``folder``; its path."""
    import h5py
    import nibabel as nib
    import tifffile
    from PIL import Image

    path = folder / NAMES[kind]
    if kind == "tiff":
        tifffile.imwrite(path, volume, photometric="minisblack")
    elif kind == "tiff_zlib":
        tifffile.imwrite(path, volume, photometric="minisblack", compression="zlib")
    elif kind == "png":
        Image.fromarray(volume[0]).save(path)
    elif kind == "folder":
        path.mkdir()
        for index, plane in enumerate(volume):
            Image.fromarray(plane).save(path / f"s{index}.png")
    elif kind == "hdf5":
        with h5py.File(path, "w") as f:
            f["raw"] = volume
    elif kind in ("nifti", "nifti_gz"):  # NIfTI (x, y, z) is the C order of emseg's (z, y, x)
        nib.save(nib.Nifti1Image(np.ascontiguousarray(volume.transpose(2, 1, 0)), np.eye(4)), str(path))
    elif kind in ("zarr", "zarr_raw"):
        import zarr

        extra = {"compressors": None} if kind == "zarr_raw" else {}
        array = zarr.create_array(str(path), shape=volume.shape, chunks=(1, 8, 8), dtype=volume.dtype, **extra)
        array[...] = volume
    elif kind == "ome_zarr":
        from emseg.io import write_volume

        write_volume(path, volume, "zarr", str(volume.dtype))
    return path


def files_of(path: Path) -> list[Path]:
    """The files a volume is stored in: the file itself, or every file of a folder or store, in a fixed order."""
    return sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]


@dataclass(frozen=True)
class Damage:
    """One damage: ``how`` (``truncate``, ``flip``, ``zero``, ``claim``, ``metadata``), which file of the volume
    (``which``, an index into :func:`files_of`, taken modulo their number) and the numbers it needs."""

    how: str
    which: int
    where: tuple[float, ...] = ()
    size: int = 0
    value: object = None

    def __str__(self) -> str:
        return f"{self.how} file #{self.which} at {self.where} size {self.size} value {self.value!r}"


SMALL = st.integers(0, 40)
HUGE = st.sampled_from([10**6, 2**31 - 1, 2**32 - 1])  # either side: more than any machine's memory
MIDDLE = st.sampled_from([2**15 - 1, 65535])  # a few GiB: only a file's own stored size can tell it is wrong
JSON_VALUES = st.sampled_from([None, -1, 0, 10**12, 2.5, "x", "uint8", "complex128", "|O", [], [0], [10**6, 10**6],
                               [10**12, 1, 1], {}, {"name": "x"}])


def damages(sparse: bool = False):
    """Strategy: any :class:`Damage`; ``sparse``: of a format where unwritten chunks are valid (zarr, HDF5), so a
    size of a few GiB claimed by a tiny store is a valid (empty) array, not damage: claims are small or huge."""
    sizes = [st.tuples(SMALL, SMALL), st.tuples(HUGE, HUGE)] + ([] if sparse else [st.tuples(MIDDLE, MIDDLE),
                                                                                    st.tuples(SMALL, MIDDLE)])
    fraction = st.floats(0, 1, allow_nan=False, exclude_max=True)
    which = st.integers(0, 63)
    return st.one_of(
        st.builds(Damage, st.just("truncate"), which, st.tuples(fraction)),
        st.builds(Damage, st.just("flip"), which, st.lists(fraction, min_size=1, max_size=8).map(tuple),
                  st.integers(0, 7)),
        st.builds(Damage, st.just("zero"), which, st.tuples(fraction), st.integers(1, 64)),
        st.builds(Damage, st.just("claim"), which, st.tuples(fraction), value=st.one_of(*sizes)),
        st.builds(Damage, st.just("metadata"), which, st.tuples(fraction), value=JSON_VALUES),
    )


def apply(damage: Damage, path: Path) -> Path | None:
    """Damage the volume at ``path`` in place; the file changed (None where the damage does not apply to it)."""
    files = files_of(path)
    if not files:
        return None
    if damage.how == "metadata":
        metadata = [f for f in files if f.name in ("zarr.json", ".zarray", ".zattrs", ".zgroup")]
        return _replace_json_value(metadata[damage.which % len(metadata)], damage) if metadata else None
    if damage.how == "claim":
        return claim_size(path, *damage.value)
    target = files[damage.which % len(files)]
    data = bytearray(target.read_bytes())
    if damage.how == "truncate":
        data = data[: int(len(data) * damage.where[0])]
    elif damage.how == "flip":
        if not data:
            return None
        for at in damage.where:
            data[int(len(data) * at)] ^= 1 << damage.size
    elif damage.how == "zero":
        start = int(len(data) * damage.where[0])
        data[start:start + damage.size] = bytes(len(data[start:start + damage.size]))
    target.write_bytes(bytes(data))
    return target


def _replace_json_value(file: Path, damage: Damage) -> Path | None:
    """Replace one value (the ``where`` fraction through all of them) of a zarr metadata file by ``damage.value``."""
    try:
        document = json.loads(file.read_text())
    except ValueError:
        return None
    slots = []

    def walk(node, parent, key) -> None:
        if parent is not None:
            slots.append((parent, key))
        items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
        for k, v in items:
            walk(v, node, k)

    walk(document, None, None)
    if not slots:
        return None
    parent, key = slots[int(len(slots) * damage.where[0])]
    parent[key] = damage.value
    file.write_text(json.dumps(document))
    return file


def claim_size(path: Path, height: int, width: int) -> Path | None:
    """Rewrite the slice size a file states in its header to ``height`` x ``width``, pixels left as they are: the
    TIFF ImageLength/ImageWidth tags of every page (as LONG), the PNG IHDR (with its CRC fixed, so only the size is
    wrong), the NIfTI dim fields (clamped to their int16), the zarr array metadata's shape (chunks kept)."""
    name = path.name.lower()
    if name.endswith((".tif", ".tiff")):
        import tifffile

        with tifffile.TiffFile(path) as tif:
            order = tif.byteorder
            entries = [(tag.offset, tag.code) for page in tif.pages for tag in page.tags.values()
                       if tag.code in (256, 257)]
            if tif.tiff.is_bigtiff:
                return None
        data = bytearray(path.read_bytes())
        for offset, code in entries:
            struct.pack_into(order + "HHII", data, offset, code, 4, 1, width if code == 256 else height)
        path.write_bytes(bytes(data))
        return path
    if name.endswith(".png"):
        data = bytearray(path.read_bytes())
        struct.pack_into(">II", data, 16, width, height)
        struct.pack_into(">I", data, 29, zlib.crc32(bytes(data[12:29])))
        path.write_bytes(bytes(data))
        return path
    if name.endswith(".nii"):
        data = bytearray(path.read_bytes())
        dims = list(struct.unpack_from("<8h", data, 40))
        dims[1], dims[2] = min(width, 2**15 - 1), min(height, 2**15 - 1)
        struct.pack_into("<8h", data, 40, *dims)
        path.write_bytes(bytes(data))
        return path
    if name.endswith(".zarr"):
        for meta in files_of(path):
            if meta.name in ("zarr.json", ".zarray"):
                document = json.loads(meta.read_text())
                if "shape" in document and len(document["shape"]) >= 2:
                    document["shape"][-2:] = [height, width]
                    meta.write_text(json.dumps(document))
                    return meta
    return None
