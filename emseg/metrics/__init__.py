"""Segmentation scores: the ISBI 2012 challenge procedure and its MONAI/Ignite metrics."""

from emseg.metrics.isbi_challenge import (
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
from emseg.metrics.monai_metrics import (
    ChallengeScore,
    ChallengeScoreMetric,
    PixelError,
    PixelErrorMetric,
    channel_output,
)
from emseg.metrics.per_class import per_class_metrics

__all__ = [
    "ChallengeScore",
    "ChallengeScoreMetric",
    "PixelError",
    "PixelErrorMetric",
    "SCORE_NAMES",
    "THRESHOLDS",
    "SegmentationScores",
    "best_threshold",
    "challenge_scores",
    "channel_output",
    "ground_truth_segments",
    "per_class_metrics",
    "pixel_scores",
    "segmentation_scores",
    "thinned_segmentation",
]
