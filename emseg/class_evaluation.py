"""Per-class scores of class-index predictions (multi-class EM: membranes, mitochondria, ...).

:func:`score_class_stack` gives, per slice and class, Dice and IoU (MONAI's metrics) and
pixel accuracy; :class:`ClassEvaluationReport` is the evaluate.json handler that writes them
as ``metrics.csv``/``summary.json`` and hands the means to MLflow, like the binary
:class:`emseg.evaluation.EvaluationReport`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import torch
from ignite.engine import Engine, Events

from emseg.evaluation import StackScores

logger = logging.getLogger(__name__)


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
    out of that class's mean, so empty masks do not inflate or deflate the summary.
    """
    from monai.metrics import compute_dice, compute_iou

    if len(predictions) != len(labels) or not len(labels):
        raise ValueError(f"{len(predictions)} prediction slices for {len(labels)} label slices")
    names = list(names) if names is not None else [f"slice_{i:03d}" for i in range(len(labels))]
    n = len(class_names)
    rows = []
    for name, pred, label in zip(names, predictions, labels):
        p, t = one_hot(pred, n), one_hot(label, n)
        dice = compute_dice(p, t, include_background=True, ignore_empty=True)[0]
        iou = compute_iou(p, t, include_background=True, ignore_empty=True)[0]
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


class ClassEvaluationReport:
    """Ignite handler: per-class scores of every evaluated slice, written to ``output_dir``.

    Takes the argmax of one-hot ``pred`` and ``label`` from the evaluator's output; the
    summary means go into ``engine.state.metrics`` (with ``prefix``) for MLflow.
    """

    def __init__(self, output_dir: str, class_names: Sequence[str], pred_key: str = "pred", label_key: str = "label",
                 name_key: str = "name", prefix: str = "") -> None:
        self.output_dir = output_dir
        self.class_names = list(class_names)
        self.pred_key, self.label_key, self.name_key = pred_key, label_key, name_key
        self.prefix = prefix
        self._items: list[tuple[str, np.ndarray, np.ndarray]] = []

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, lambda e: self._items.clear())
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._collect)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._report)

    def _collect(self, engine: Engine) -> None:
        batch = engine.state.batch if isinstance(engine.state.batch, list) else [engine.state.batch]
        for item, output in zip(batch, engine.state.output):
            pred = output[self.pred_key].detach().argmax(0).cpu().numpy()
            label = output[self.label_key].detach().argmax(0).cpu().numpy()
            self._items.append((str(item.get(self.name_key, len(self._items))), pred, label))

    def _report(self, engine: Engine) -> None:
        names, preds, labels = zip(*self._items)
        scores = score_class_stack(preds, labels, self.class_names, names)
        csv_path, json_path = scores.write(self.output_dir)
        logger.info("evaluation of %d slices:\n%s\nwrote %s and %s", len(names), scores.table(), csv_path, json_path)
        for key, value in scores.summary.items():
            if isinstance(value, float):
                engine.state.metrics[self.prefix + key] = value
