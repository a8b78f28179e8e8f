"""The challenge scores as MONAI cumulative metrics and Ignite handlers, usable as ``key_val_metric``.

Inputs are the interior probability (``y_pred``, 1 channel) and the binary interior
label (``y``, 1 channel), batch-first or as lists of channel-first tensors. Per sample
all thresholds are scored; ``aggregate`` returns the mean over samples at the best
threshold, as the challenge does.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch
from monai.handlers import IgniteMetricHandler, from_engine
from monai.metrics import CumulativeIterationMetric

from emseg.metrics.isbi_challenge import SCORE_NAMES, THRESHOLDS, best_threshold, challenge_scores, pixel_scores


def channel_output(channel: int, keys: Sequence[str] = ("pred", "label")) -> Callable:
    """Ignite output transform that keeps one channel of ``pred`` and ``label`` (first two of ``keys``).

    Lets MONAI's metrics report a single class, e.g. the membrane (channel 0) of a
    two-class EM prediction, or the interior probability (channel 1) for the challenge scores.
    """
    select = from_engine(list(keys))

    def transform(output):
        preds, labels = select(output)
        return [p[channel : channel + 1] for p in preds], [y[channel : channel + 1] for y in labels]

    return transform


def _maps(y_pred: torch.Tensor, y: torch.Tensor) -> list[tuple[np.ndarray, np.ndarray]]:
    if y_pred.shape != y.shape or y_pred.ndim != 4 or y_pred.shape[1] != 1:
        raise ValueError(f"expected (B, 1, H, W) probability and label, got {tuple(y_pred.shape)}, {tuple(y.shape)}")
    p = y_pred.detach().float().cpu().numpy()
    t = y.detach().cpu().numpy()
    return [(p[i, 0], t[i, 0]) for i in range(len(p))]


class ChallengeScoreMetric(CumulativeIterationMetric):
    """One of :data:`SCORE_NAMES` (default V_rand) at the best threshold, averaged over samples."""

    def __init__(self, score: str = "v_rand", thresholds: Sequence[float] = THRESHOLDS) -> None:
        super().__init__()
        if score not in SCORE_NAMES:
            raise ValueError(f"unknown score '{score}'; choose from {SCORE_NAMES}")
        self.score = score
        self.thresholds = np.asarray(thresholds, dtype=np.float64)

    def _compute_tensor(self, y_pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        rows = [challenge_scores(p, t, self.thresholds)[:, SCORE_NAMES.index(self.score)] for p, t in _maps(y_pred, y)]
        return torch.as_tensor(np.stack(rows), dtype=torch.float32)  # (B, thresholds)

    def aggregate(self) -> torch.Tensor:  # type: ignore[override]
        value, _, _ = best_threshold(self.get_buffer().numpy(), self.thresholds)
        return torch.tensor(value)


class PixelErrorMetric(CumulativeIterationMetric):
    """ISBI pixel error: 1 - the best (over thresholds) mean F-score of cell-interior pixels."""

    def __init__(self, thresholds: Sequence[float] = THRESHOLDS) -> None:
        super().__init__()
        self.thresholds = np.asarray(thresholds, dtype=np.float64)

    def _compute_tensor(self, y_pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        rows = [pixel_scores(p, t, self.thresholds) for p, t in _maps(y_pred, y)]
        return torch.as_tensor(np.stack(rows), dtype=torch.float32)

    def aggregate(self) -> torch.Tensor:  # type: ignore[override]
        value, _, _ = best_threshold(self.get_buffer().numpy(), self.thresholds)
        return torch.tensor(1.0 - value)


class ChallengeScore(IgniteMetricHandler):
    """Ignite handler of :class:`ChallengeScoreMetric`, e.g. ``validate#key_metric`` = V_rand."""

    def __init__(self, score: str = "v_rand", thresholds: Sequence[float] = THRESHOLDS,
                 output_transform: Callable = lambda x: x) -> None:
        super().__init__(ChallengeScoreMetric(score, thresholds), output_transform=output_transform,
                         save_details=False)


class PixelError(IgniteMetricHandler):
    """Ignite handler of :class:`PixelErrorMetric` (lower is better)."""

    def __init__(self, thresholds: Sequence[float] = THRESHOLDS, output_transform: Callable = lambda x: x) -> None:
        super().__init__(PixelErrorMetric(thresholds), output_transform=output_transform, save_details=False)
