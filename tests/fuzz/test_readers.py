"""Fuzzed files through the readers in process (:func:`emseg.io.read_volume`, napari's File > Open): valid files of
every format read back exactly; damaged ones (truncated, bits flipped, bytes zeroed, sizes rewritten, metadata
values replaced), mistyped and misshapen ones either read as a correct volume or are refused with one
:class:`~emseg.io.VolumeError` naming the file; a header claiming slices larger than memory is refused before
anything of that size is allocated."""

from __future__ import annotations

import tempfile
import time
import tracemalloc
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import assume, example, given, note
from hypothesis import strategies as st

from emseg.io import VolumeError, read_volume

from .damage import KINDS, SPARSE, Damage, apply, claim_size, damages, volumes, write

SECONDS = 5.0  # any case, read or refusal, within this


def outcome(path: Path, key: str | None = None) -> np.ndarray | VolumeError:
    """The volume read from ``path``, or the VolumeError that refused it (any other exception fails the test); a
    refusal must name the file."""
    start = time.monotonic()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # libraries warn about the damage they see; the outcome is what counts
            result = read_volume(path, key)
    except VolumeError as err:
        assert str(path) in str(err), f"the error does not name {path}: {err}"
        assert "\n" not in str(err).strip(), f"not one line: {err!r}"
        result = err
    assert time.monotonic() - start < SECONDS, f"{path}: took {time.monotonic() - start:.1f} s"
    note(f"outcome: {result if isinstance(result, VolumeError) else (result.shape, result.dtype)}")
    return result


def check_volume(volume: np.ndarray) -> None:
    """What every volume a reader returns is: (Z, H, W), not empty, a pixel type emseg computes with, finite."""
    assert volume.ndim == 3 and volume.size > 0, volume.shape
    assert volume.dtype.kind in "uif" or volume.dtype == bool, volume.dtype
    if volume.dtype.kind == "f":
        assert np.isfinite(volume).all()


@pytest.mark.parametrize("kind", sorted(KINDS))
@given(data=st.data())
def test_valid_files_read_back_exactly(kind, data):
    volume = data.draw(volumes(kind))
    with tempfile.TemporaryDirectory() as folder:
        path = write(kind, volume, Path(folder))
        result = outcome(path)
        assert not isinstance(result, VolumeError), result
        assert result.dtype == volume.dtype and result.shape == volume.shape
        np.testing.assert_array_equal(result, volume)


@pytest.mark.parametrize("kind", sorted(KINDS))
@given(data=st.data())
def test_damaged_files_read_correctly_or_are_refused(kind, data):
    volume = data.draw(volumes(kind))
    damage = data.draw(damages(kind in SPARSE), label="damage")
    with tempfile.TemporaryDirectory() as folder:
        path = write(kind, volume, Path(folder))
        changed = apply(damage, path)
        assume(changed is not None)
        result = outcome(path)
        if isinstance(result, VolumeError):
            return
        check_volume(result)
        if damage.how == "truncate":  # bytes missing: only the volume as written may come back, never a part of it
            assert result.shape == volume.shape and result.dtype == volume.dtype
            np.testing.assert_array_equal(result, volume)


def claimed(kind: str, height: int, width: int, folder: Path) -> Path:
    volume = np.arange(3 * 16 * 16, dtype=np.uint8).reshape(3, 16, 16)
    if kind == "hdf5":  # a valid file claiming the size: chunked, no chunk written
        import h5py

        path = folder / "v.h5"
        with h5py.File(path, "w") as f:
            f.create_dataset("raw", shape=(3, height, width), dtype="uint16", chunks=(1, 16, 16))
        return path
    path = write(kind, volume[:1] if kind == "png" else volume, folder)
    assert claim_size(path, height, width) is not None
    return path


HUGE = st.integers(10**6, 2**31 - 1)


@pytest.mark.parametrize("kind", ["tiff", "tiff_zlib", "png", "hdf5", "nifti", "zarr", "ome_zarr"])
@given(height=HUGE, width=HUGE)
@example(height=10**6, width=10**6)
def test_absurd_sizes_are_refused_before_allocating(kind, height, width):
    with tempfile.TemporaryDirectory() as folder:
        path = claimed(kind, height, width, Path(folder))
        tracemalloc.start()
        try:
            result = outcome(path)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    assert isinstance(result, VolumeError), result.shape
    assert peak < 64 * 2**20, f"{peak / 2**20:.0f} MiB allocated to refuse {path}"


@pytest.mark.parametrize("kind", ["tiff", "png", "nifti", "zarr"])
@given(height=st.integers(0, 40), width=st.integers(0, 40))
def test_other_sizes_in_headers(kind, height, width):
    with tempfile.TemporaryDirectory() as folder:
        path = claimed(kind, height, width, Path(folder))
        result = outcome(path)
        if not isinstance(result, VolumeError):
            check_volume(result)


