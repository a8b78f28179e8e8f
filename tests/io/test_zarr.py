"""Zarr and OME-Zarr volumes: read slice by slice, converted by `emseg data to-zarr` with pixel size and a pyramid,
written by inference (output_format zarr)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import tifffile
import torch
import zarr
from skimage.transform import resize

from emseg.engine.precision import AutocastInferer
from emseg.inference import segment_stack
from emseg.io import VolumeError, open_slices, read_volume, write_ome_zarr, zarr_spacing
from emseg.io.safety import OutputError

ISBI_SPACING = (0.05, 0.004, 0.004)


@pytest.fixture(scope="module")
def stack(isbi_volumes, tmp_path_factory):
    path = tmp_path_factory.mktemp("in") / "stack.tif"
    tifffile.imwrite(path, isbi_volumes[0][:5])
    return path


def emseg_cli(*args, cwd):
    result = subprocess.run([sys.executable, "-m", "emseg.cli", *map(str, args)], cwd=cwd, capture_output=True,
                            text=True, timeout=300)
    return result.returncode, (result.stdout + result.stderr).strip().splitlines()[-1]


def test_a_stack_becomes_an_ome_zarr_image_with_its_pixel_size(stack, isbi_volumes, tmp_path):
    out = tmp_path / "stack.zarr"
    with open_slices(stack) as source:
        write_ome_zarr(source, out, ISBI_SPACING, chunk=128, levels=3)
    np.testing.assert_array_equal(read_volume(out), isbi_volumes[0][:5])  # full resolution, read back by emseg
    assert zarr_spacing(out) == ISBI_SPACING
    image = zarr.open_group(str(out), mode="r")
    (multiscale,) = image.attrs["ome"]["multiscales"]
    assert [(a["name"], a["unit"]) for a in multiscale["axes"]] == [(n, "micrometer") for n in "zyx"]
    scales = [d["coordinateTransformations"][0]["scale"] for d in multiscale["datasets"]]
    assert scales == [[0.05, 0.004 * f, 0.004 * f] for f in (1, 2, 4)]
    assert [image[d["path"]].shape for d in multiscale["datasets"]] == [(5, 512, 512), (5, 256, 256), (5, 128, 128)]
    assert image["s0"].chunks == (1, 128, 128)
    half = resize(isbi_volumes[0][0], (256, 256), order=1, anti_aliasing=True, preserve_range=True)
    assert image["s1"].dtype == np.uint8 and np.abs(image["s1"][0] - half).mean() < 1.0  # the slice, halved
    assert not (tmp_path / "stack.zarr.part").exists()


def test_plain_arrays_and_groups_are_read(tmp_path):
    volume = np.arange(3 * 20 * 30, dtype=np.uint16).reshape(3, 20, 30)
    zarr.create_array(str(tmp_path / "plain.zarr"), data=volume, chunks=(1, 20, 30))
    np.testing.assert_array_equal(read_volume(tmp_path / "plain.zarr"), volume)
    assert zarr_spacing(tmp_path / "plain.zarr") is None
    group = zarr.open_group(str(tmp_path / "group.zarr"), mode="w")
    group.create_array("raw", data=volume)
    group.create_array("labels", data=volume > 100)
    with pytest.raises(VolumeError, match=r"group\.zarr: give the array key, the store holds \['labels', 'raw'\]"):
        open_slices(tmp_path / "group.zarr")
    np.testing.assert_array_equal(read_volume(tmp_path / "group.zarr", "raw"), volume)
    with pytest.raises(VolumeError, match="no array 'em'"):
        open_slices(tmp_path / "group.zarr", "em")


def test_cli_converts_and_refuses_what_would_lose_data(stack, tmp_path):
    code, last = emseg_cli("data", "to-zarr", stack, tmp_path / "a.zarr", "--spacing", *ISBI_SPACING, cwd=tmp_path)
    assert code == 0 and "OME-Zarr image of 5 slices of 512x512 (uint8)" in last
    before = sorted(p.relative_to(tmp_path) for p in (tmp_path / "a.zarr").rglob("*"))
    code, last = emseg_cli("data", "to-zarr", stack, tmp_path / "a.zarr", cwd=tmp_path)
    assert code == 1 and last == f"emseg: error: {tmp_path / 'a.zarr'}: exists; choose another output, or pass " \
                                 f"--overwrite to replace it"
    assert sorted(p.relative_to(tmp_path) for p in (tmp_path / "a.zarr").rglob("*")) == before
    (tmp_path / "notes.zarr").mkdir()
    (tmp_path / "notes.zarr" / "mine.txt").write_text("a user's folder")
    code, last = emseg_cli("data", "to-zarr", stack, tmp_path / "notes.zarr", "--overwrite", cwd=tmp_path)
    assert code == 1 and last.endswith("notes.zarr: exists and is not a zarr store; emseg replaces only stores it "
                                       "writes")
    assert (tmp_path / "notes.zarr" / "mine.txt").read_text() == "a user's folder"
    zarr.create_array(str(tmp_path / "raw.zarr"), data=np.zeros((2, 8, 8), np.uint8))  # a user's own zarr data
    code, last = emseg_cli("data", "to-zarr", stack, tmp_path / "raw.zarr", "--overwrite", cwd=tmp_path)
    assert code == 1 and last.endswith("raw.zarr: is a zarr store emseg did not write; emseg replaces only stores it "
                                       "writes")
    assert read_volume(tmp_path / "raw.zarr").shape == (2, 8, 8)
    code, last = emseg_cli("data", "to-zarr", tmp_path / "a.zarr", tmp_path / "a.zarr" / "inner.zarr", cwd=tmp_path)
    assert code == 1 and "lies inside the input folder" in last
    code, last = emseg_cli("data", "to-zarr", tmp_path / "missing.tif", tmp_path / "b.zarr", cwd=tmp_path)
    assert code == 1 and last == f"emseg: error: {tmp_path / 'missing.tif'}: no such file or folder"
    code, _ = emseg_cli("data", "to-zarr", stack, tmp_path / "a.zarr", "--overwrite", "--levels", "1", cwd=tmp_path)
    assert code == 0 and sorted(p.name for p in (tmp_path / "a.zarr").iterdir()) == ["s0", "zarr.json"]


class _Pointwise(torch.nn.Module):
    """Two channels from one: x and 1 - x (a stand-in network: what is tested is the output file)."""

    def forward(self, x):
        return torch.cat([x, 1 - x], 1)


@pytest.mark.parametrize("output", ["mask", "probabilities"])
def test_inference_writes_an_ome_zarr_image_with_the_voxel_size(stack, tmp_path, output):
    out = tmp_path / "out.zarr"
    segment_stack(_Pointwise(), AutocastInferer(amp=False), stack, out, output=output, output_format="zarr",
                  spacing=ISBI_SPACING, transform=lambda x: x / 255.0)
    image = zarr.open_group(str(out), mode="r")
    (multiscale,) = image.attrs["ome"]["multiscales"]
    expected = (5, 512, 512) if output == "mask" else (2, 5, 512, 512)
    assert image["s0"].shape == expected and [a["name"] for a in multiscale["axes"]] == list("czyx"[-len(expected):])
    assert multiscale["datasets"][0]["coordinateTransformations"][0]["scale"][-3:] == list(ISBI_SPACING)
    if output == "mask":
        np.testing.assert_array_equal(read_volume(out), (tifffile.imread(stack) / 255.0 < 0.5).astype(np.uint8))
    assert not (tmp_path / "out.zarr.part").exists()
    with pytest.raises(OutputError, match="out.zarr: exists; choose another output path"):
        segment_stack(_Pointwise(), AutocastInferer(amp=False), stack, out, output=output, output_format="zarr")
    segment_stack(_Pointwise(), AutocastInferer(amp=False), stack, out, output=output, output_format="zarr",
                  overwrite=True)  # a zarr store emseg wrote is replaced when asked
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.zarr"]
    zarr.create_array(str(tmp_path / "raw.zarr"), data=np.zeros((5, 512, 512), np.uint8))  # a user's own store
    with pytest.raises(OutputError, match="raw.zarr: is a zarr store emseg did not write"):
        segment_stack(_Pointwise(), AutocastInferer(amp=False), stack, tmp_path / "raw.zarr", output=output,
                      output_format="zarr", overwrite=True)
    assert not read_volume(tmp_path / "raw.zarr").any()
