"""The Score widget: a layer against a ground-truth labels layer, as ``emseg evaluate`` scores files.

The ground truth holds class ``v - 1`` at value ``v`` of its ``class_names`` (metadata; the ISBI sample: 1 =
membrane, 2 = interior), 0 = not labelled. What is scored depends on the prediction:

- a cell-interior probability (Segment's probabilities) or a membrane model's class mask: the ISBI challenge's
  V_rand and V_info (threshold sweep) with per-class Dice, as ``emseg evaluate`` does;
- any other class mask: per-class Dice, IoU and accuracy of the labelled pixels;
- cells (a labels layer without class names): V_rand and V_info of the cells as they are.
"""

from __future__ import annotations

import napari
import numpy as np
from magicgui.widgets import Container, Label, PushButton, TextEdit, create_widget

from emseg.data.painted import painted_to_classes
from emseg.evaluation import score_stack
from emseg.evaluation.scores import StackScores, score_instances
from emseg.napari.common import CLASS_NAMES, as_stack, class_names_of, full_resolution, report

INTERIOR = "interior"


def score_layers(prediction, truth) -> StackScores:
    """Scores of the ``prediction`` layer against the ``truth`` labels layer (see the module docstring)."""
    names = class_names_of(truth)
    if not names:
        raise ValueError(f"{truth.name}: the ground truth names no classes (metadata {CLASS_NAMES}); open it as "
                         f"emseg's sample data or make it from a class mask")
    values = np.asarray(as_stack(full_resolution(truth)))
    guess = np.asarray(as_stack(full_resolution(prediction)))
    if guess.shape != values.shape:
        raise ValueError(f"{prediction.name}: shape {guess.shape} differs from the ground truth {truth.name} "
                         f"{values.shape}")
    classes = painted_to_classes(values, len(names), truth.name)
    interior = names.index(INTERIOR) if INTERIOR in names else None
    if isinstance(prediction, napari.layers.Image):
        scored = prediction.metadata.get("emseg_class")
        if scored != INTERIOR or interior is None:
            raise ValueError(f"{prediction.name}: only a cell-interior probability is scored against {truth.name} "
                             f"({', '.join(names)}); choose it, or a class mask")
        probabilities = [np.stack([1.0 - p, p]) if interior == 1 else np.stack([p, 1.0 - p]) for p in guess]
        return score_stack(probabilities, list(classes), names, interior)
    predicted = class_names_of(prediction)
    if predicted is None:  # cells: every labelled pixel is needed
        if (classes < 0).any():
            raise ValueError(f"{truth.name}: cells are scored against dense labels; every pixel must be labelled")
        return score_instances(list(guess), list(classes == (interior if interior is not None else 1)))
    if sorted(predicted) != sorted(names):
        raise ValueError(f"{prediction.name}: classes {predicted} are not the ground truth's {names}")
    order = [predicted.index(name) for name in names]  # prediction value -> the truth's class index
    lookup = np.array([order.index(i) for i in range(len(names))])
    mask = lookup[np.clip(guess.astype(np.int64) - 1, 0, len(names) - 1)]
    probabilities = [np.eye(len(names), dtype=np.float32)[m].transpose(2, 0, 1) for m in mask]
    return score_stack(probabilities, list(classes), names, interior)


class ScoreWidget(Container):
    """Dock widget: prediction layer and ground-truth layer; Score; the table."""

    def __init__(self, napari_viewer: napari.viewer.Viewer) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.prediction = create_widget(annotation=napari.layers.Layer, label="prediction")
        self.truth = create_widget(annotation=napari.layers.Labels, label="ground truth")
        self.score_button = PushButton(text="Score")
        self.result = TextEdit(value="")
        self.result.native.setReadOnly(True)
        self.status = Label(value="")
        self.extend([self.prediction, self.truth, self.score_button, self.status, self.result])
        self.score_button.changed.connect(self.score)
        self.scores: StackScores | None = None

    def score(self) -> StackScores | None:
        try:
            if self.prediction.value is None or self.truth.value is None:
                raise ValueError("choose a prediction layer and a ground-truth layer")
            self.scores = score_layers(self.prediction.value, self.truth.value)
        except Exception as error:  # any problem is one message in the viewer
            self.status.value = report(error, "Score")
            return None
        self.result.value = self.scores.table()
        self.status.value = f"{self.prediction.value.name} against {self.truth.value.name}"
        return self.scores
