"""Whole-stack segmentation (emseg.inference.segment_stack) from every input format to every output format."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
import torch

from emseg.engine.precision import AutocastInferer
from emseg.inference import segment_stack
from emseg.io import read_volume


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
