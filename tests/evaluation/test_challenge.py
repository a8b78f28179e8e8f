"""The ISBI challenge scores on hand-checkable images and against scikit-image."""

from __future__ import annotations

import math

import numpy as np
import pytest
from skimage.metrics import adapted_rand_error, variation_of_information

from emseg.evaluation.challenge import (
    SCORE_NAMES,
    THRESHOLDS,
    best_threshold,
    challenge_scores,
    ground_truth_segments,
    pixel_scores,
    segmentation_scores,
    thinned_segmentation,
)

V_RAND, V_INFO = SCORE_NAMES.index("v_rand"), SCORE_NAMES.index("v_info")


def two_cells() -> np.ndarray:
    """8x9 ground truth: two 8x4 cells (1 = interior) separated by a 1-pixel membrane column."""
    label = np.ones((8, 9), np.uint8)
    label[:, 4] = 0
    return label


def test_perfect_prediction_scores_one_everywhere(isbi_volumes):
    label = (isbi_volumes[1][25] > 0).astype(np.uint8)
    scores = challenge_scores(label.astype(np.float32), label)
    assert scores.shape == (len(THRESHOLDS), len(SCORE_NAMES))
    np.testing.assert_allclose(scores[1:10], 1.0)  # every threshold strictly between 0 and 1
    assert pixel_scores(label, label)[5] == 1.0


def test_merge_of_two_cells_by_hand():
    truth = np.array([[1, 1, 2, 2]])
    merged = np.array([[7, 7, 7, 7]])
    s = segmentation_scores(merged, truth)
    # p = 1/4 per pixel; joint: two cells of 2 pixels; truth: 2 and 2; proposal: 4
    assert s.v_rand_split == pytest.approx((2**2 + 2**2) / (2**2 + 2**2))  # 1: nothing split
    assert s.v_rand_merge == pytest.approx((2**2 + 2**2) / 4**2)  # 0.5
    assert s.v_rand == pytest.approx(2 * 1 * 0.5 / 1.5)
    # H(S) = 0, H(T) = ln 2, I = 0
    assert s.v_info_split == 1.0 and s.v_info_merge == 0.0 and s.v_info == 0.0


def test_split_of_one_cell_by_hand():
    truth = np.array([[5, 5, 5, 5]])
    split = np.array([[1, 1, 2, 3]])
    s = segmentation_scores(split, truth)
    assert s.v_rand_split == pytest.approx((4 + 1 + 1) / 16)
    assert s.v_rand_merge == pytest.approx(1.0)
    h_s = -(0.5 * math.log(0.5) + 2 * 0.25 * math.log(0.25))
    assert s.entropy_proposal == pytest.approx(h_s) and s.mutual_information == pytest.approx(0.0)
    assert s.v_info_split == 0.0 and s.v_info_merge == 1.0


def test_line_pixels_are_singletons_and_truth_background_is_ignored():
    truth = np.array([[0, 1, 1, 1, 1]])
    proposal = np.array([[9, 4, 4, 0, 0]])  # two line pixels inside the cell; truth membrane ignored
    s = segmentation_scores(proposal, truth)
    assert s.pixels == 4
    assert s.sum_joint_squared == 2**2 + 1 + 1 and s.sum_proposal_squared == 2**2 + 1 + 1
    assert s.sum_truth_squared == 4**2
    assert s.v_rand_split == pytest.approx(6 / 16) and s.v_rand_merge == 1.0


def test_all_membrane_and_all_interior_predictions(isbi_volumes):
    label = (isbi_volumes[1][25] > 0).astype(np.uint8)
    truth_sizes = np.bincount(ground_truth_segments(label).ravel())[1:].astype(float)
    n = truth_sizes.sum()
    # all interior: one cell covering everything
    interior = challenge_scores(np.ones(label.shape, np.float32), label)
    assert interior[5, SCORE_NAMES.index("v_rand_split")] == 1.0
    assert interior[5, SCORE_NAMES.index("v_rand_merge")] == pytest.approx((truth_sizes**2).sum() / n**2)
    assert interior[5, SCORE_NAMES.index("v_info_merge")] == 0.0
    # all membrane: Fiji's watershed floods the one plateau as one basin, so it scores as one cell too (the
    # reference maps show it: V_rand at threshold 1.0, where nothing is interior, equals that at 0.0)
    membrane = challenge_scores(np.zeros(label.shape, np.float32), label)
    np.testing.assert_allclose(membrane[5], interior[5])
    # every line pixel a singleton: scored directly, no thinning
    singletons = segmentation_scores(np.zeros(label.shape, np.int64), ground_truth_segments(label))
    assert singletons.v_rand_merge == 1.0
    assert singletons.v_rand_split == pytest.approx(n / (truth_sizes**2).sum())
    # singletons determine the truth segment, so I(S;T) = H(T) and H(S) = ln n
    h_truth = -(truth_sizes / n * np.log(truth_sizes / n)).sum()
    assert singletons.v_info_split == pytest.approx(h_truth / np.log(n))
    assert singletons.v_info_merge == pytest.approx(1.0)


def test_thinning_leaves_one_pixel_lines_between_touching_cells():
    probability = np.zeros((12, 12), np.float32)
    probability[:, :5] = 1.0  # left cell
    probability[:, 7:] = 1.0  # right cell; columns 5-6 are a 2-pixel membrane
    cells = thinned_segmentation(probability, 0.5)
    assert set(np.unique(cells)) == {0, 1, 2}
    lines = cells == 0
    assert lines.sum() == 12 and np.all(lines.sum(axis=1) == 1)  # exactly one line pixel per row


def test_agrees_with_scikit_image_without_thinning_or_singletons():
    rng = np.random.default_rng(0)
    truth = rng.integers(1, 6, (40, 40))
    truth[:5] = 0  # ignored background
    proposal = rng.integers(1, 4, (40, 40))
    s = segmentation_scores(proposal, truth)
    # scikit-image counts pairs of distinct pixels (n_ij (n_ij - 1)), the challenge all pairs (n_ij^2)
    _, precision, recall = adapted_rand_error(truth, proposal, ignore_labels=(0,))
    n = s.pixels
    assert (s.sum_joint_squared - n) / (s.sum_truth_squared - n) == pytest.approx(precision)
    assert (s.sum_joint_squared - n) / (s.sum_proposal_squared - n) == pytest.approx(recall)
    # conditional entropies, scikit-image in bits
    h_s_given_t, h_t_given_s = variation_of_information(truth, proposal, ignore_labels=(0,))
    assert (s.entropy_proposal - s.mutual_information) / math.log(2) == pytest.approx(h_s_given_t)
    assert (s.entropy_truth - s.mutual_information) / math.log(2) == pytest.approx(h_t_given_s)


def test_best_threshold_takes_mean_over_slices():
    per_slice = np.array([[0.1, 0.9, 0.5], [0.3, 0.5, 0.9]])
    assert best_threshold(per_slice, [0.2, 0.4, 0.6]) == (pytest.approx(0.7), 0.4, 1)
