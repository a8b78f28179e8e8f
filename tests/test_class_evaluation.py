"""Per-class scores, metric handlers and overlays for multi-class predictions."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from emseg.class_evaluation import one_hot, score_class_stack
from emseg.handlers import CLASS_COLOURS, class_overlay_image
from emseg.metrics import per_class_metrics

NAMES = ["background", "a", "b", "c"]


def _maps():
    label = np.zeros((32, 32), dtype=np.uint8)
    label[:16, :16] = 1
    label[16:, 16:] = 2  # class 3 absent from the label
    pred = label.copy()
    pred[:8, :16] = 0  # half of class 1 missed
    return pred, label


def test_per_class_dice_iou_and_accuracy_match_their_definitions():
    pred, label = _maps()
    scores = score_class_stack([pred, label], [label, label], NAMES, names=["half", "perfect"])
    half = scores.rows[0]
    # class 1: |P| = 128, |T| = 256, overlap 128 -> Dice 2*128/384, IoU 128/256
    assert half["dice_a"] == pytest.approx(2 * 128 / 384) and half["iou_a"] == pytest.approx(0.5)
    assert half["dice_b"] == 1.0 and half["accuracy"] == pytest.approx(1 - 128 / 1024)
    assert np.isnan(half["dice_c"])  # absent from both: not a score, left out of the mean
    assert scores.summary["dice_a"] == pytest.approx((2 * 128 / 384 + 1) / 2)
    assert np.isnan(scores.summary["dice_c"])
    assert scores.summary["mean_dice"] == pytest.approx(np.mean([scores.summary["dice_a"], 1.0]))
    assert "half" in scores.table()


def test_a_class_predicted_but_absent_scores_zero():
    pred, label = _maps()
    pred[0, 0] = 3
    row = score_class_stack([pred], [label], NAMES).rows[0]
    assert row["dice_c"] == 0.0


def test_per_class_handlers_are_named_by_class():
    metrics = per_class_metrics(NAMES)
    assert sorted(metrics) == sorted(f"val_{m}_{c}" for m in ("dice", "iou") for c in NAMES[1:])


def test_class_overlay_colours_predicted_and_true_classes():
    pred, label = _maps()
    image = np.full((32, 32), 0.5, dtype=np.float32)
    picture = class_overlay_image(image, pred, label)
    assert picture.shape == (32, 96, 3) and picture.dtype == np.uint8
    grey = picture[31, 0]
    assert (picture[0, 32:64][0] == grey).all()  # background of the prediction stays grey
    expected = (0.5 * grey + 0.5 * CLASS_COLOURS[1]).astype(np.uint8)
    np.testing.assert_array_equal(picture[10, 64 + 2], expected)  # true class 1 in its colour


def test_one_hot_layout():
    onehot = one_hot(np.array([[0, 2], [1, 2]]), 3)
    assert onehot.shape == (1, 3, 2, 2)
    torch.testing.assert_close(onehot[0].argmax(0), torch.tensor([[0, 2], [1, 2]]))
