"""Score a stack of predictions against class-index labels: one procedure for any number of classes.

Per slice and class: Dice, IoU and 95% Hausdorff distance (MONAI's metrics) of the argmax, and
pixel accuracy. For a membrane task (``interior_class`` given, ISBI: 1) also the ISBI 2012
challenge scores of the cell-interior probability (V_rand, V_info and their split/merge parts,
at the threshold best for the stack, as the challenge ranks) and the pixel error. Written as
``metrics.csv`` (one row per slice) and ``summary.json`` (means, best thresholds, per-threshold
curves).
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from emseg.data.painted import UNLABELLED
from emseg.evaluation.challenge import (
    SCORE_NAMES,
    SCORER,
    THRESHOLDS,
    best_threshold,
    challenge_scores,
    ground_truth_segments,
    pixel_scores,
    segmentation_scores,
)
from emseg.io import VolumeError
from emseg.io.files import write_csv_atomically, write_text_atomically
from emseg.io.safety import check_new_files

BACKGROUND = "background"


@dataclass
class StackScores:
    """Per-slice rows, a stack summary and the columns of the printed table."""

    rows: list[dict] = field(default_factory=list)
    summary: dict = field(default_factory=dict)
    columns: tuple[str, ...] = ()

    def write(self, output_dir: str | Path, overwrite: bool = False) -> tuple[Path, Path]:
        """Write ``metrics.csv`` and ``summary.json`` into ``output_dir`` (atomically; existing ones are replaced
        only with ``overwrite``)."""
        output_dir = Path(output_dir)
        csv_path, json_path = output_dir / "metrics.csv", output_dir / "summary.json"
        check_new_files([csv_path, json_path], overwrite)
        write_csv_atomically(csv_path, self.rows)
        write_text_atomically(json_path, json.dumps(self.summary, indent=2))
        return csv_path, json_path

    def table(self) -> str:
        """A short plain-text table: one line per slice and the mean."""
        columns = self.columns
        width = max(12, *(len(row["slice"]) + 1 for row in self.rows))
        lines = [f"{'slice':<{width}}" + "".join(f"{c:>18}" for c in columns)]
        for row in self.rows:
            lines.append(f"{row['slice']:<{width}}" + "".join(f"{row[c]:>18.4f}" for c in columns))
        lines.append(f"{'mean':<{width}}" + "".join(f"{self.summary[c]:>18.4f}" for c in columns))
        if "v_rand_threshold" in self.summary:
            lines.append(
                f"best thresholds: V_rand {self.summary['v_rand_threshold']:.1f}, V_info "
                f"{self.summary['v_info_threshold']:.1f}, pixel error {self.summary['pixel_error_threshold']:.1f}"
            )
        return "\n".join(lines)


def one_hot(classes: np.ndarray, num_classes: int) -> torch.Tensor:
    """(1, C, H, W) float one-hot of a (H, W) class-index map."""
    index = torch.from_numpy(np.asarray(classes, dtype=np.int64))
    return torch.nn.functional.one_hot(index, num_classes).permute(2, 0, 1)[None].float()


def overlap_scores(prediction: torch.Tensor, label: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, C) Dice and IoU of one-hot (B, C, H, W) ``prediction`` and ``label`` (MONAI's metrics), with one rule for
    empty masks: a class absent from both is NaN (left out of means, so empty masks do not inflate a summary), a
    class predicted where the label has none scores 0. Validation and the evaluation report both score this way."""
    from monai.metrics import compute_dice, compute_iou

    prediction, label = prediction.float(), label.float()
    absent = (prediction.flatten(2).sum(-1) == 0) & (label.flatten(2).sum(-1) == 0)
    dice = compute_dice(prediction, label, include_background=True, ignore_empty=False)
    iou = compute_iou(prediction, label, include_background=True, ignore_empty=False)
    return dice.masked_fill(absent, float("nan")), iou.masked_fill(absent, float("nan"))


