"""Slice-by-slice reading, streaming writers and whole-stack segmentation on every supported format."""

from __future__ import annotations

import h5py
import nibabel as nib
import numpy as np
import pytest
import tifffile
import torch

from emseg.data import VolumeError, read_volume, write_nifti, write_slice_folder, write_tiff
from emseg.data.stream import open_slices
from emseg.inference import segment_stack
from emseg.precision import AutocastInferer
from emseg.writers import stack_writer


@pytest.fixture
def stack(isbi_volumes) -> np.ndarray:
    return isbi_volumes[0][:3, :128, :96]


@pytest.fixture
def inputs(tmp_path, stack) -> dict:
    """The same three slices as a TIFF stack, a PNG folder, HDF5 and NIfTI."""
    with h5py.File(tmp_path / "v.h5", "w") as f:
        f["raw"] = stack
        f["other"] = stack
    return {
        "tiff": write_tiff(tmp_path / "v.tif", stack, "uint8"),
        "folder": write_slice_folder(tmp_path / "slices", stack)[0].parent,
        "hdf5": tmp_path / "v.h5",
        "nifti": write_nifti(tmp_path / "v.nii.gz", stack, dtype="uint8"),
    }


@pytest.mark.parametrize("kind", ["tiff", "folder", "hdf5", "nifti"])
def test_slices_equal_the_whole_volume(inputs, stack, kind):
    key = "raw" if kind == "hdf5" else None
    with open_slices(inputs[kind], key) as source:
        assert len(source) == 3 and source.shape == (128, 96)
        np.testing.assert_array_equal(np.stack(list(source)), stack)
    np.testing.assert_array_equal(read_volume(inputs[kind], key), stack)


def test_bad_inputs_are_named(tmp_path, inputs):
    with pytest.raises(VolumeError, match="v.h5: give a dataset key"):
        open_slices(inputs["hdf5"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(VolumeError, match="empty: folder holds no image slices"):
        open_slices(tmp_path / "empty")
    (tmp_path / "bad.tif").write_bytes(b"not a tiff")
    with pytest.raises(VolumeError, match="bad.tif: not a readable TIFF"):
        open_slices(tmp_path / "bad.tif")


@pytest.mark.parametrize(("output_format", "name", "dtype"), [
    ("tiff", "p.tif", "float32"), ("tiff", "m.tif", "uint8"), ("png", "masks", "uint8"), ("nifti", "p.nii", "float32"),
])
def test_writers_round_trip_through_the_readers(tmp_path, stack, output_format, name, dtype):
    data = stack if dtype == "uint8" else stack / np.float32(255)
    path = tmp_path / name
    with stack_writer(output_format, path, dtype, shape=stack.shape[1:], count=3, spacing=(0.05, 0.004, 0.004)) as w:
        for image in data:
            w.write(image)
    back = read_volume(path)
    assert back.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(back, data)
    if output_format == "nifti":
        assert nib.load(path).header.get_zooms() == pytest.approx((0.004, 0.004, 0.05))


def test_channel_stack_and_interrupted_write(tmp_path):
    path = tmp_path / "channels.tif"
    with stack_writer("tiff", path) as w:
        for z in range(2):
            w.write(np.full((3, 8, 8), z, np.float32))
    assert tifffile.imread(path).shape == (2, 3, 8, 8)
    failed = tmp_path / "failed.tif"
    with pytest.raises(RuntimeError), stack_writer("tiff", failed) as w:
        w.write(np.zeros((8, 8), np.float32))
        raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == [path]  # nothing left of the interrupted stack


def test_uint8_writer_refuses_values_out_of_range(tmp_path):
    with pytest.raises(VolumeError, match="0..255"), stack_writer("tiff", tmp_path / "m.tif", "uint8") as w:
        w.write(np.full((4, 4), 300.0))


class Pointwise(torch.nn.Module):
    """Two channels from the intensity: a fixed, size-agnostic 'network'."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([-x, x], dim=1)


@pytest.mark.parametrize("kind", ["tiff", "folder", "hdf5", "nifti"])
def test_segment_stack_reads_every_format_alike(tmp_path, inputs, stack, kind):
    out = tmp_path / f"{kind}.tif"
    segment_stack(Pointwise(), AutocastInferer(amp=False), inputs[kind], out, input_key="raw" if kind == "hdf5" else None,
                  postprocessing=torch.nn.Softmax(dim=0))
    expected = 1 / (1 + np.exp(-2 * stack.astype(np.float32)))  # softmax of (-x, x), channel 1
    np.testing.assert_allclose(tifffile.imread(out), expected, atol=1e-6)


def test_segment_stack_writes_masks_as_png_and_nifti(tmp_path, inputs, stack):
    kwargs = dict(output="mask", postprocessing=torch.nn.Softmax(dim=0))
    segment_stack(Pointwise(), AutocastInferer(amp=False), inputs["tiff"], tmp_path / "masks", output_format="png", **kwargs)
    segment_stack(Pointwise(), AutocastInferer(amp=False), inputs["tiff"], tmp_path / "m.nii", output_format="nifti",
                  spacing=(0.05, 0.004, 0.004), **kwargs)
    expected = (stack > 0).astype(np.uint8)
    np.testing.assert_array_equal(read_volume(tmp_path / "masks"), expected)
    np.testing.assert_array_equal(read_volume(tmp_path / "m.nii"), expected)
    with pytest.raises(ValueError, match="PNG slices hold masks"):
        segment_stack(Pointwise(), AutocastInferer(amp=False), inputs["tiff"], tmp_path / "p", output_format="png")


def test_tiff_with_all_slices_in_one_page_reads_alike(tmp_path, stack):
    path = tmp_path / "samples.tif"
    tifffile.imwrite(path, stack)  # tifffile stores a (3, H, W) array as one page of 3 samples
    with open_slices(path) as source:
        assert len(source) == 3
        np.testing.assert_array_equal(np.stack(list(source)), stack)
