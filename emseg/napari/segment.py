"""The Segment widget: a shared model (bundle folder, run folder, packed zip, bioimage.io package, weights file or
registered MLflow model ``models:/NAME/VERSION``) on an image layer, slice by slice in a worker thread.

The output layer is added at the image's scale when the work starts and filled as each slice is predicted, so the
viewer stays live and shows progress; Cancel stops after the slice being predicted. Outputs: every class's
probability (one image layer per class), the class mask (a labels layer, value = class index + 1, so 0 stays
transparent; its ``class_names`` metadata names each value) or cells (a labels layer, one label per cell, from a
membrane model's cell-interior probability with the watershed parameters of its bundle). New layers never replace
the user's: napari gives a repeated name a suffix.
"""

from __future__ import annotations

from pathlib import Path

import napari
import numpy as np
from magicgui.widgets import ComboBox, Container, Label, LineEdit, ProgressBar, PushButton, create_widget
from qtpy.QtWidgets import QFileDialog

from emseg.inference import Predictor, open_predictor
from emseg.napari.common import CLASS_NAMES, as_stack, background, full_resolution, report

OUTPUTS = {"probabilities": "probabilities", "class mask": "mask", "cells": "instances"}


def model_label(predictor: Predictor) -> str:
    """A short name of the model for layer names: its run, else its registered name, else its file."""
    record = predictor.model.record
    if record.get("registered_model"):
        return f"{record['registered_model']} v{record['model_version']}"
    return record.get("run_name") or Path(predictor.model.source).name


def predict_stack(source: str, tracking_uri: str | None, data, output: str):
    """Generator run by the worker: yields ``("model", predictor)`` once, then ``("slice", z, array)`` for each slice
    (``(C, H, W)`` probabilities, an (H, W) class mask + 1 or cell labels)."""
    predictor = open_predictor(source, tracking_uri=tracking_uri or None)
    kind = OUTPUTS[output]
    if kind not in predictor.outputs():
        predictor.segmenter()  # the one message saying why cells cannot be made
    yield "model", predictor
    stack = as_stack(data)
    segmenter = predictor.segmenter() if kind == "instances" else None
    slices = (np.asarray(stack[z]) for z in range(stack.shape[0]))
    for z, probabilities in enumerate(predictor.predict(slices)):
        if kind == "mask":
            yield "slice", z, (probabilities.argmax(0) + 1).astype(np.uint8)
        elif kind == "instances":
            yield "slice", z, segmenter(probabilities[predictor.interior_class])
        else:
            yield "slice", z, probabilities


