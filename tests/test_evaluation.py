"""Stack evaluation (metrics.csv, summary.json) and the `emseg evaluate` command on real ISBI labels."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import tifffile
import torch

from emseg.cli import main
from emseg.evaluation import score_stack
from emseg.metrics import ChallengeScoreMetric, PixelErrorMetric


@pytest.fixture(scope="module")
def labels(isbi_volumes):
    return (isbi_volumes[1][25:28] > 0).astype(np.uint8)


def test_perfect_stack(labels, tmp_path):
    scores = score_stack(list(labels.astype(np.float32)), list(labels), ["a", "b", "c"])
    for key in ("v_rand", "v_rand_split", "v_rand_merge", "v_info", "v_info_split", "v_info_merge",
                "dice_membrane", "dice_interior", "iou_membrane", "iou_interior"):
        assert scores.summary[key] == pytest.approx(1.0), key
    assert scores.summary["pixel_error"] == 0.0 and scores.summary["hd95_membrane"] == 0.0
    csv_path, json_path = scores.write(tmp_path)
    rows = list(csv.DictReader(open(csv_path)))
    assert [r["slice"] for r in rows] == ["a", "b", "c"]
    assert json.loads(json_path.read_text())["slices"] == 3


def test_eroded_membranes_lower_the_scores(labels):
    from scipy import ndimage

    # thin membranes by growing the interior: cells start to merge, membrane Dice drops
    grown = np.stack([ndimage.binary_dilation(s, iterations=2) for s in labels]).astype(np.float32)
    scores = score_stack(list(grown), list(labels))
    assert scores.summary["v_rand_merge"] < 0.99 and scores.summary["dice_membrane"] < 0.9
    assert scores.summary["v_rand_split"] > scores.summary["v_rand_merge"]


def test_monai_metrics_match_stack_scores(labels):
    noisy = np.clip(labels + np.random.default_rng(0).normal(0, 0.3, labels.shape), 0, 1).astype(np.float32)
    expected = score_stack(list(noisy), list(labels))
    metric = ChallengeScoreMetric("v_rand")
    pixel = PixelErrorMetric()
    for p, t in zip(noisy, labels):  # one slice per iteration, as the evaluator does
        y_pred, y = torch.from_numpy(p)[None, None], torch.from_numpy(t)[None, None]
        metric(y_pred, y)
        pixel(y_pred, y)
    assert metric.aggregate().item() == pytest.approx(expected.summary["v_rand"], abs=1e-6)
    assert pixel.aggregate().item() == pytest.approx(expected.summary["pixel_error"], abs=1e-6)


def test_cli_scores_any_probability_stack(tmp_path, labels, capsys):
    tifffile.imwrite(tmp_path / "pred.tif", labels.astype(np.float32))
    tifffile.imwrite(tmp_path / "gt.tif", labels * 255)
    assert main(["evaluate", str(tmp_path / "pred.tif"), str(tmp_path / "gt.tif"), "--output", str(tmp_path / "r")]) == 0
    assert "mean" in capsys.readouterr().out
    assert json.loads((tmp_path / "r" / "summary.json").read_text())["v_rand"] == pytest.approx(1.0)
    tifffile.imwrite(tmp_path / "short.tif", labels[:2].astype(np.float32))
    assert main(["evaluate", str(tmp_path / "short.tif"), str(tmp_path / "gt.tif")]) == 1
    assert "short.tif: shape (2, 512, 512) differs" in capsys.readouterr().err
