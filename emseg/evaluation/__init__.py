"""Scores of EM segmentations: the ISBI 2012 challenge procedure, per-class scores, validation metrics and
the evaluation report.

| module | what |
|---|---|
| ``challenge`` | V_rand / V_info after border thinning, pixel error (the challenge procedure) |
| ``scores`` | :func:`score_stack`: per-class Dice/IoU/HD95 and accuracy, plus challenge scores for a membrane task |
| ``metrics`` | the same as Ignite handlers for validation; :func:`validation_metrics` picks them for a data set |
| ``report`` | :class:`EvaluationReport`: the evaluate.json handler that writes metrics.csv and summary.json |
"""

from emseg.evaluation.challenge import (
    SCORE_NAMES,
    THRESHOLDS,
    SegmentationScores,
    best_threshold,
    challenge_scores,
    ground_truth_segments,
    pixel_scores,
    segmentation_scores,
    thinned_segmentation,
)
from emseg.evaluation.metrics import (
    ChallengeScore,
    ChallengeScoreMetric,
    ClassOverlap,
    ClassOverlapMetric,
    PixelError,
    PixelErrorMetric,
    channel_output,
    class_index_output,
    key_metric,
    validation_metrics,
)
from emseg.evaluation.report import EvaluationReport
from emseg.evaluation.scores import (
    StackScores,
    class_scores,
    one_hot,
    overlap_scores,
    score_stack,
)

__all__ = [
    "SCORE_NAMES",
    "THRESHOLDS",
    "ChallengeScore",
    "ChallengeScoreMetric",
    "ClassOverlap",
    "ClassOverlapMetric",
    "EvaluationReport",
    "PixelError",
    "PixelErrorMetric",
    "SegmentationScores",
    "StackScores",
    "best_threshold",
    "challenge_scores",
    "channel_output",
    "class_index_output",
    "class_scores",
    "ground_truth_segments",
    "key_metric",
    "one_hot",
    "overlap_scores",
    "pixel_scores",
    "score_stack",
    "segmentation_scores",
    "thinned_segmentation",
    "validation_metrics",
]