class SegmentWidget(Container):
    """Dock widget: model, image layer, output; Segment and Cancel; a progress bar and one status line."""

    def __init__(self, napari_viewer: napari.viewer.Viewer) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.model = LineEdit(label="model", tooltip="a bundle or run folder, a packed bundle or bioimage.io zip, a "
                                                     "weights file, or models:/NAME/VERSION")
        self.choose_folder = PushButton(text="Choose a bundle or run folder...")
        self.choose_file = PushButton(text="Choose a zip or weights file...")
        self.tracking_uri = LineEdit(label="MLflow", tooltip="tracking URI of a registered model (models:/NAME/"
                                                             "VERSION); empty: MLFLOW_TRACKING_URI")
        self.image = create_widget(annotation=napari.layers.Image, label="image")
        self.output = ComboBox(label="output", choices=list(OUTPUTS), value="class mask")
        self.run_button = PushButton(text="Segment")
        self.cancel_button = PushButton(text="Cancel", enabled=False)
        self.progress = ProgressBar(value=0, min=0, max=1, label="progress")
        self.status = Label(value="")
        self.status.native.setWordWrap(True)
        self.extend([self.model, self.choose_folder, self.choose_file, self.tracking_uri, self.image, self.output,
                     self.run_button, self.cancel_button, self.progress, self.status])
        self.choose_folder.changed.connect(lambda: self._choose(QFileDialog.getExistingDirectory(
            caption="A bundle or run folder")))
        self.choose_file.changed.connect(lambda: self._choose(QFileDialog.getOpenFileName(
            caption="A packed bundle, bioimage.io package or weights file",
            filter="Models (*.zip *.pt *.pth);;All files (*)")[0]))
        self.run_button.changed.connect(self.start)
        self.cancel_button.changed.connect(self.cancel)
        self.worker = None
        self.layers: list = []
        self.source_layer = None
        self.predictor: Predictor | None = None

    def _choose(self, path: str) -> None:
        if path:
            self.model.value = path

    # --- the work ---------------------------------------------------------------------------------------------
    def start(self):
        """Start segmenting; returns the worker (tests wait on it)."""
        layer = self.image.value
        if layer is None or not self.model.value.strip():
            self.status.value = report(ValueError("choose a model and an image layer first"), "Segment")
            return None
        self.layers, self.source_layer = [], layer
        data = full_resolution(layer)
        self.progress.max, self.progress.value = as_stack(data).shape[0], 0
        self.worker = background(predict_stack, self.model.value.strip(), self.tracking_uri.value.strip(), data,
                                 self.output.value, action="Segment", status=self.status, yielded=self._received,
                                 finished=self._finished)
        self.run_button.enabled, self.cancel_button.enabled = False, True
        self.status.value = f"loading {self.model.value.strip()}"
        self.worker.start()
        return self.worker

    def cancel(self) -> None:
        if self.worker is not None:
            self.worker.quit()
            self.status.value = "cancelling after this slice"

    def _received(self, message) -> None:
        if message[0] == "model":
            self.predictor = message[1]
            self._add_layers(self.predictor)
            self.status.value = f"segmenting {self.source_layer.name} with {model_label(self.predictor)}"
            return
        _, z, result = message
        where = z if self.layers[0].data.ndim == 3 else slice(None)  # a 2-D image is its one slice
        for layer, part in zip(self.layers, result if self.output.value == "probabilities" else [result]):
            layer.data[where] = part
        for layer in self.layers:
            layer.refresh()
        self.progress.value = z + 1

    def _add_layers(self, predictor: Predictor) -> None:
        source = self.source_layer
        stack_shape = as_stack(full_resolution(source)).shape
        shape = stack_shape if full_resolution(source).ndim == 3 else stack_shape[1:]
        common = {"scale": source.scale, "translate": source.translate}
        name = f"{source.name} {{}} ({model_label(predictor)})"
        meta = {"emseg_model": predictor.model.provenance(), "emseg_image": source.name}
        if self.output.value == "probabilities":
            colours = ["gray", "magenta", "green", "cyan", "yellow", "red", "blue"]
            self.layers = [self.viewer.add_image(np.zeros(shape, np.float32), name=name.format(f"{cls} probability"),
                                                 contrast_limits=(0.0, 1.0), blending="additive", visible=i > 0,
                                                 colormap=colours[i % len(colours)],
                                                 metadata={**meta, "emseg_class": cls}, **common)
                           for i, cls in enumerate(predictor.class_names)]
        elif self.output.value == "class mask":
            self.layers = [self.viewer.add_labels(np.zeros(shape, np.uint8), name=name.format("classes"),
                                                  metadata={**meta, CLASS_NAMES: predictor.class_names},
                                                  opacity=0.5, **common)]
        else:
            self.layers = [self.viewer.add_labels(np.zeros(shape, np.uint32), name=name.format("cells"),
                                                  metadata=meta, opacity=0.5, **common)]

    def _finished(self) -> None:
        self.run_button.enabled, self.cancel_button.enabled = True, False
        done = self.progress.value
        if self.layers and not self.status.value.startswith("Segment:"):
            total = self.progress.max
            self.status.value = (f"done: {', '.join(layer.name for layer in self.layers)}" if done == total
                                 else f"cancelled after {done} of {total} slices")