def class_scores(prediction: np.ndarray, label: np.ndarray, class_names: Sequence[str]) -> dict[str, float]:
    """Pixel accuracy, and Dice, IoU (:func:`overlap_scores`) and 95% Hausdorff distance per class, of two (H, W)
    class-index maps. HD95 is NaN unless the class is in both maps. Pixels whose ``label`` is
    :data:`~emseg.data.painted.UNLABELLED` count in no score (HD95 is then NaN: it needs every pixel)."""
    from monai.metrics import compute_hausdorff_distance

    n = len(class_names)
    prediction, label = np.asarray(prediction), np.asarray(label)
    labelled = label != UNLABELLED
    sparse = not labelled.all()
    p, t = one_hot(np.where(labelled, prediction, 0), n), one_hot(np.where(labelled, label, 0), n)
    if sparse:  # unlabelled pixels are in no class, predicted or true
        mask = torch.from_numpy(labelled)[None, None].float()
        p, t = p * mask, t * mask
    dice, iou = (scores[0] for scores in overlap_scores(p, t))
    with warnings.catch_warnings():  # MONAI warns for every class missing from one side; those are NaN below
        warnings.simplefilter("ignore")
        hd95 = compute_hausdorff_distance(p, t, include_background=True, percentile=95)[0]
    in_pred, in_label = p.sum((0, 2, 3)) > 0, t.sum((0, 2, 3)) > 0
    correct = np.count_nonzero((prediction == label) & labelled)
    scores = {"accuracy": float(correct / labelled.sum()) if labelled.any() else float("nan")}
    for c, name in enumerate(class_names):
        scores[f"dice_{name}"] = float(dice[c])
        scores[f"iou_{name}"] = float(iou[c])
        # a distance between boundaries needs every pixel labelled
        scores[f"hd95_{name}"] = float(hd95[c]) if in_pred[c] and in_label[c] and not sparse else float("nan")
    return scores


def _mean(values) -> float:
    values = [v for v in values if not np.isnan(v)]
    return float(np.mean(values)) if values else float("nan")


def score_stack(
    probabilities: Sequence[np.ndarray],
    labels: Sequence[np.ndarray],
    class_names: Sequence[str],
    interior_class: int | None = None,
    names: Sequence[str] | None = None,
    thresholds: Sequence[float] = THRESHOLDS,
) -> StackScores:
    """All scores of per-class ``probabilities`` ((C, H, W) each) against class-index ``labels`` ((H, W) each).

    ``interior_class``: the cell-interior class of a membrane task; its probability is scored with the
    ISBI challenge procedure against ``label == interior_class``. ``mean_dice`` averages the classes
    other than one named "background".
    """
    if len(probabilities) != len(labels) or not len(labels):
        raise ValueError(f"{len(probabilities)} prediction slices for {len(labels)} label slices")
    class_names = list(class_names)
    names = list(names) if names is not None else [f"slice_{i:03d}" for i in range(len(labels))]
    for prob in probabilities:
        if np.asarray(prob).ndim != 3 or len(prob) != len(class_names):
            raise ValueError(f"expected (C, H, W) probabilities of {len(class_names)} classes, got {np.shape(prob)}")
    rows: list[dict] = [{"slice": name} for name in names]
    summary: dict = {"slices": len(labels), "classes": class_names}
    columns: list[str] = []

    if interior_class is not None and any(np.any(np.asarray(t) == UNLABELLED) for t in labels):
        summary["challenge_scores"] = "not computed: some labels are sparse (V_rand and V_info need every pixel)"
        interior_class = None
    if interior_class is not None:
        thresholds = np.asarray(thresholds, dtype=np.float64)
        interior = [np.asarray(p)[interior_class] for p in probabilities]
        truth = [np.asarray(t) == interior_class for t in labels]
        challenge = np.stack([challenge_scores(p, t, thresholds) for p, t in zip(interior, truth)])  # (N, T, 6)
        pixel = np.stack([pixel_scores(p, t, thresholds) for p, t in zip(interior, truth)])  # (N, T)
        summary["scorer"] = SCORER
        summary["thresholds"] = thresholds.tolist()
        chosen = {}
        for score in ("v_rand", "v_info"):
            _, summary[f"{score}_threshold"], chosen[score] = best_threshold(
                challenge[:, :, SCORE_NAMES.index(score)], thresholds)
        _, summary["pixel_error_threshold"], pixel_index = best_threshold(pixel, thresholds)
        for i, row in enumerate(rows):
            for score in SCORE_NAMES:
                family = "v_rand" if score.startswith("v_rand") else "v_info"
                row[score] = float(challenge[i, chosen[family], SCORE_NAMES.index(score)])
            row["pixel_error"] = float(1.0 - pixel[i, pixel_index])
        summary["per_threshold"] = {
            **{score: np.nanmean(challenge[:, :, SCORE_NAMES.index(score)], axis=0).tolist() for score in SCORE_NAMES},
            "pixel_f_score": np.nanmean(pixel, axis=0).tolist(),
        }
        columns += ["v_rand", "v_info", "pixel_error"]

    for row, prob, label in zip(rows, probabilities, labels):
        row.update(class_scores(np.asarray(prob).argmax(0), label, class_names))
    for key in rows[0]:
        if key != "slice":
            summary[key] = _mean(row[key] for row in rows)
    foreground = [name for name in class_names if name != BACKGROUND]
    summary["mean_dice"] = _mean(summary[f"dice_{name}"] for name in foreground)
    columns += ["accuracy", *(f"dice_{name}" for name in foreground)]
    return StackScores(rows, summary, tuple(columns))


