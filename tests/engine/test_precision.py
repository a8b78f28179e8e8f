"""The autocast inferer (bfloat16 inside the network on CPU, float32 out, MetaTensor stripped), the folded
reduced-precision copy networks run as in eval mode, and settings chosen by measurement."""

from __future__ import annotations

import copy
import json
import logging

import pytest
import torch
from monai.data import MetaTensor
from monai.inferers import SlidingWindowInferer
from monai.networks.nets import BasicUNet

from emseg.engine import precision
from emseg.engine.precision import (
    AutocastInferer,
    Settings,
    fold_batch_norm,
    measure_settings,
    prepare_network,
)


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


def _net_with_statistics(net: torch.nn.Module | None = None):
    """A U-Net (or ``net``) whose batch norms hold non-trivial running statistics and affine parameters."""
    net = net if net is not None else _net()
    generator = torch.Generator().manual_seed(1)
    for module in net.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.normal_(0, 0.3, generator=generator)
            module.running_var.uniform_(0.5, 2.0, generator=generator)
            module.weight.data.uniform_(0.5, 1.5, generator=generator)
            module.bias.data.normal_(0, 0.2, generator=generator)
    return net.eval()


def test_folding_batch_norm_keeps_the_output():
    net = _net_with_statistics()
    norms = sum(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())
    folded = copy.deepcopy(net)
    assert fold_batch_norm(folded) == norms == 18  # 9 double convolutions
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    x = torch.rand(2, 1, 64, 48)
    with torch.no_grad():
        torch.testing.assert_close(folded(x), net(x), rtol=1e-5, atol=1e-5)


def test_folding_keeps_the_output_after_transposed_convolutions():
    from emseg.networks import TernausNet11

    net = _net_with_statistics(TernausNet11(num_filters=4, batch_norm=True))
    transposed = sum(isinstance(m, torch.nn.ConvTranspose2d) for m in net.modules())
    norms = sum(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())
    folded = copy.deepcopy(net)
    assert fold_batch_norm(folded) == norms and transposed == 5
    x = torch.rand(1, 1, 64, 96)
    with torch.no_grad():
        torch.testing.assert_close(folded(x), net(x), rtol=1e-4, atol=1e-4)


def test_a_network_in_training_mode_is_not_folded():
    net = _net_with_statistics().train()
    assert fold_batch_norm(net) == 0


def test_eval_runs_a_reduced_precision_copy_that_follows_the_weights():
    net = _net_with_statistics()
    inferer = AutocastInferer(amp=True, channels_last=True)
    x = torch.rand(1, 1, 64, 64)
    with torch.no_grad():
        first = inferer(x, net)
        torch.testing.assert_close(first, net(x), rtol=0, atol=0.02 * net(x).abs().max().item())
        assert first.dtype == torch.float32
        assert inferer(x, net) is not first and torch.equal(inferer(x, net), first)  # the copy is kept
        net.final_conv.bias += 1.0  # weights changed in place, as an optimizer step does
        second = inferer(x, net)
    torch.testing.assert_close(second, first + 1.0, rtol=0, atol=0.02)


@pytest.fixture
def fresh_cache(tmp_path, monkeypatch):
    """An empty cache folder for the precision choice."""
    monkeypatch.setenv("EMSEG_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache" / "precision.json"


def test_settings_given_are_kept_and_auto_is_measured(caplog, fresh_cache):
    net = _net()
    assert measure_settings(net, "cpu", True, False, [32, 32]) == Settings(True, False)
    with caplog.at_level(logging.INFO, logger="emseg.engine.precision"):
        chosen = measure_settings(net, "cpu", "auto", "auto", [32, 32], batch_size=2, repeats=1)
    assert isinstance(chosen.amp, bool) and isinstance(chosen.channels_last, bool)
    assert "chose amp" in caplog.text and caplog.text.count("channels_last=") == 5  # 4 timings and the choice
    before = {k: v.clone() for k, v in net.state_dict().items()}
    measure_settings(net, "cpu", "auto", False, [32, 32], repeats=1)
    assert all(torch.equal(v, before[k]) for k, v in net.state_dict().items())  # measured on a copy


def _no_timing(*args, **kwargs):
    raise AssertionError("timed again although the choice was kept")


def test_auto_is_measured_once_per_machine_network_and_torch_version(fresh_cache, monkeypatch, caplog):
    net = _net()
    first = measure_settings(net, "cpu", "auto", "auto", [32, 32], batch_size=2, repeats=1)
    assert first.source == "measured" and fresh_cache.is_file()
    (entry,) = json.loads(fresh_cache.read_text()).values()
    assert (entry["amp"], entry["channels_last"]) == (first.amp, first.channels_last)
    assert entry["torch"] == torch.__version__ and entry["input"] == "2x1x32x32" and len(entry["seconds"]) == 4
    monkeypatch.setattr(precision, "_seconds_per_call", _no_timing)
    with caplog.at_level(logging.INFO, logger="emseg.engine.precision"):
        again = measure_settings(copy.deepcopy(net), "cpu", "auto", "auto", [32, 32], batch_size=2, repeats=1)
    assert again == first and again.source == "cached" and str(fresh_cache) in caplog.text
    # another input shape, mode, network or torch version is another key: measured again
    for call in (lambda: measure_settings(net, "cpu", "auto", "auto", [48, 48], batch_size=2),
                 lambda: measure_settings(net, "cpu", "auto", "auto", [32, 32], batch_size=2, training=False),
                 lambda: measure_settings(BasicUNet(2, 1, 3, features=(4, 4, 8, 8, 16, 4)), "cpu", "auto", "auto",
                                          [32, 32], batch_size=2)):
        with pytest.raises(AssertionError, match="timed again"):
            call()
    monkeypatch.setattr(torch, "__version__", "9.9.9+cpu")
    with pytest.raises(AssertionError, match="timed again"):
        measure_settings(net, "cpu", "auto", "auto", [32, 32], batch_size=2)


def test_a_run_uses_the_settings_it_recorded_and_a_broken_cache_is_measured_again(fresh_cache, monkeypatch,
                                                                                  tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "run.json").write_text(json.dumps({"settings": {"amp": False, "channels_last": True}}))
    monkeypatch.setattr(precision, "_seconds_per_call", _no_timing)
    chosen = measure_settings(_net(), "cpu", "auto", "auto", [32, 32], run_dir=run_dir)
    assert (chosen.amp, chosen.channels_last, chosen.source) == (False, True, "recorded")
    # what the config gives still wins over the record
    assert measure_settings(_net(), "cpu", True, "auto", [32, 32], run_dir=run_dir) == Settings(True, True)
    monkeypatch.undo()
    monkeypatch.setenv("EMSEG_CACHE_DIR", str(fresh_cache.parent))
    fresh_cache.parent.mkdir(parents=True)
    fresh_cache.write_text("{not json")
    assert measure_settings(_net(), "cpu", "auto", "auto", [32, 32], repeats=1).source == "measured"
    assert len(json.loads(fresh_cache.read_text())) == 1  # rewritten whole


def test_settings_refuse_a_value_that_is_not_a_choice():
    with pytest.raises(ValueError, match='amp must be true, false or "auto"'):
        measure_settings(_net(), "cpu", "fast", True, [32, 32])
