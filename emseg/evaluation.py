"""Score a stack of interior probabilities against binary labels and write the report.

Used by every bundle's evaluate.json (through :class:`EvaluationReport`) and by
``emseg evaluate PRED GT`` for predictions made by any tool. Writes
``metrics.csv`` (one row per slice) and ``summary.json`` (means, best thresholds,
per-threshold curves).
"""

from __future__ import annotations

import csv
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from ignite.engine import Engine, Events

from emseg.metrics.isbi_challenge import SCORE_NAMES, THRESHOLDS, best_threshold, challenge_scores, pixel_scores

logger = logging.getLogger(__name__)

CLASS_NAMES = ("membrane", "interior")


@dataclass
class StackScores:
    """Per-slice rows and a stack summary of all evaluation scores."""

    rows: list[dict] = field(default_factory=list)
    summary: dict = field(default_factory=dict)
    columns: tuple[str, ...] = ("v_rand", "v_info", "pixel_error", "accuracy", "dice_membrane", "hd95_membrane")

    def write(self, output_dir: str | Path) -> tuple[Path, Path]:
        """Write ``metrics.csv`` and ``summary.json`` into ``output_dir``."""
        output_dir = Path(output_dir)
        output_dir.mkdir(parents=True, exist_ok=True)
        csv_path, json_path = output_dir / "metrics.csv", output_dir / "summary.json"
        with open(csv_path, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(self.rows[0]))
            writer.writeheader()
            writer.writerows(self.rows)
        json_path.write_text(json.dumps(self.summary, indent=2))
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


def _overlap_scores(probability: np.ndarray, label: np.ndarray) -> dict[str, float]:
    """Pixel accuracy, and Dice, IoU and 95% Hausdorff distance per class, of ``probability > 0.5``."""
    from monai.metrics import compute_dice, compute_hausdorff_distance, compute_iou

    interior = probability > 0.5
    truth = label > 0
    pred = torch.from_numpy(np.stack([~interior, interior]))[None].float()
    true = torch.from_numpy(np.stack([~truth, truth]))[None].float()
    dice = compute_dice(pred, true, include_background=True, ignore_empty=False)[0]
    iou = compute_iou(pred, true, include_background=True, ignore_empty=False)[0]
    hd95 = compute_hausdorff_distance(pred, true, include_background=True, percentile=95)[0]
    scores = {"accuracy": float((interior == truth).mean())}
    for index, name in enumerate(CLASS_NAMES):
        scores[f"dice_{name}"] = float(dice[index])
        scores[f"iou_{name}"] = float(iou[index])
        scores[f"hd95_{name}"] = float(hd95[index])
    return scores


