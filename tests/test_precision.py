"""The autocast inferer: bfloat16 inside the network on CPU, float32 out, MetaTensor stripped."""

from __future__ import annotations

import torch
from monai.data import MetaTensor
from monai.inferers import SlidingWindowInferer
from monai.networks.nets import BasicUNet

from emseg.engine.precision import AutocastInferer, prepare_network


def _net():
    torch.manual_seed(0)
    return BasicUNet(2, 1, 2, features=(4, 4, 8, 8, 16, 4), norm="batch").eval()


def test_network_runs_in_bfloat16_and_returns_float32():
    net = _net()
    seen = []
    net.final_conv.register_forward_hook(lambda m, i, o: seen.append((o.dtype, type(i[0]))))
    x = MetaTensor(torch.rand(1, 1, 64, 64))
    with torch.no_grad():
        out = AutocastInferer(amp=True)(x, net)
        reference = AutocastInferer(amp=False)(x, net)
    assert seen[0][0] == torch.bfloat16 and seen[1][0] == torch.float32
    assert seen[0][1] is torch.Tensor  # metadata tracking stripped before the network
    assert out.dtype == torch.float32
    assert torch.allclose(out, reference, atol=0.05 * reference.abs().max().item())


def test_sliding_window_channels_last_matches_plain():
    net = _net()
    x = torch.rand(1, 1, 96, 80)
    window = SlidingWindowInferer(roi_size=(32, 32), overlap=0.25, mode="gaussian")
    with torch.no_grad():
        plain = AutocastInferer(window, amp=False)(x, net)
        fast = AutocastInferer(window, amp=False, channels_last=True)(x, prepare_network(net, "cpu", True))
    assert plain.shape == (1, 2, 96, 80)
    torch.testing.assert_close(fast, plain, rtol=1e-4, atol=1e-4)


def test_gradients_flow_through_autocast():
    net = _net().train()
    out = AutocastInferer(amp=True)(torch.rand(2, 1, 32, 32), net)
    out.mean().backward()
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in net.parameters())
