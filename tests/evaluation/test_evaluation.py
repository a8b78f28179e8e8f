"""Stack evaluation for any number of classes (metrics.csv, summary.json), validation metric handlers, overlays,
and the `emseg evaluate` command, on real ISBI labels and on maps built here."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import tifffile
import torch

from emseg.cli import main
from emseg.evaluation import (
    ChallengeScoreMetric,
    PixelErrorMetric,
    key_metric,
    one_hot,
    score_stack,
    validation_metrics,
)
from emseg.visualize import CLASS_COLOURS, TITLE_HEIGHT, class_overlay_image, with_titles

ISBI = ["membrane", "interior"]
NAMES = ["background", "a", "b", "c"]


@pytest.fixture(scope="module")
def labels(isbi_volumes):
    return (isbi_volumes[1][25:28] > 0).astype(np.uint8)


def interior_probabilities(interior: np.ndarray) -> list[np.ndarray]:
    """(membrane, interior) probabilities per slice from interior probabilities."""
    return [np.stack([1 - p, p]).astype(np.float32) for p in interior]


def test_perfect_stack(labels, tmp_path):
    scores = score_stack(interior_probabilities(labels), list(labels), ISBI, 1, ["a", "b", "c"])
    for key in ("v_rand", "v_rand_split", "v_rand_merge", "v_info", "v_info_split", "v_info_merge",
                "dice_membrane", "dice_interior", "iou_membrane", "iou_interior", "accuracy", "mean_dice"):
        assert scores.summary[key] == pytest.approx(1.0), key
    assert scores.summary["pixel_error"] == 0.0 and scores.summary["hd95_membrane"] == 0.0
    csv_path, json_path = scores.write(tmp_path)
    rows = list(csv.DictReader(open(csv_path)))
    assert [r["slice"] for r in rows] == ["a", "b", "c"]
    assert list(rows[0])[:4] == ["slice", "v_rand", "v_rand_split", "v_rand_merge"]
    assert json.loads(json_path.read_text())["slices"] == 3


def test_eroded_membranes_lower_the_scores(labels):
    from scipy import ndimage

    # thin membranes by growing the interior: cells start to merge, membrane Dice drops
    grown = np.stack([ndimage.binary_dilation(s, iterations=2) for s in labels]).astype(np.float32)
    scores = score_stack(interior_probabilities(grown), list(labels), ISBI, 1)
    assert scores.summary["v_rand_merge"] < 0.99 and scores.summary["dice_membrane"] < 0.9
    assert scores.summary["v_rand_split"] > scores.summary["v_rand_merge"]


def test_without_interior_class_no_challenge_scores(labels):
    scores = score_stack(interior_probabilities(labels), list(labels), ISBI)
    assert "v_rand" not in scores.summary and "pixel_error" not in scores.summary
    assert scores.summary["dice_membrane"] == 1.0 and scores.columns == ("accuracy", "dice_membrane", "dice_interior")


def test_monai_metrics_match_stack_scores(labels):
    noisy = np.clip(labels + np.random.default_rng(0).normal(0, 0.3, labels.shape), 0, 1).astype(np.float32)
    expected = score_stack(interior_probabilities(noisy), list(labels), ISBI, 1)
    metric = ChallengeScoreMetric("v_rand")
    pixel = PixelErrorMetric()
    for p, t in zip(noisy, labels):  # one slice per iteration, as the evaluator does
        y_pred, y = torch.from_numpy(p)[None, None], torch.from_numpy(t)[None, None]
        metric(y_pred, y)
        pixel(y_pred, y)
    assert metric.aggregate().item() == pytest.approx(expected.summary["v_rand"], abs=1e-6)
    assert pixel.aggregate().item() == pytest.approx(expected.summary["pixel_error"], abs=1e-6)


def _maps():
    label = np.zeros((32, 32), dtype=np.uint8)
    label[:16, :16] = 1
    label[16:, 16:] = 2  # class 3 absent from the label
    pred = label.copy()
    pred[:8, :16] = 0  # half of class 1 missed
    return pred, label


def _probabilities(classes: np.ndarray, n: int = 4) -> np.ndarray:
    return one_hot(classes, n)[0].numpy()


def test_per_class_dice_iou_and_accuracy_match_their_definitions():
    pred, label = _maps()
    scores = score_stack([_probabilities(pred), _probabilities(label)], [label, label], NAMES, names=["half", "perfect"])
    half = scores.rows[0]
    # class 1: |P| = 128, |T| = 256, overlap 128 -> Dice 2*128/384, IoU 128/256
    assert half["dice_a"] == pytest.approx(2 * 128 / 384) and half["iou_a"] == pytest.approx(0.5)
    assert half["dice_b"] == 1.0 and half["accuracy"] == pytest.approx(1 - 128 / 1024)
    assert np.isnan(half["dice_c"]) and np.isnan(half["hd95_c"])  # absent from both: left out of the mean
    assert scores.summary["dice_a"] == pytest.approx((2 * 128 / 384 + 1) / 2)
    assert np.isnan(scores.summary["dice_c"])
    assert scores.summary["mean_dice"] == pytest.approx(np.mean([scores.summary["dice_a"], 1.0]))
    assert "half" in scores.table()


def test_a_class_predicted_but_absent_scores_zero():
    pred, label = _maps()
    pred[0, 0] = 3
    row = score_stack([_probabilities(pred)], [label], NAMES).rows[0]
    assert row["dice_c"] == 0.0 and np.isnan(row["hd95_c"])


def test_validation_metrics_follow_the_data_set():
    multi = validation_metrics(NAMES)
    assert sorted(multi) == sorted([f"val_{m}_{c}" for m in ("dice", "iou") for c in NAMES[1:]] + ["val_accuracy"])
    assert list(key_metric(NAMES)) == ["val_mean_dice"]
    binary = validation_metrics(ISBI, interior_class=1)
    assert {"val_v_info", "val_mean_dice", "val_dice_membrane", "val_iou_interior", "val_accuracy"} <= set(binary)
    assert list(key_metric(ISBI, interior_class=1)) == ["val_v_rand"]


def test_overlay_colours_predicted_and_true_classes_and_marks_errors():
    pred, label = _maps()
    image = np.full((32, 32), 0.5, dtype=np.float32)
    picture = class_overlay_image(image, pred, label)
    assert picture.shape == (32, 128, 3) and picture.dtype == np.uint8
    grey = picture[31, 0]
    assert (picture[0, 32:64][0] == grey).all()  # background of the prediction stays grey
    expected = (0.5 * grey + 0.5 * CLASS_COLOURS[1]).astype(np.uint8)
    np.testing.assert_array_equal(picture[10, 64 + 2], expected)  # true class 1 in its colour
    assert (picture[0, 96 + 2] == [255, 0, 0]).all() and (picture[31, 96] != [255, 0, 0]).any()  # errors in red
    interior = (label > 0).astype(np.uint8)  # a membrane task: 0 membrane (drawn), 1 interior (left grey)
    binary = class_overlay_image(image, interior, interior, hidden_class=1)
    assert (binary[0, 32] == grey).all() and (binary[0, 32 + 20] == expected).all()


def test_overlay_panels_are_named_and_stamped():
    pred, label = _maps()
    picture = class_overlay_image(np.full((32, 32), 0.5, dtype=np.float32), pred, label)
    first, second = with_titles(picture, stamp="epoch 1"), with_titles(picture, stamp="epoch 2")
    assert first.shape == (32 + TITLE_HEIGHT, 128, 3) and (first[TITLE_HEIGHT:] == picture).all()
    strip = first[:TITLE_HEIGHT]
    assert all(strip[:, k * 32:(k + 1) * 32 - 8].max() == 255 for k in range(4))  # a title over every panel
    assert (first[:TITLE_HEIGHT] != second[:TITLE_HEIGHT]).any()  # the stamp differs between epochs


def test_one_hot_layout():
    onehot = one_hot(np.array([[0, 2], [1, 2]]), 3)
    assert onehot.shape == (1, 3, 2, 2)
    torch.testing.assert_close(onehot[0].argmax(0), torch.tensor([[0, 2], [1, 2]]))


def test_cli_scores_any_probability_stack(tmp_path, labels, capsys):
    tifffile.imwrite(tmp_path / "pred.tif", labels.astype(np.float32))
    tifffile.imwrite(tmp_path / "gt.tif", labels * 255)
    assert main(["evaluate", str(tmp_path / "pred.tif"), str(tmp_path / "gt.tif"), "--output", str(tmp_path / "r")]) == 0
    assert "mean" in capsys.readouterr().out
    assert json.loads((tmp_path / "r" / "summary.json").read_text())["v_rand"] == pytest.approx(1.0)
    tifffile.imwrite(tmp_path / "short.tif", labels[:2].astype(np.float32))
    assert main(["evaluate", str(tmp_path / "short.tif"), str(tmp_path / "gt.tif")]) == 1
    assert "short.tif: shape (2, 512, 512) differs" in capsys.readouterr().err


def test_validation_scores_dice_and_iou_as_the_report_does():
    """val_mean_dice (the multi-class key metric), val_dice_<class> and val_iou_<class> equal the report's figures:
    a class absent from a slice's label and prediction is left out, one predicted where the label has none is a 0."""
    pred, label = _maps()
    fp_pred = label.copy()
    fp_pred[:4, 20:] = 3  # class c predicted, absent from the label: a false positive
    preds, labels = [pred, fp_pred, label], [label, label, np.zeros_like(label)]  # the last: only background
    report = score_stack([_probabilities(p) for p in preds], labels, NAMES).summary
    assert report["dice_c"] == 0.0 and report["mean_dice"] < 1.0
    metrics = {**key_metric(NAMES), **validation_metrics(NAMES)}
    for name, handler in metrics.items():
        if name == "val_accuracy":
            continue
        metric = handler.metric_fn  # the MONAI metric behind the Ignite handler
        for p, t in zip(preds, labels):  # one slice per validation iteration, as the evaluator feeds them
            metric(y_pred=[one_hot(p, 4)[0]], y=[one_hot(t, 4)[0]])
        assert metric.aggregate().item() == pytest.approx(report[name.removeprefix("val_")], abs=1e-6), name