WEIRD_DTYPES = ["complex64", "float16", "bool", "int8", "uint64", "object", "str", "datetime64[s]"]
SHAPES = st.lists(st.integers(0, 5), min_size=1, max_size=5).map(tuple)


def weird_array(dtype: str, shape: tuple[int, ...]) -> np.ndarray:
    size = int(np.prod(shape))
    values = np.arange(size) % 7
    if dtype == "object":
        return np.array([f"v{v}" for v in values] + [None], dtype=object)[:size].reshape(shape)
    if dtype == "str":
        return values.astype(str).reshape(shape)
    return values.astype(dtype).reshape(shape)


def write_weird(kind: str, array: np.ndarray, folder: Path) -> Path | None:
    """``array`` written as ``kind`` where that library writes it at all (None where it does not)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if kind == "tiff":
                import tifffile

                path = folder / "w.tif"
                tifffile.imwrite(path, array, photometric="minisblack")
            elif kind == "hdf5":
                import h5py

                path = folder / "w.h5"
                with h5py.File(path, "w") as f:
                    f["raw"] = array.astype(h5py.string_dtype()) if array.dtype.kind in "OU" else array
            elif kind == "nifti":
                import nibabel as nib

                path = folder / "w.nii"
                nib.save(nib.Nifti1Image(array, np.eye(4)), str(path))
            else:
                import zarr

                path = folder / "w.zarr"
                array_ = zarr.create_array(str(path), shape=array.shape, dtype=array.dtype if array.dtype.kind not
                                           in "OU" else str, chunks=tuple(max(1, s) for s in array.shape))
                if array.size:
                    array_[...] = array
    except Exception as err:  # the library refuses to write it: nothing to read
        note(f"{kind} cannot write {array.dtype} {array.shape}: {err}")
        return None
    return path


@pytest.mark.parametrize("kind", ["tiff", "hdf5", "nifti", "zarr"])
@given(dtype=st.sampled_from(WEIRD_DTYPES), shape=SHAPES)
def test_wrong_types_and_shapes(kind, dtype, shape):
    array = weird_array(dtype, shape)
    with tempfile.TemporaryDirectory() as folder:
        path = write_weird(kind, array, Path(folder))
        assume(path is not None)
        result = outcome(path)
    unusable = array.size == 0 or array.dtype.kind not in "uifb" or len([s for s in shape if s != 1]) > 3
    if unusable:
        assert isinstance(result, VolumeError), f"read {array.dtype} {shape} as {result.dtype} {result.shape}"
    if not isinstance(result, VolumeError):
        check_volume(result)
        assert result.size == array.size
        np.testing.assert_array_equal(np.sort(result, axis=None), np.sort(array.astype(result.dtype), axis=None))


napari_readers = pytest.importorskip("emseg.napari.readers", reason="the napari extra is not installed")


@pytest.mark.parametrize("kind", sorted(KINDS))
@given(data=st.data())
def test_napari_reader_reads_or_names_the_file(kind, data):
    volume = data.draw(volumes(kind))
    damage = data.draw(st.one_of(st.none(), damages(kind in SPARSE)), label="damage")
    with tempfile.TemporaryDirectory() as folder:
        path = write(kind, volume, Path(folder))
        if damage is not None:
            assume(apply(damage, path) is not None)
        reader = napari_readers.get_reader(str(path))
        assert reader is not None, f"napari's reader declines {path}"
        start = time.monotonic()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                layers = reader(str(path))
        except VolumeError as err:
            assert str(path) in str(err), err
            assert damage is not None, f"a valid {kind} file refused: {err}"
            return
        finally:
            assert time.monotonic() - start < SECONDS
        assert layers and all(kind_ == "image" for _, _, kind_ in layers)
        if damage is None:
            data_ = layers[0][0]
            data_ = data_[0] if isinstance(data_, list) else data_
            np.testing.assert_array_equal(np.asarray(data_).reshape(volume.shape), volume)


def test_damage_applies(tmp_path):
    """The damage helpers change what they say they change (so a passing fuzz test has read damaged files)."""
    volume = np.arange(2 * 8 * 8, dtype=np.uint8).reshape(2, 8, 8)
    path = write("tiff", volume, tmp_path)
    before = path.read_bytes()
    apply(Damage("truncate", 0, (0.5,)), path)
    assert path.read_bytes() == before[: len(before) // 2]
    path = write("nifti", volume, tmp_path)
    claim_size(path, 10**6, 10**6)
    import nibabel as nib

    assert nib.load(str(path)).shape[:2] == (2**15 - 1, 2**15 - 1)