def score_stack(
    probabilities: Sequence[np.ndarray],
    labels: Sequence[np.ndarray],
    names: Sequence[str] | None = None,
    thresholds: Sequence[float] = THRESHOLDS,
) -> StackScores:
    """All scores of interior ``probabilities`` (2-D, 1 = interior) against binary ``labels``, slice by slice.

    Challenge scores and pixel error are taken at the threshold that is best for the
    stack mean (as the challenge ranks); accuracy, Dice, IoU and HD95 at 0.5.
    """
    if len(probabilities) != len(labels) or not len(labels):
        raise ValueError(f"{len(probabilities)} prediction slices for {len(labels)} label slices")
    thresholds = np.asarray(thresholds, dtype=np.float64)
    names = list(names) if names is not None else [f"slice_{i:03d}" for i in range(len(labels))]
    challenge = np.stack([challenge_scores(p, t, thresholds) for p, t in zip(probabilities, labels)])  # (N, T, 6)
    pixel = np.stack([pixel_scores(p, t, thresholds) for p, t in zip(probabilities, labels)])  # (N, T)

    summary: dict = {"slices": len(labels), "thresholds": thresholds.tolist()}
    chosen: dict[str, int] = {}
    for score in ("v_rand", "v_info"):
        value, threshold, index = best_threshold(challenge[:, :, SCORE_NAMES.index(score)], thresholds)
        summary[f"{score}_threshold"] = threshold
        chosen[score] = index
    f_value, pixel_threshold, pixel_index = best_threshold(pixel, thresholds)
    summary["pixel_error_threshold"] = pixel_threshold

    rows = []
    for i, (name, p, t) in enumerate(zip(names, probabilities, labels)):
        row: dict = {"slice": name}
        for score in SCORE_NAMES:
            family = "v_rand" if score.startswith("v_rand") else "v_info"
            row[score] = float(challenge[i, chosen[family], SCORE_NAMES.index(score)])
        row["pixel_error"] = float(1.0 - pixel[i, pixel_index])
        row.update(_overlap_scores(p, t))
        rows.append(row)

    for key in rows[0]:
        if key != "slice":
            summary[key] = float(np.nanmean([row[key] for row in rows]))
    summary["per_threshold"] = {
        **{score: np.nanmean(challenge[:, :, SCORE_NAMES.index(score)], axis=0).tolist() for score in SCORE_NAMES},
        "pixel_f_score": np.nanmean(pixel, axis=0).tolist(),
    }
    return StackScores(rows, summary)


class SliceReport:
    """Ignite handler base: collect one (prediction, label) pair per evaluated slice, score the stack at
    the end of the run, write ``metrics.csv``/``summary.json`` to ``output_dir`` and print a table.

    Summary values go into ``engine.state.metrics`` (prefixed by ``prefix``), so an MLflow tracker
    attached after this handler logs them. Subclasses say what to take from an output
    (:meth:`extract`) and how to score the stack (:meth:`score`).
    """

    def __init__(self, output_dir: str, name_key: str = "name", prefix: str = "") -> None:
        self.output_dir = output_dir
        self.name_key = name_key
        self.prefix = prefix
        self._items: list[tuple[str, np.ndarray, np.ndarray]] = []

    def extract(self, output: dict) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def score(self, predictions, labels, names) -> StackScores:
        raise NotImplementedError

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, lambda e: self._items.clear())
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._collect)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._report)

    def _collect(self, engine: Engine) -> None:
        batch = engine.state.batch if isinstance(engine.state.batch, list) else [engine.state.batch]
        for item, output in zip(batch, engine.state.output):
            self._items.append((str(item.get(self.name_key, len(self._items))), *self.extract(output)))

    def _report(self, engine: Engine) -> None:
        names, predictions, labels = zip(*self._items)
        scores = self.score(predictions, labels, names)
        csv_path, json_path = scores.write(self.output_dir)
        logger.info("evaluation of %d slices:\n%s\nwrote %s and %s", len(names), scores.table(), csv_path, json_path)
        for key, value in scores.summary.items():
            if isinstance(value, float):
                engine.state.metrics[self.prefix + key] = value


class EvaluationReport(SliceReport):
    """Binary EM report: ISBI challenge scores, pixel error, Dice/IoU/HD95 per class (:func:`score_stack`).

    Reads the interior probability from channel ``channel`` of ``prob_key`` and the
    label from the same channel of one-hot ``label_key`` in the evaluator's output.
    """

    def __init__(self, output_dir: str, prob_key: str = "prob", label_key: str = "label", channel: int = 1,
                 name_key: str = "name", prefix: str = "") -> None:
        super().__init__(output_dir, name_key, prefix)
        self.prob_key, self.label_key = prob_key, label_key
        self.channel = channel

    def extract(self, output: dict) -> tuple[np.ndarray, np.ndarray]:
        prob = output[self.prob_key][self.channel].detach().float().cpu().numpy()
        label = output[self.label_key][self.channel].detach().cpu().numpy()
        return prob, label

    def score(self, predictions, labels, names) -> StackScores:
        return score_stack(predictions, labels, names)
