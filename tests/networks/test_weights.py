"""Loading weights that others send: tensors only, with one clear message otherwise."""

from __future__ import annotations

import pytest
import torch

from emseg.networks import load_state_dict, load_weights


class Payload:
    """A custom class: unpickling it would run code of the sender's choosing."""

    def __reduce__(self):
        return (print, ("this would have run",))


def test_plain_and_checkpoint_state_dicts_load(tmp_path):
    net = torch.nn.Conv2d(1, 2, 3)
    torch.save(net.state_dict(), tmp_path / "plain.pt")
    torch.save({"model": net.state_dict(), "epoch": 3}, tmp_path / "checkpoint.pt")
    for name in ("plain.pt", "checkpoint.pt"):
        other = load_weights(torch.nn.Conv2d(1, 2, 3), tmp_path / name)
        torch.testing.assert_close(other.weight, net.weight)
        assert not other.training


def test_checkpoint_with_pickled_class_is_refused(tmp_path, capsys):
    path = tmp_path / "evil.pt"
    torch.save({"model": torch.nn.Conv2d(1, 2, 3).state_dict(), "extra": Payload()}, path)
    with pytest.raises(ValueError, match="evil.pt: refused, the checkpoint holds objects other than tensors"):
        load_state_dict(path)
    assert "this would have run" not in capsys.readouterr().out


def test_weights_that_do_not_fit_are_named(tmp_path):
    torch.save(torch.nn.Conv2d(1, 4, 3).state_dict(), tmp_path / "other.pt")
    with pytest.raises(ValueError, match="other.pt: weights do not fit"):
        load_weights(torch.nn.Conv2d(1, 2, 3), tmp_path / "other.pt")
    with pytest.raises(FileNotFoundError, match="missing.pt: no such checkpoint"):
        load_state_dict(tmp_path / "missing.pt")
