"""Block-wise inference on Dask over zarr: no seams against whole-slice inference, and a rerun resumes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import zarr
from monai.networks.nets import BasicUNet
from monai.transforms import Activations

from emseg.blockwise import (
    _prepare_store,
    _run_block,
    block_grid,
    segment_blockwise,
    slice_statistics,
)
from emseg.engine.precision import AutocastInferer
from emseg.engine.windows import SliceInferer
from emseg.io import read_volume
from emseg.io.safety import OutputError

BLOCK, HALO = (128, 128), 96


@pytest.fixture(scope="module")
def volume(isbi_volumes, tmp_path_factory):
    """Two ISBI slices of 384x512 as a zarr volume chunked by the blocks, and the array itself."""
    data = isbi_volumes[0][:2, :384, :]
    path = tmp_path_factory.mktemp("zarr") / "em.zarr"
    zarr.create_array(str(path), data=data, chunks=(1, *BLOCK))
    return path, data


def _model():
    torch.manual_seed(0)
    network = BasicUNet(2, 1, 2, features=(4, 4, 8, 8, 16, 4), norm="batch").eval()
    return network, AutocastInferer(SliceInferer(roi_size=(64, 64)), amp=False), Activations(softmax=True)


def test_blocks_match_whole_slices_away_from_the_border(volume, tmp_path):
    path, data = volume
    network, inferer, softmax = _model()
    summary = segment_blockwise(network, inferer, path, tmp_path / "out.zarr", block=BLOCK, halo=HALO,
                                postprocessing=softmax, spacing=(0.05, 0.004, 0.004), workers=1)
    assert summary == {"blocks": 2 * 3 * 4, "computed": 24, "skipped": 0}
    blockwise = read_volume(tmp_path / "out.zarr")
    with torch.inference_mode():
        whole = np.stack([softmax(inferer(torch.from_numpy(((s - s.mean()) / s.std()).astype(np.float32))[None, None],
                                          network)[0])[1].numpy() for s in data.astype(np.float64)])
    inner = (slice(None), slice(HALO, -HALO), slice(HALO, -HALO))
    assert np.abs(blockwise[inner] - whole[inner]).max() < 1e-3
    assert np.abs(blockwise - whole).max() < 0.2  # at the volume's edge mirrored context differs a little
    assert not (tmp_path / "out.zarr.part").exists()
    with pytest.raises(OutputError, match="out.zarr: exists; choose another output"):
        segment_blockwise(network, inferer, path, tmp_path / "out.zarr", block=BLOCK)


def test_a_rerun_computes_only_the_missing_blocks(volume, tmp_path):
    path, data = volume
    network, inferer, softmax = _model()
    partial = tmp_path / "out.zarr.part"
    grid = block_grid(data.shape, BLOCK)
    _prepare_store(partial, data.shape, BLOCK, "uint8", (2, 3, 4))
    mean, std = slice_statistics(path)
    for index in grid[:10]:  # a job killed after 10 blocks
        _run_block(network, inferer, softmax, "cpu", None, str(path), None, str(partial), index, BLOCK, HALO, mean,
                   std, "mask", 1)
    summary = segment_blockwise(network, inferer, path, tmp_path / "out.zarr", output="mask", block=BLOCK, halo=HALO,
                                postprocessing=softmax, workers=1)
    assert summary == {"blocks": 24, "computed": 14, "skipped": 10}
    fresh = segment_blockwise(network, inferer, path, tmp_path / "fresh.zarr", output="mask", block=BLOCK, halo=HALO,
                              postprocessing=softmax, workers=1)
    assert fresh["computed"] == 24
    np.testing.assert_array_equal(read_volume(tmp_path / "out.zarr"), read_volume(tmp_path / "fresh.zarr"))


def test_statistics_are_those_of_whole_slices(volume):
    path, data = volume
    mean, std = slice_statistics(path)
    np.testing.assert_allclose(mean, data.mean(axis=(1, 2)), rtol=1e-12)
    np.testing.assert_allclose(std, data.std(axis=(1, 2)), rtol=1e-12)
