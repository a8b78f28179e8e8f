"""Per-class scores of class-index predictions (multi-class EM: membranes, mitochondria, ...).

:func:`score_class_stack` gives, per slice and class, Dice and IoU (MONAI's metrics) and
pixel accuracy; :class:`ClassEvaluationReport` is the evaluate.json handler that writes them
as ``metrics.csv``/``summary.json`` and hands the means to MLflow, like the binary
:class:`emseg.evaluation.EvaluationReport`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from emseg.evaluation import SliceReport, StackScores


def one_hot(classes: np.ndarray, num_classes: int) -> torch.Tensor:
    """(1, C, H, W) float one-hot of a (H, W) class-index map."""
    index = torch.from_numpy(np.asarray(classes, dtype=np.int64))
    return torch.nn.functional.one_hot(index, num_classes).permute(2, 0, 1)[None].float()


def score_class_stack(
    predictions: Sequence[np.ndarray],
    labels: Sequence[np.ndarray],
    class_names: Sequence[str],
    names: Sequence[str] | None = None,
) -> StackScores:
    """Dice and IoU per class (background included as ``class_names[0]``) and accuracy, per slice and mean.

    A class absent from both prediction and label of a slice scores NaN there and is left
    out of that class's mean, so empty masks do not inflate the summary; a class predicted
    where the label has none scores 0.
    """
    from monai.metrics import compute_dice, compute_iou

    if len(predictions) != len(labels) or not len(labels):
        raise ValueError(f"{len(predictions)} prediction slices for {len(labels)} label slices")
    names = list(names) if names is not None else [f"slice_{i:03d}" for i in range(len(labels))]
    n = len(class_names)
    rows = []
    for name, pred, label in zip(names, predictions, labels):
        p, t = one_hot(pred, n), one_hot(label, n)
        dice = compute_dice(p, t, include_background=True, ignore_empty=False)[0]
        iou = compute_iou(p, t, include_background=True, ignore_empty=False)[0]
        both_empty = (p.sum((0, 2, 3)) == 0) & (t.sum((0, 2, 3)) == 0)
        row: dict = {"slice": name, "accuracy": float((np.asarray(pred) == np.asarray(label)).mean())}
        for c, cls in enumerate(class_names):
            row[f"dice_{cls}"] = float("nan") if both_empty[c] else float(dice[c])
        for c, cls in enumerate(class_names):
            row[f"iou_{cls}"] = float("nan") if both_empty[c] else float(iou[c])
        rows.append(row)
    summary: dict = {"slices": len(rows), "classes": list(class_names)}
    for key in rows[0]:
        if key != "slice":
            values = [row[key] for row in rows if not np.isnan(row[key])]
            summary[key] = float(np.mean(values)) if values else float("nan")
    foreground = [summary[f"dice_{cls}"] for cls in class_names[1:] if not np.isnan(summary[f"dice_{cls}"])]
    summary["mean_dice"] = float(np.mean(foreground)) if foreground else float("nan")
    columns = ("accuracy", *(f"dice_{cls}" for cls in class_names[1:]))
    return StackScores(rows, summary, columns)


class ClassEvaluationReport(SliceReport):
    """Per-class report (:func:`score_class_stack`) of the argmax of one-hot ``pred`` and ``label``."""

    def __init__(self, output_dir: str, class_names: Sequence[str], pred_key: str = "pred", label_key: str = "label",
                 name_key: str = "name", prefix: str = "") -> None:
        super().__init__(output_dir, name_key, prefix)
        self.class_names = list(class_names)
        self.pred_key, self.label_key = pred_key, label_key

    def extract(self, output: dict) -> tuple[np.ndarray, np.ndarray]:
        return (output[self.pred_key].detach().argmax(0).cpu().numpy(),
                output[self.label_key].detach().argmax(0).cpu().numpy())

    def score(self, predictions, labels, names) -> StackScores:
        return score_class_stack(predictions, labels, self.class_names, names)
