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


def test_slices_predicted_together_come_back_as_one_at_a_time(monkeypatch):
    """On a GPU several slices of one shape go through the network in one call: in order, each as alone, and a
    slice of another shape starts a new call."""
    from monai.networks.nets import BasicUNet

    import emseg.inference as inference
    from emseg.engine.tta import FlipRotateInferer
    from emseg.engine.windows import SliceInferer

    torch.manual_seed(0)
    network = BasicUNet(2, 1, 2, features=(4, 4, 8, 8, 16, 4)).eval()
    calls = []
    network.register_forward_pre_hook(lambda module, args: calls.append(args[0].shape[0]))
    inferer = FlipRotateInferer(AutocastInferer(SliceInferer([32, 32]), amp=False), "all")
    rng = np.random.default_rng(0)
    slices = [rng.random(shape, dtype=np.float32) for shape in [(64, 64)] * 5 + [(48, 40)] * 2 + [(64, 64)]]

    def predict():
        calls.clear()
        outputs = list(inference.predict_slices(iter(slices), network, inferer, postprocessing=torch.nn.Softmax(0)))
        return outputs, list(calls)

    alone, one_calls = predict()
    monkeypatch.setattr(inference, "slices_per_call", lambda device, shape: 3)
    together, calls_together = predict()
    assert one_calls == [1] * 8 * 8  # 8 slices, 8 flips and turns each
    assert calls_together == [3] * 8 + [2] * 8 + [2] * 8 + [1] * 8
    assert [o.shape for o in together] == [(2, *s.shape) for s in slices]
    for a, b in zip(alone, together):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_slices_per_call_fills_a_gpu_and_stays_one_on_the_cpu():
    from emseg.inference import slices_per_call

    assert slices_per_call("cpu", (512, 512)) == 1
    assert [slices_per_call("cuda", (s, s)) for s in (256, 512, 1024, 2048, 4096)] == [16, 16, 4, 1, 1]
