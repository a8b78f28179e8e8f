"""Every loss is minimal for a perfect prediction and decreases when optimised."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import training_losses

from emseg.losses import LOSSES, build_loss
from emseg.losses.border_ce import border_weight_map


@pytest.fixture(scope="module")
def target(isbi_volumes):
    label = (isbi_volumes[1][0, :64, :64] > 0).astype(np.float32)
    weight = border_weight_map(label)
    return torch.from_numpy(np.stack([label, weight]))[None]  # (1, 2, H, W): class, weight


def perfect_logits(target, margin=20.0):
    classes = target[:, 0]
    return torch.stack([(1 - classes) * margin, classes * margin], dim=1) - margin / 2


@pytest.mark.parametrize("name", LOSSES)
def test_perfect_prediction_is_minimal(name, target):
    loss = build_loss(name)
    perfect = loss(perfect_logits(target), target).item()
    wrong = loss(perfect_logits(1 - target[:, :1]).detach(), target).item()
    assert perfect == pytest.approx(0.0, abs=1e-4)
    assert wrong > perfect + 0.5


@pytest.mark.parametrize("name", LOSSES)
def test_loss_decreases_with_optimisation(name, target):
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(8, 2, 1))
    image = target[:, :1] + 0.3 * torch.randn_like(target[:, :1])
    losses = training_losses(net, build_loss(name), image, target, steps=15, lr=0.02)
    assert losses[-1] < 0.7 * losses[0]


def test_deep_supervision_weights_each_head(target):
    loss = build_loss("ce", deep_supervision_weights=[1.0, 0.5])
    perfect, wrong = perfect_logits(target), perfect_logits(1 - target[:, :1])
    single = build_loss("ce")
    expected = single(wrong, target) + 0.5 * single(perfect, target)  # weighted sum, not normalised
    assert loss([wrong, perfect], target).item() == pytest.approx(expected.item(), rel=1e-4)


def test_border_ce_needs_weight_channel(target):
    with pytest.raises(ValueError, match="weight map in target channel 1"):
        build_loss("border_ce")(perfect_logits(target), target[:, :1])


def test_cldice_penalises_a_gap_more_than_a_thinner_membrane():
    """Two predictions with the same 30 wrong pixels: one cuts the membrane (two cells merge), one
    narrows it. Dice + CE cannot tell them apart; the clDice term must."""
    target = torch.ones(1, 1, 64, 64)
    target[..., 30:35] = 0  # a vertical membrane 5 px wide between two cells
    gap, thinner = target.clone(), target.clone()
    gap[..., 28:34, 30:35] = 1  # 6 rows x 5 columns of membrane predicted as interior
    thinner[..., 0:30, 34] = 1  # 30 rows of the membrane's edge column
    dice_ce, cldice = build_loss("dice_ce"), build_loss("dice_ce_cldice")
    assert dice_ce(perfect_logits(gap), target).item() == pytest.approx(
        dice_ce(perfect_logits(thinner), target).item(), rel=1e-5)
    gap_penalty = cldice(perfect_logits(gap), target) - dice_ce(perfect_logits(gap), target)
    thin_penalty = cldice(perfect_logits(thinner), target) - dice_ce(perfect_logits(thinner), target)
    assert gap_penalty.item() > 2 * thin_penalty.item() + 0.01
