"""The ISBI 2012 challenge scores, computed as the challenge's own code computes them.

The challenge ranked entries with Fiji's Trainable Segmentation metrics,
``RandError.getMaximalVRandAfterThinning(0.0, 1.0, 0.1, true)`` and
``VariationOfInformation.getMaximalVInfoAfterThinning(0.0, 1.0, 0.1)`` (Arganda-Carreras et al. 2015,
Front. Neuroanat. 9:142). For a probability map of cell interior (1 = interior) and a binary ground truth
(non-zero = interior, 0 = membrane):

1. Thresholds start at 0.0 and grow by repeated addition of 0.1 while they are <= 1.0, as Fiji's loop does
   (:data:`THRESHOLDS`: 0.30000000000000004, ..., 0.9999999999999999; a pixel of probability exactly 1.0 is
   interior at the last one).
2. Per slice and threshold t, the proposal ``probability > t`` is thinned by Fiji's binary watershed
   (:func:`emseg.evaluation.thinning.fiji_thinning`): its interior components flood the membrane band, leaving
   1-pixel lines (label 0).
3. Ground-truth segments are the 4-connected components of its interior; only ground-truth foreground pixels
   are scored, and proposal line pixels count as singletons, one segment each.
4. V_rand is the F-score of the Rand split and merge scores, V_info that of the information split and merge
   scores (:func:`segmentation_scores`).
5. A stack's score at t is the mean of its slices' F-scores (macro average); the reported score is the best
   mean over thresholds.

``fiji_scores.json`` in the shared ISBI reference-score folder holds what the Java code gives four maps;
the test suite reproduces every number of it. The probability-guided watershed of
:mod:`emseg.segmentation.instances` makes better cells but is a different procedure: its scores are never called
the challenge's.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from emseg.evaluation.thinning import fiji_thinning


def fiji_thresholds(start: float = 0.0, stop: float = 1.0, step: float = 0.1) -> np.ndarray:
    """Thresholds as Fiji's ``for (th = start; th <= stop; th += step)`` visits them (accumulated in doubles)."""
    values, threshold = [], float(start)
    while threshold <= stop:
        values.append(threshold)
        threshold += step
    return np.array(values, dtype=np.float64)


THRESHOLDS = fiji_thresholds()
# what evaluation records say made their V_rand and V_info; records without it come from emseg's earlier
# probability-guided thinning, which is not the challenge's procedure
SCORER = "isbi2012-fiji: Fiji Trainable_Segmentation getMaximalVRandAfterThinning / getMaximalVInfoAfterThinning"
SCORE_NAMES = ("v_rand", "v_rand_split", "v_rand_merge", "v_info", "v_info_split", "v_info_merge")
_FOUR_CONNECTED = ndimage.generate_binary_structure(2, 1)


def ground_truth_segments(label: np.ndarray) -> np.ndarray:
    """4-connected components of a binary ground truth's interior (0 = membrane)."""
    segments, _ = ndimage.label(np.asarray(label) > 0, structure=_FOUR_CONNECTED)
    return segments


def thinned_segmentation(probability: np.ndarray, threshold: float) -> np.ndarray:
    """The proposal segments the challenge scores at ``threshold``: cells of ``probability > threshold``
    separated by the 1-pixel lines (label 0) of Fiji's binary watershed (:func:`fiji_thinning`)."""
    return fiji_thinning(probability, threshold)


def _sequential(labels: np.ndarray) -> np.ndarray:
    return np.unique(labels, return_inverse=True)[1].reshape(-1)


def _entropy(counts: np.ndarray, total: int) -> float:
    p = counts[counts > 0] / total
    return float(-(p * np.log(p)).sum())


def _f_score(a: float, b: float) -> float:
    return 0.0 if a + b == 0 else 2 * a * b / (a + b)


@dataclass(frozen=True)
class SegmentationScores:
    """Split/merge scores of a proposal against a ground truth, with the sums they come from.

    Entropies are in nats; the ``sum_*_squared`` fields are sums of squared pixel
    counts (joint table, proposal and truth marginals) over the ``pixels`` scored.
    """

    v_rand_split: float
    v_rand_merge: float
    v_info_split: float
    v_info_merge: float
    entropy_proposal: float
    entropy_truth: float
    mutual_information: float
    pixels: int = 0
    sum_joint_squared: float = 0.0
    sum_proposal_squared: float = 0.0
    sum_truth_squared: float = 0.0

    @property
    def v_rand(self) -> float:
        return _f_score(self.v_rand_split, self.v_rand_merge)

    @property
    def v_info(self) -> float:
        return _f_score(self.v_info_split, self.v_info_merge)

    def as_array(self) -> np.ndarray:
        """Scores in :data:`SCORE_NAMES` order."""
        return np.array([getattr(self, name) for name in SCORE_NAMES], dtype=np.float64)


