"""The ISBI 2012 scores equal the challenge's own code (Fiji's Trainable Segmentation metrics) on four real
probability maps: every threshold's V_rand and V_info and the best of each, through the library and through
``emseg evaluate``."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import tifffile

from emseg.evaluation.challenge import SCORE_NAMES, THRESHOLDS, best_threshold, challenge_scores
from emseg.evaluation.thinning import fiji_thinning, fiji_watershed

TOLERANCE = 2e-4  # the bound; the scores agree to about 1e-15
MAPS = ("unet", "unet_tta", "synthetic", "binary")


def test_thresholds_are_fijis_accumulated_ones():
    assert len(THRESHOLDS) == 11 and THRESHOLDS[0] == 0.0
    assert THRESHOLDS[3] == 0.1 + 0.1 + 0.1 == 0.30000000000000004
    assert THRESHOLDS[-1] == 0.9999999999999999  # a probability of exactly 1.0 is interior at the last one


@pytest.mark.parametrize("name", MAPS)
def test_library_reproduces_fiji_scores(name, reference_scores, isbi_volumes):
    entry = reference_scores["maps"][name]
    np.testing.assert_allclose(THRESHOLDS, entry["thresholds"], atol=1e-12)
    probability = tifffile.imread(entry["file"])
    truth = isbi_volumes[1][25:30] > 0
    per_slice = np.stack([challenge_scores(p, t) for p, t in zip(probability, truth)])  # (5, 11, 6)
    for score in ("v_rand", "v_info"):
        curve = per_slice[:, :, SCORE_NAMES.index(score)].mean(axis=0)
        expected = entry[score][: len(THRESHOLDS)]
        np.testing.assert_allclose(curve, expected, rtol=0, atol=TOLERANCE, err_msg=f"{name} {score}")
        best, _, _ = best_threshold(per_slice[:, :, SCORE_NAMES.index(score)])
        assert best == pytest.approx(entry[f"best_{score}"], abs=TOLERANCE)


@pytest.mark.slow
def test_emseg_evaluate_reproduces_fiji_scores(reference_scores, isbi_volumes, tmp_path):
    labels = tmp_path / "labels-25-29.tif"
    tifffile.imwrite(labels, isbi_volumes[1][25:30])
    for name in MAPS:
        entry = reference_scores["maps"][name]
        out = tmp_path / name
        result = subprocess.run([sys.executable, "-m", "emseg.cli", "evaluate", str(entry["file"]), str(labels),
                                 "--output", str(out)], capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
        summary = json.loads((out / "summary.json").read_text())
        for score in ("v_rand", "v_info"):
            np.testing.assert_allclose(summary["per_threshold"][score], entry[score][: len(THRESHOLDS)],
                                       rtol=0, atol=TOLERANCE, err_msg=f"{name} {score}")
            assert summary[score] == pytest.approx(entry[f"best_{score}"], abs=TOLERANCE)
        mean_row = next(line for line in result.stdout.splitlines() if line.startswith("mean"))
        assert all(f"{entry[f'best_{score}']:.4f}" in mean_row for score in ("v_rand", "v_info"))  # the printed mean


def test_binary_watershed_splits_a_two_pixel_membrane_where_the_fronts_meet():
    interior = np.zeros((6, 10), np.float32)
    interior[:, :4] = 1.0  # left cell: columns 0-3
    interior[:, 6:] = 1.0  # right cell: columns 6-9; columns 4-5 are a 2-pixel membrane
    cells = fiji_thinning(interior, 0.5)
    # both membrane columns are one step from a cell; Fiji floods column by column, so the left cell takes column 4
    # first, and column 5 then touches both cells: the line is column 5 in every row
    assert np.all(cells[:, 5] == 0) and np.count_nonzero(cells == 0) == 6
    assert len(np.unique(cells[:, :5])) == 1 and len(np.unique(cells[:, 6:])) == 1
    assert cells[0, 0] != cells[0, 9]


def test_thinning_ignores_probability_values_after_binarising():
    rng = np.random.default_rng(0)
    interior = (rng.random((40, 40)) > 0.3).astype(np.float32)
    softened = np.where(interior > 0.5, rng.uniform(0.51, 1.0, interior.shape),
                        rng.uniform(0.0, 0.5, interior.shape)).astype(np.float32)
    np.testing.assert_array_equal(fiji_thinning(interior, 0.5), fiji_thinning(softened, 0.5))


def test_all_membrane_is_one_basin_and_watershed_needs_a_2d_image():
    # with no interior the binary image is one plateau, which Fiji's flooding makes one basin
    assert np.unique(fiji_thinning(np.zeros((5, 7), np.float32), 0.5)).tolist() == [1]
    with pytest.raises(ValueError, match="2-D"):
        fiji_watershed(np.zeros((2, 3, 4)))
