"""SliceInferer: the whole slice as one window when it fits (padded to the network's divisor), else MONAI's
sliding windows."""

from __future__ import annotations

import torch
from monai.inferers import SlidingWindowInferer
from monai.networks.nets import BasicUNet

from emseg.engine.windows import SliceInferer


def _net():
    torch.manual_seed(0)
    return BasicUNet(2, 1, 2, features=(4, 4, 8, 8, 16, 4), norm="batch").eval()


def test_a_slice_that_fits_is_one_window():
    net, calls = _net(), []
    net.register_forward_pre_hook(lambda m, args: calls.append(tuple(args[0].shape)))
    x = torch.rand(1, 1, 64, 96)
    with torch.no_grad():
        out = SliceInferer(roi_size=(32, 32), overlap=0.5)(x, net)
        torch.testing.assert_close(out, net(x))
    assert calls[0] == (1, 1, 64, 96)


def test_a_slice_off_the_divisor_is_padded_by_reflection_and_cropped_back():
    net, calls = _net(), []
    net.register_forward_pre_hook(lambda m, args: calls.append(args[0].clone()))
    x = torch.rand(1, 1, 50, 61)
    with torch.no_grad():
        out = SliceInferer(roi_size=(32, 32), size_divisor=16)(x, net)
    padded = calls[0]
    assert padded.shape == (1, 1, 64, 64) and out.shape == (1, 2, 50, 61)
    torch.testing.assert_close(padded[..., 7:57, 1:62], x)  # 14 rows, 3 columns of reflection around the slice
    torch.testing.assert_close(padded[..., 6, 1:62], x[..., 1, :])
    with torch.no_grad():
        torch.testing.assert_close(out, net(padded)[..., 7:57, 1:62])


def test_a_slice_above_the_limit_slides_windows():
    net = _net()
    x = torch.rand(1, 1, 80, 72)
    sliding = SlidingWindowInferer(roi_size=(32, 32), overlap=0.25, mode="gaussian")
    with torch.no_grad():
        out = SliceInferer(roi_size=(32, 32), whole_slice_pixels=80 * 72 - 1, overlap=0.25, mode="gaussian")(x, net)
        torch.testing.assert_close(out, sliding(x, net))
        assert not torch.allclose(out, net(x), atol=1e-4)


def test_an_overlap_out_of_range_is_refused_even_when_no_window_slides():
    import pytest

    with pytest.raises(ValueError, match="overlap must be >= 0 and < 1, got 1.0"):
        SliceInferer(roi_size=(32, 32), overlap=1.0)
