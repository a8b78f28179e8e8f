"""Test-time augmentation over flips and 90-degree rotations."""

from __future__ import annotations

import pytest
import torch
from monai.inferers import SimpleInferer, SlidingWindowInferer

from emseg.engine.tta import ALL_TRANSFORMS, FlipRotateInferer


def test_eight_distinct_symmetries():
    x = torch.arange(12.0).reshape(1, 1, 3, 4)
    from emseg.engine.tta import _forward, _inverse

    images = {tuple(_forward(x, k, f).flatten().tolist()) + tuple(_forward(x, k, f).shape) for k, f in ALL_TRANSFORMS}
    assert len(images) == 8
    for k, f in ALL_TRANSFORMS:
        assert torch.equal(_inverse(_forward(x, k, f), k, f), x)


def test_identity_only_equals_plain_inference():
    torch.manual_seed(0)
    net = torch.nn.Conv2d(1, 2, 3, padding=1)
    x = torch.rand(1, 1, 40, 56)
    with torch.no_grad():
        assert torch.equal(FlipRotateInferer(SimpleInferer(), [[0, False]])(x, net), net(x))


def test_equivariant_network_is_unchanged_by_tta():
    """A pointwise network commutes with flips and rotations, so averaging changes nothing."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 1), torch.nn.ReLU(), torch.nn.Conv2d(4, 2, 1))
    x = torch.rand(1, 1, 48, 80)  # non-square: odd rotations change the window layout
    window = SlidingWindowInferer(roi_size=(32, 32), overlap=0.25, mode="gaussian")
    with torch.no_grad():
        torch.testing.assert_close(FlipRotateInferer(window)(x, net), window(x, net), rtol=1e-5, atol=1e-5)


def test_symmetric_input_gives_symmetric_output():
    torch.manual_seed(0)
    net = torch.nn.Conv2d(1, 1, 5, padding=2)  # not equivariant on its own
    x = torch.rand(1, 1, 16, 16)
    x = x + x.flip(-1)
    x = x + x.flip(-2)
    x = x + x.transpose(-1, -2)  # invariant under all 8 symmetries
    with torch.no_grad():
        out = FlipRotateInferer(SimpleInferer())(x, net)
    for k, f in ALL_TRANSFORMS:
        from emseg.engine.tta import _forward

        torch.testing.assert_close(_forward(out, k, f), out, rtol=1e-5, atol=1e-6)


def test_empty_transform_list_is_refused():
    with pytest.raises(ValueError, match="at least one transform"):
        FlipRotateInferer(SimpleInferer(), [])


def test_all_by_name_is_the_eight_symmetries():
    assert FlipRotateInferer(SimpleInferer(), "all").transforms == [(k, f) for k, f in ALL_TRANSFORMS]
    with pytest.raises(ValueError, match="'all' or a list"):
        FlipRotateInferer(SimpleInferer(), "every")