INSTANCE_COLUMNS = ("v_rand", "v_info", "adapted_rand_error", "vi_split", "vi_merge")


def instance_scores(labels: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """Scores of one slice's cell labels as they are (no threshold) against a binary ground truth (non-zero = cell
    interior): V_rand and V_info with their split and merge parts, as the challenge scores them (ground-truth
    cells only; label-0 pixels of ``labels`` are singletons), and scikit-image's adapted Rand error and variation
    of information (split, merge; nats) on the same ground-truth cells."""
    from skimage.metrics import adapted_rand_error, variation_of_information

    labels, cells = np.asarray(labels), ground_truth_segments(truth)
    if labels.shape != cells.shape:
        raise ValueError(f"labels of shape {labels.shape} for a ground truth of shape {cells.shape}")
    scores = segmentation_scores(labels, cells)
    row = {name: float(value) for name, value in zip(SCORE_NAMES, scores.as_array())}
    row["adapted_rand_error"] = float(adapted_rand_error(cells, labels, ignore_labels=(0,))[0])
    # variation_of_information returns H(labels | cells), H(cells | labels): the split and the merge part
    split, merge = variation_of_information(cells, labels, ignore_labels=(0,))
    row["vi_split"], row["vi_merge"] = float(split), float(merge)
    return row


def score_instances(labels: Sequence[np.ndarray], truth: Sequence[np.ndarray],
                    names: Sequence[str] | None = None) -> StackScores:
    """:func:`instance_scores` of every slice of a label stack, and their means."""
    if len(labels) != len(truth) or not len(truth):
        raise ValueError(f"{len(labels)} label slices for {len(truth)} ground-truth slices")
    names = list(names) if names is not None else [f"slice_{i:03d}" for i in range(len(truth))]
    rows = [{"slice": name, **instance_scores(lab, gt)} for name, lab, gt in zip(names, labels, truth)]
    summary = {"slices": len(rows), "scored_as": "instances",
               **{key: _mean(row[key] for row in rows) for key in rows[0] if key != "slice"}}
    return StackScores(rows, summary, INSTANCE_COLUMNS)


def interior_probability(prediction, path) -> tuple:
    """A prediction as float probabilities in [0, 1], and what it was read as: a mask (two values, 0/1 or 0/255:
    the non-zero value is 1), a probability map (floats in [0, 1]) or an 8-bit probability map (uint8 with more
    than two values, divided by 255)."""
    values = np.unique(prediction)
    if values.size <= 2 and values.min() >= 0:
        return (prediction > 0).astype(np.float32), f"a mask (values {values.tolist()}: 0 and 1 after reading)"
    if prediction.dtype.kind == "f" and values.min() >= 0 and values.max() <= 1:
        return prediction.astype(np.float32), "a probability map (floats in [0, 1])"
    if prediction.dtype == np.uint8:
        return prediction / np.float32(255), "an 8-bit probability map (uint8 / 255)"
    raise VolumeError(f"{path}: neither a mask (two values), probabilities in [0, 1] nor an 8-bit probability map: "
                      f"{prediction.dtype} values {values.min()}..{values.max()}")
