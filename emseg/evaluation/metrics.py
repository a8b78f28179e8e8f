"""Validation metrics as Ignite handlers: the challenge scores and per-class Dice and IoU (MONAI cumulative
metrics, scored as the evaluation report scores them), pixel accuracy; :func:`validation_metrics` picks the set
for a data set's classes.

The challenge metrics take the interior probability (``y_pred``, 1 channel) and the binary
interior label (``y``, 1 channel), batch-first or as lists of channel-first tensors. Per sample
all thresholds are scored; ``aggregate`` returns the mean over samples at the best threshold,
as the challenge does.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch
from monai.handlers import IgniteMetricHandler, from_engine
from monai.metrics import CumulativeIterationMetric

from emseg.evaluation.challenge import (
    SCORE_NAMES,
    THRESHOLDS,
    best_threshold,
    challenge_scores,
    pixel_scores,
)
from emseg.evaluation.scores import BACKGROUND, overlap_scores


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


class ClassOverlapMetric(CumulativeIterationMetric):
    """Dice (or IoU) of ``classes`` of one-hot (B, C, H, W) predictions, by :func:`overlap_scores`' rule for empty
    masks; ``aggregate`` is the mean over classes of each class's mean over samples: the evaluation report's
    ``dice_<class>`` and ``mean_dice``."""

    def __init__(self, classes: Sequence[int], score: str = "dice") -> None:
        super().__init__()
        if score not in ("dice", "iou"):
            raise ValueError(f"unknown overlap score '{score}'; choose dice or iou")
        self.classes, self.score = list(classes), score

    def _compute_tensor(self, y_pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        dice, iou = overlap_scores(y_pred, y)
        return (dice if self.score == "dice" else iou)[:, self.classes]

    def aggregate(self) -> torch.Tensor:  # type: ignore[override]
        return torch.nanmean(torch.nanmean(self.get_buffer(), dim=0))


class ClassOverlap(IgniteMetricHandler):
    """Ignite handler of :class:`ClassOverlapMetric`, on the engine's one-hot ``pred`` and ``label``."""

    def __init__(self, classes: Sequence[int], score: str = "dice",
                 output_transform: Callable = from_engine(["pred", "label"])) -> None:
        super().__init__(ClassOverlapMetric(classes, score), output_transform=output_transform, save_details=False)


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


def class_index_output(output) -> tuple[torch.Tensor, torch.Tensor]:
    """Ignite output transform: one-hot ``pred`` (B, C, H, W) and ``label`` (B, C, H, W) stacked from the engine's
    lists; a pixel whose label is all zero is unlabelled."""
    preds, labels = from_engine(["pred", "label"])(output)
    pred = torch.stack([torch.as_tensor(p).as_subclass(torch.Tensor) for p in preds])
    label = torch.stack([torch.as_tensor(y).as_subclass(torch.Tensor) for y in labels])
    return pred, label


class LabelledAccuracyMetric(CumulativeIterationMetric):
    """Pixel accuracy over labelled pixels (one-hot label not all zero), pooled over the samples as Ignite's
    ``Accuracy`` pools them."""

    def _compute_tensor(self, y_pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        labelled = y.sum(1) > 0
        correct = (y_pred.argmax(1) == y.argmax(1)) & labelled
        return torch.stack([correct.flatten(1).sum(1), labelled.flatten(1).sum(1)], 1).double()  # (B, 2)

    def aggregate(self) -> torch.Tensor:  # type: ignore[override]
        correct, labelled = self.get_buffer().sum(0)
        return correct / labelled if labelled else torch.tensor(float("nan"))


class LabelledAccuracy(IgniteMetricHandler):
    """Ignite handler of :class:`LabelledAccuracyMetric` on the engine's one-hot ``pred`` and ``label``."""

    def __init__(self, output_transform: Callable = class_index_output) -> None:
        super().__init__(LabelledAccuracyMetric(), output_transform=output_transform, save_details=False)


def key_metric(class_names: Sequence[str], interior_class: int | None = None, prefix: str = "val_") -> dict:
    """The metric that picks the best checkpoint: V_rand of a membrane task (``interior_class`` given), else
    the mean Dice of the classes other than "background" (:class:`ClassOverlapMetric`)."""
    if interior_class is not None:
        return {f"{prefix}v_rand": ChallengeScore("v_rand", output_transform=channel_output(interior_class,
                                                                                             ["prob", "label"]))}
    return {f"{prefix}mean_dice": ClassOverlap([c for c, name in enumerate(class_names) if name != BACKGROUND])}


def validation_metrics(class_names: Sequence[str], interior_class: int | None = None, prefix: str = "val_") -> dict:
    """The other validation metrics: Dice and IoU of every class but "background", pixel accuracy, the mean
    Dice (of a membrane task, whose key metric is V_rand) and V_info."""
    metrics: dict = {}
    if interior_class is not None:
        metrics[f"{prefix}v_info"] = ChallengeScore("v_info", output_transform=channel_output(interior_class,
                                                                                             ["prob", "label"]))
        metrics.update(key_metric(class_names, None, prefix))
    for channel, name in enumerate(class_names):
        if name == BACKGROUND:
            continue
        metrics[f"{prefix}dice_{name}"] = ClassOverlap([channel], "dice")
        metrics[f"{prefix}iou_{name}"] = ClassOverlap([channel], "iou")
    metrics[f"{prefix}accuracy"] = LabelledAccuracy()
    return metrics