def segmentation_scores(proposal: np.ndarray, truth: np.ndarray) -> SegmentationScores:
    """Rand and information split/merge scores of label images ``proposal`` (S) and ``truth`` (T).

    Only pixels with ``truth > 0`` count. Proposal pixels labelled 0 are singletons.
    With p_ij the joint distribution, s_i and t_j its marginals over S and T:
    Rand split = sum p_ij^2 / sum t_j^2, Rand merge = sum p_ij^2 / sum s_i^2,
    information split = I(S;T) / H(S), information merge = I(S;T) / H(T).
    """
    proposal, truth = np.asarray(proposal).reshape(-1), np.asarray(truth).reshape(-1)
    if proposal.shape != truth.shape:
        raise ValueError(f"proposal has {proposal.size} pixels but the ground truth has {truth.size}")
    foreground = truth > 0
    n = int(foreground.sum())
    if n == 0:
        nan = float("nan")
        return SegmentationScores(nan, nan, nan, nan, nan, nan, nan)
    truth, proposal = truth[foreground], proposal[foreground]
    singleton = proposal == 0
    n_singletons = int(singleton.sum())

    truth_ids = _sequential(truth)
    t = np.bincount(truth_ids).astype(np.float64)
    if n_singletons < n:
        proposal_ids = _sequential(proposal[~singleton])
        s_grouped = np.bincount(proposal_ids).astype(np.float64)
        joint_ids = truth_ids[~singleton] * (proposal_ids.max() + 1) + proposal_ids
        p_grouped = np.bincount(joint_ids).astype(np.float64)
    else:
        s_grouped = p_grouped = np.zeros(0)
    # each singleton is a proposal segment of one pixel, and one cell of the joint table
    s = np.concatenate([s_grouped, np.ones(n_singletons)])
    p = np.concatenate([p_grouped, np.ones(n_singletons)])

    sum_p2, sum_s2, sum_t2 = float((p**2).sum()), float((s**2).sum()), float((t**2).sum())
    h_s, h_t, h_st = _entropy(s, n), _entropy(t, n), _entropy(p, n)
    mutual = max(h_s + h_t - h_st, 0.0)
    return SegmentationScores(
        v_rand_split=sum_p2 / sum_t2,
        v_rand_merge=sum_p2 / sum_s2,
        v_info_split=mutual / h_s if h_s > 0 else 1.0,
        v_info_merge=mutual / h_t if h_t > 0 else 1.0,
        entropy_proposal=h_s,
        entropy_truth=h_t,
        mutual_information=mutual,
        pixels=n,
        sum_joint_squared=sum_p2,
        sum_proposal_squared=sum_s2,
        sum_truth_squared=sum_t2,
    )


_CACHE: OrderedDict[bytes, np.ndarray] = OrderedDict()
_CACHE_SIZE = 64


def _digest(*arrays: np.ndarray) -> bytes:
    h = hashlib.blake2b(digest_size=16)
    for a in arrays:
        h.update(str((a.shape, a.dtype.str)).encode())
        h.update(np.ascontiguousarray(a).data)
    return h.digest()


def challenge_scores(probability: np.ndarray, label: np.ndarray, thresholds=THRESHOLDS) -> np.ndarray:
    """(len(thresholds), 6) array of :data:`SCORE_NAMES` for one 2-D slice, one row per threshold.

    Results are cached by content for the last few slices, so V_rand and V_info
    metrics and the evaluation report on the same prediction thin it only once.
    """
    probability, label = np.asarray(probability), np.asarray(label)
    if probability.shape != label.shape or probability.ndim != 2:
        raise ValueError(f"expected two 2-D maps of one shape, got {probability.shape} and {label.shape}")
    thresholds = np.asarray(thresholds, dtype=np.float64)
    key = _digest(probability, label, thresholds)
    if key in _CACHE:
        _CACHE.move_to_end(key)
        return _CACHE[key].copy()
    truth = ground_truth_segments(label)
    scores = np.stack([segmentation_scores(thinned_segmentation(probability, t), truth).as_array() for t in thresholds])
    _CACHE[key] = scores
    if len(_CACHE) > _CACHE_SIZE:
        _CACHE.popitem(last=False)
    return scores.copy()


def pixel_scores(probability: np.ndarray, label: np.ndarray, thresholds=THRESHOLDS) -> np.ndarray:
    """F-score of cell interior (positive class) per threshold for one slice: shape (len(thresholds),)."""
    truth = np.asarray(label).reshape(-1) > 0
    probability = np.asarray(probability).reshape(-1)
    scores = []
    for t in thresholds:
        predicted = probability > t
        tp = float(np.count_nonzero(predicted & truth))
        scores.append(_f_score(tp / max(predicted.sum(), 1), tp / max(truth.sum(), 1)) if tp else 0.0)
    return np.array(scores)


def best_threshold(per_slice: np.ndarray, thresholds=THRESHOLDS) -> tuple[float, float, int]:
    """(best mean score, its threshold, its index) from a (slices, thresholds) array of one score."""
    means = np.nanmean(np.asarray(per_slice, dtype=np.float64), axis=0)
    index = int(np.nanargmax(means))
    return float(means[index]), float(thresholds[index]), index
